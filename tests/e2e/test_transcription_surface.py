"""What OpenAI, speaches and asrpro users send and expect: word timestamps, the full verbose_json, translations,
decoding options with OpenAI's semantics and errors in OpenAI's shape, and decoding parity with in-process
faster-whisper. Speech of known words is synthesised with espeak-ng."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from actors.proxy.decoding import decoding_for
from actors.registry import catalogue
from bench.conversation import VOICES, Conversation, conversation, voice_sample
from framework.config import load_config
from model_server import pipeline
from model_server.engines.whisper import WhisperEngine
from schemas.transcribe import TranscribeRequest
from tests.conftest import JFK_TEXT, REPO
from tests.e2e.stack import Stack, start_stack, wait_until
from tests.wer import word_error_rate, words

pytestmark = pytest.mark.e2e
# What each language's speaker says; whisper-base translates them with these English words (checked by hand).
SPOKEN = {
    "es": ("Me gusta el café con leche y chocolate.", {"coffee", "milk", "chocolate"}),
    "fr": ("J'aime le café et le chocolat.", {"coffee", "chocolate"}),
    "de": ("Ich trinke gern Kaffee mit Milch.", {"coffee", "milk"}),
}
ENGLISH = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to buy bread, eggs and fresh vegetables on your way home.",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
]


def speak(text: str, voice: str, out: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed (apt-get install espeak-ng; the test command installs it)")
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-s", "120", "-v", voice, "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("surface"))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("voices")
    made = {lang: speak(text, lang, tmp / f"{lang}.wav") for lang, (text, _) in SPOKEN.items()}
    made.update({f"en{i}": speak(text, "en-us", tmp / f"en{i}.wav") for i, text in enumerate(ENGLISH)})
    return made


def test_word_timestamps_and_the_full_verbose_json(oai: openai.OpenAI, shared_data: Path) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        result = oai.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    words = result.words or []
    assert [w.word.strip(" ,.") for w in words[:4]] == ["And", "so", "my", "fellow"]
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.start <= w.end <= result.duration + 0.5 for w in words)
    segment = (result.segments or [])[0]
    assert segment.seek == 0 and segment.tokens and segment.temperature == 0.0 and segment.compression_ratio > 0
    assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1
    assert (result.language, result.to_dict()["language_code"]) == ("english", "en")
    assert result.usage is not None and (result.usage.type, result.usage.seconds) == ("duration", 11)


def test_words_only_when_asked(oai: openai.OpenAI, shared_data: Path) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        result = oai.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert result.words is None and result.segments


@pytest.mark.parametrize("language", sorted(SPOKEN))
def test_translations_into_english_through_whisper_base(
    oai: openai.OpenAI, voices: dict[str, Path], language: str
) -> None:
    with voices[language].open("rb") as fh:
        translated = oai.audio.translations.create(model="whisper-base", file=fh)
    words = set(translated.text.lower().replace(".", " ").replace(",", " ").split())
    expected = SPOKEN[language][1]
    assert len(words & expected) >= 2, (translated.text, expected)


def test_translations_in_every_format(stack: Stack, voices: dict[str, Path]) -> None:
    audio = voices["es"].read_bytes()
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        reply = httpx.post(
            f"{stack.gateway}/v1/audio/translations",
            files={"file": ("es.wav", audio)},
            data={"model": "whisper-base", "response_format": fmt},
            timeout=120,
        )
        assert reply.status_code == 200, (fmt, reply.text)
        assert "coffee" in reply.text.lower()
        if fmt == "verbose_json":
            assert reply.json()["task"] == "translate"


def test_language_detection_in_verbose_json(oai: openai.OpenAI, voices: dict[str, Path]) -> None:
    for language in ("fr", "de"):
        with voices[language].open("rb") as fh:
            result = oai.audio.transcriptions.create(model="whisper-base", file=fh, response_format="verbose_json")
        assert (result.language, result.to_dict()["language_code"]) == (
            {"fr": "french", "de": "german"}[language],
            language,
        )


def test_an_english_only_model_cannot_translate_and_says_which_can(stack: Stack, voices: dict[str, Path]) -> None:
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/translations",
        files={"file": ("es.wav", voices["es"].read_bytes())},
        data={"model": "whisper-tiny.en"},
    )
    assert reply.status_code == 400
    assert "cannot translate" in reply.json()["error"]["message"] and "whisper-base" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("form", "message", "param", "code"),
    [
        ({"temperature": "hot"}, "temperature must be a number", "temperature", None),
        ({"temperature": "1.5"}, "temperature must be between 0 and 1", "temperature", None),
        ({"language": "xx"}, "not one of Whisper's language codes", "language", "invalid_language"),
        (
            {"language": "de", "model": "whisper-tiny.en"},
            "whisper-tiny.en knows only en",
            "language",
            "invalid_language",
        ),
        (
            {"timestamp_granularities[]": "letter"},
            "'letter' is not 'word' or 'segment'",
            "timestamp_granularities",
            None,
        ),
        ({"vad_filter": "maybe"}, "vad_filter must be true or false", "vad_filter", None),
        ({"response_format": "docx"}, "response_format 'docx' is not one of", "response_format", None),
    ],
)
def test_bad_options_are_400_in_openais_shape(
    stack: Stack, shared_data: Path, form: dict[str, str], message: str, param: str, code: str | None
) -> None:
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        data=form,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)


def test_whisper_1_translates_and_speaks_other_languages_as_openais_does(
    oai: openai.OpenAI, voices: dict[str, Path]
) -> None:
    """The default model is English-only tiny.en; whisper-1 (and OpenAI's newer names) then means the largest
    installed multilingual model for a translation or another language, and the response says which."""
    with voices["es"].open("rb") as fh:
        translated = oai.audio.translations.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert "coffee" in translated.text.lower() and translated.to_dict()["model"] == "whisper-base"
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"):
        with voices["de"].open("rb") as fh:
            german = oai.audio.transcriptions.create(model=name, file=fh, language="de", response_format="verbose_json")
        # whisper-base on espeak-ng's German, with the temperature fallback's sampling: "Kaffee", "Café" or (CI once)
        # "Kager-Kaffee": words split at hyphens too.
        assert german.to_dict()["model"] == "whisper-base" and {"kaffee", "café", "milch"} & set(words(german.text))
    with voices["en0"].open("rb") as fh:  # English, no language: the default model
        english = oai.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert english.to_dict()["model"] == "whisper-tiny.en"
    assert oai.models.retrieve("whisper-1").id == "whisper-1"


def test_the_sdk_raises_the_error_class_its_users_catch(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_audio:
        oai.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"plain text, not audio\n" * 20))
    assert (bad_audio.value.code, bad_audio.value.param) == ("unsupported_audio", "file")
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.audio.transcriptions.create(model="whisper-huge", file=("a.wav", b"RIFF"))
    assert (unknown.value.code, unknown.value.param) == ("model_not_found", "model")
    with pytest.raises(openai.BadRequestError) as language:
        oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF"), language="xx")
    assert (language.value.code, language.value.param) == ("invalid_language", "language")


def test_openai_parameters_together_are_accepted(stack: Stack, shared_data: Path) -> None:
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        data={"include[]": "logprobs", "chunking_strategy": "auto", "vad_filter": "true", "hotwords": "Americans"},
        timeout=120,
    )
    assert reply.status_code == 200 and word_error_rate(JFK_TEXT, reply.json()["text"]) <= 0.1


def test_decoding_parity_with_in_process_faster_whisper(stack: Stack, voices: dict[str, Path]) -> None:
    """The system decodes as faster-whisper does with the same parameters: the same words on speech the tests
    made up, through the whole system and in-process."""
    config = load_config(REPO / "asrpro.toml", environ={})
    model = catalogue(config)["whisper-tiny.en"]
    options = decoding_for(model, TranscribeRequest())
    assert (options.beam_size, options.temperature) == (5, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # faster-whisper's own
    engine = WhisperEngine(model.weights, device="cpu", compute_type="int8")
    for i, text in enumerate(ENGLISH):
        audio = voices[f"en{i}"].read_bytes()
        direct = pipeline.transcribe(
            engine, audio, "en.wav", options, model_id="direct", received_at=time.perf_counter()
        )
        system = httpx.post(
            f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("en.wav", audio)}, timeout=120
        ).json()["text"]
        assert system == direct.text, (system, direct.text)
        assert word_error_rate(text, system) <= 0.25, (text, system)


def test_a_recording_with_one_speaker_per_channel_is_diarized_by_channel(
    oai: openai.OpenAI, stack: Stack, shared_data: Path
) -> None:
    stereo = shared_data / "stereo_diarization.wav"
    with stereo.open("rb") as fh:
        diarized = oai.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="diarized_json", extra_body={"diarize": "channels"}
        )
    body: dict[str, Any] = diarized.to_dict()
    assert body["task"] == "transcribe" and body["usage"]["type"] == "duration"
    by_speaker = {s["speaker"]: s["text"] for s in body["segments"]}
    assert set(by_speaker) == {"A", "B"}
    assert all(s["type"] == "transcript.text.segment" for s in body["segments"])
    complaint = "He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
    assert word_error_rate(complaint, by_speaker["A"]) < 0.3
    assert word_error_rate("The horizon seems extremely distant.", by_speaker["B"]) < 0.3
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts)  # merged by time
    url = f"{stack.gateway}/v1/audio/transcriptions"
    vtt = httpx.post(
        url, files={"file": (stereo.name, stereo.read_bytes())}, data={"diarize": "channels", "response_format": "vtt"}
    )
    assert "<v A>" in vtt.text and "<v B>" in vtt.text
    verbose = httpx.post(
        url,
        files={"file": (stereo.name, stereo.read_bytes())},
        data={"diarize": "channels", "response_format": "verbose_json"},
    ).json()
    assert {s["speaker"] for s in verbose["segments"]} == {"A", "B"}


def test_diarization_that_cannot_be_done_is_a_400_naming_diarize(
    stack: Stack, shared_data: Path, voices: dict[str, Path]
) -> None:
    url = f"{stack.gateway}/v1/audio/transcriptions"
    mono = voices["en0"]  # espeak-ng speaks mono
    ann = {"known_speaker_names[]": "Ann"}
    hello = ann | {"known_speaker_references[]": "data:audio/wav;base64,aGVsbG8="}  # "hello" is not audio
    cases: list[tuple[dict[str, Any], Path, str, str]] = [
        ({"diarize": "channels"}, mono, "one channel", "diarize"),  # one voice per channel needs channels
        ({"diarize": "somebody"}, mono, "none, speakers or channels", "diarize"),
        ({"model": "diarizer-resemblyzer"}, mono, "is a diarizer", "model"),  # not a transcription model
        ({"diarize": "speakers", "min_speakers": "3", "max_speakers": "2"}, mono, "more than max", "min_speakers"),
        ({"diarize": "speakers", "max_speakers": "twelve"}, mono, "from 1 to 8", "max_speakers"),
        # A reference is a data URL of audio, never a URL the server would fetch.
        (ann | {"known_speaker_references[]": "http://127.0.0.1:8222/"}, mono, "data URL", "known_speaker_references"),
        (ann, mono, "1 known_speaker_names[] but 0", "known_speaker_references"),
        (ann | {"known_speaker_references[]": "data:audio/wav;base64,!!"}, mono, "base64", "known_speaker_references"),
        # Base64 of something that is not audio: the diarizer, which decodes it, says so.
        (hello, mono, "not audio", "known_speaker_references"),
        (hello | {"diarize": "channels"}, mono, "diarize=speakers", "known_speaker_names"),
        # A name given twice: schemas' diarization() says so, before the upload, as it does for the bus's requests.
        ({k: [v, v] for k, v in hello.items()}, mono, "'Ann' given 2 times", "known_speaker_names"),
    ]
    for form, path, said, param in cases:
        reply = httpx.post(url, files={"file": (path.name, path.read_bytes())}, data=form, timeout=120)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == param and said in error["message"], error


def _data_url(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory: pytest.TempPathFactory) -> Conversation:
    """Two voices taking turns for about 40 s, with pauses and some overlap (bench/conversation.py)."""
    return conversation(tmp_path_factory.mktemp("two-voices"), speakers=2, seconds=40, seed=5)


def _attributed(segments: list[dict[str, Any]], reference: Conversation) -> float:
    """The share of the segments' time given to the voice that spoke it (hypothesis letters mapped to the
    reference's by the most time shared)."""
    shared: dict[tuple[str, str], float] = {}
    for segment in segments:
        for start, end, who in reference.turns:
            overlap = min(end, segment["end"]) - max(start, segment["start"])
            if overlap > 0:
                key = (segment["speaker"], who)
                shared[key] = shared.get(key, 0.0) + overlap
    best: dict[str, tuple[float, str]] = {}
    for (hypothesis, who), seconds in shared.items():
        best[hypothesis] = max(best.get(hypothesis, (0.0, "")), (seconds, who))
    right = sum(seconds for (hypothesis, who), seconds in shared.items() if best[hypothesis][1] == who)
    return right / max(1e-9, sum(shared.values()))


def test_a_meeting_is_transcribed_with_its_speakers(oai: openai.OpenAI, stack: Stack, two_voices: Conversation) -> None:
    with two_voices.mono.open("rb") as fh:
        diarized = oai.audio.transcriptions.create(model="whisper-1", file=fh, response_format="diarized_json")
    body: dict[str, Any] = diarized.to_dict()
    segments = body["segments"]
    assert {s["speaker"] for s in segments} == {"A", "B"}, segments
    assert all(s["type"] == "transcript.text.segment" and s["text"] for s in segments)
    assert _attributed(segments, two_voices) >= 0.9, (segments, two_voices.turns)
    # The words are the transcription's own, with or without speakers: none lost or repeated by the cuts. Not word
    # for word: two decodes of espeak-ng's voices by tiny.en differ by themselves (a temperature fallback samples),
    # and word timestamps (which speakers need) move Whisper's windows.
    with two_voices.mono.open("rb") as fh:
        plain = oai.audio.transcriptions.create(model="whisper-1", file=fh).text
    assert 0.85 <= len(body["text"].split()) / len(plain.split()) <= 1.15, (plain, body["text"])
    assert word_error_rate(plain, body["text"]) <= 0.4, (plain, body["text"])
    assert word_error_rate(body["text"], " ".join(s["text"] for s in segments)) <= 0.02  # the same words, cut
    # verbose_json with words: each word and segment has its speaker; the words asked for only.
    with two_voices.mono.open("rb") as fh:
        verbose: dict[str, Any] = oai.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word"],
            extra_body={"diarize": "speakers", "max_speakers": 2},
        ).to_dict()
    assert {s["speaker"] for s in verbose["segments"]} == {"A", "B"}
    assert verbose["words"] and all(w["speaker"] in ("A", "B") for w in verbose["words"])
    # Streamed: OpenAI's transcript.text.segment events, each with its speaker, before the done event.
    events = []
    with httpx.stream(
        "POST",
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": (two_voices.mono.name, two_voices.mono.read_bytes())},
        data={"response_format": "diarized_json", "stream": "true"},
        timeout=120,
    ) as reply:
        assert reply.status_code == 200
        events = [json.loads(line[6:]) for line in reply.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert "transcript.text.segment" in kinds and kinds[-1] == "transcript.text.done", kinds
    streamed = [e for e in events if e["type"] == "transcript.text.segment"]
    assert {e["speaker"] for e in streamed} == {"A", "B"}
    assert [e["speaker"] for e in streamed] == [s["speaker"] for s in events[-1]["segments"]]


def test_known_speakers_are_named_by_their_voice_samples(
    oai: openai.OpenAI, two_voices: Conversation, tmp_path: Path
) -> None:
    """OpenAI's known_speaker_names[] / known_speaker_references[], as the SDK sends them: each voice named from a
    sample of it saying something else; a voice with no sample keeps a letter."""
    said = "Thank you all for coming today, I will keep this short and simple."
    samples = {name: _data_url(voice_sample(said, VOICES[n], tmp_path / f"{name}.wav")) for n, name in enumerate("AB")}

    def segments(names: dict[str, str]) -> list[dict[str, Any]]:
        with two_voices.mono.open("rb") as fh:
            reply = oai.audio.transcriptions.create(
                model="gpt-4o-transcribe-diarize",
                file=fh,
                response_format="diarized_json",
                known_speaker_names=list(names),
                known_speaker_references=[samples[voice] for voice in names.values()],
            )
        body: dict[str, Any] = reply.to_dict()
        found: list[dict[str, Any]] = body["segments"]
        return found

    assert {s["speaker"] for s in segments({"Bob": "B"})} == {"A", "Bob"}
    named = segments({"Ada": "A", "Bob": "B"})
    assert {s["speaker"] for s in named} == {"Ada", "Bob"}
    # The voice named Bob is the second voice of the conversation: his segments are where it spoke.
    bob = [s for s in named if s["speaker"] == "Bob"]
    spoken_by_b = sum(
        max(0.0, min(e, s["end"]) - max(b, s["start"])) for s in bob for b, e, who in two_voices.turns if who == "B"
    )
    assert spoken_by_b >= 0.8 * sum(s["end"] - s["start"] for s in bob)


def test_logprobs_chunking_strategy_and_keywords_are_honoured(
    oai: openai.OpenAI, stack: Stack, shared_data: Path
) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        with_logprobs = oai.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="json", include=["logprobs"]
        )
    found: dict[str, Any] = with_logprobs.to_dict()
    tokens = found["logprobs"]
    assert "".join(t["token"] for t in tokens).strip() == found["text"].strip()
    # The SDK hands the bytes back as floats (its type says List[float]).
    assert all(t["logprob"] <= 0 and bytes(int(b) for b in t["bytes"]).decode() == t["token"] for t in tokens)
    with (shared_data / "jfk.flac").open("rb") as fh:
        chunked = oai.audio.transcriptions.create(model="whisper-1", file=fh, chunking_strategy="auto")
    assert word_error_rate(JFK_TEXT, chunked.text) < 0.2
    url = f"{stack.gateway}/v1/audio/transcriptions"
    hotwords = (shared_data / "hotwords.mp3").read_bytes()
    keyed = httpx.post(url, files={"file": ("h.mp3", hotwords)}, data={"keywords[]": ["ComfyUI"]}, timeout=120)
    assert keyed.status_code == 200 and "comfyui" in keyed.json()["text"].lower(), keyed.text
    for form, param in (
        ({"include[]": "tokens"}, "include"),
        ({"include[]": "logprobs", "response_format": "srt"}, "include"),
        ({"chunking_strategy": "sometimes"}, "chunking_strategy"),
    ):
        reply = httpx.post(url, files={"file": ("jfk.flac", hotwords)}, data=form, timeout=60)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


def test_a_diarizer_killed_mid_request_neither_loses_nor_hangs_it(stack: Stack, tmp_path: Path) -> None:
    """kill -9 of the diarizer's server while it works: the request is answered (the proxy retries on a fresh
    server, as for a transcription model), with its speakers, well within its deadline."""
    talk = conversation(tmp_path, speakers=2, seconds=150, seed=8)  # long enough to catch the diarizer at work
    replies: list[httpx.Response] = []

    def send() -> None:
        files = {"file": (talk.mono.name, talk.mono.read_bytes())}
        data = {"response_format": "diarized_json"}
        replies.append(httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files=files, data=data, timeout=240))

    sender = threading.Thread(target=send)
    sender.start()
    busy: list[int] = []

    def diarizer_at_work() -> bool:
        models = httpx.get(f"{stack.gateway}/api/ps", timeout=5).json().get("models", [])
        busy.extend(m["pid"] for m in models if m["model"] == "diarizer-resemblyzer" and m["pid"] and m["inflight"])
        return bool(busy)

    wait_until(diarizer_at_work, timeout=60, what="the diarizer's server at work")
    os.kill(busy[0], signal.SIGKILL)
    sender.join(timeout=240)
    assert not sender.is_alive(), "the request hangs"
    [reply] = replies
    assert reply.status_code == 200, reply.text
    assert {s["speaker"] for s in reply.json()["segments"]} == {"A", "B"}


def test_batched_decoding_keeps_every_sentence_and_subtitle_sized_segments(oai: openai.OpenAI, tmp_path: Path) -> None:
    """A long recording decoded in batches (`batch_size`) hears what the sequential decode hears — no chunk loses
    its last sentence — and its segments are a sentence or so, timed, in order: SRT stays usable."""
    talk = conversation(tmp_path, speakers=1, seconds=100, seed=3, overlap=0.0)
    texts: dict[int, Any] = {}
    for size in (0, 8):
        with talk.mono.open("rb") as fh:
            texts[size] = oai.audio.transcriptions.create(
                model="whisper-1", file=fh, response_format="verbose_json", extra_body={"batch_size": size}
            )
    sequential, batched = (word_error_rate(talk.text, texts[size].text) for size in (0, 8))
    assert batched <= sequential + 0.05, (sequential, batched, texts[8].text)
    segments = texts[8].segments or []
    assert len(segments) >= 10
    assert all(0 <= s.end - s.start <= 25 for s in segments), [(s.start, s.end) for s in segments]
    assert all(a.end <= b.start + 0.01 for a, b in itertools.pairwise(segments))
    assert segments[-1].end >= 0.8 * texts[8].duration
    # A segment's `seek` is where its chunk starts, in 10-ms frames of the recording, as a sequential window's is: a
    # job checkpoints where it changes (actors/jobs/checkpoints.py).
    seeks = [s.seek for s in segments]
    assert seeks == sorted(seeks) and len(set(seeks)) >= 4, seeks
    assert all(s.seek <= round(s.start * 100) for s in segments), [(s.seek, s.start) for s in segments]
