"""A live session's rules, with a scripted decoder in place of the proxies: the real VAD on real speech."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.live.audio_in import Decoder
from actors.live.protocol import ProtocolError, Settings
from actors.live.session import PAUSE_CUT_AFTER_S, Limits, Piece, Session, Transcribe, _aligned
from actors.live.vad import WINDOW
from asrpro.pcm import read_pcm16
from tests.wer import word_error_rate

JFK = Path(__file__).resolve().parents[3] / "shared" / "data" / "jfk.flac"


def _pcm24k(path: Path) -> np.ndarray:
    return read_pcm16(path, 24000)


def _append(samples: np.ndarray) -> bytes:
    audio = base64.b64encode(samples.astype("<i2").tobytes()).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio}).encode()


class Script:
    """Decodes by the length of the audio: the words of `text` in proportion, as a decoder that hears more words
    as the utterance grows; the final decode may differ (`final_text`)."""

    def __init__(self, text: str, final_text: str | None = None) -> None:
        self.words, self.final = text.split(), final_text
        self.calls: list[tuple[float, bool]] = []

    async def __call__(self, audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        self.calls.append((len(audio) / 16000, final))
        await asyncio.sleep(0)
        seconds = len(audio) / 16000
        if final:
            return [Piece(seconds, self.final if self.final is not None else " ".join(self.words))]
        return [Piece(seconds, " ".join(self.words[: int(seconds * 2)]))]


class Voice:
    """The VAD's place, scripted: speech everywhere but in `pauses` (start, end in seconds)."""

    def __init__(self, pauses: list[tuple[float, float]]) -> None:
        self.pauses, self.fed, self.pending = pauses, 0, 0

    def feed(self, samples: np.ndarray) -> list[tuple[int, float]]:
        self.pending += len(samples)
        out = []
        while self.pending >= WINDOW:
            at = self.fed / 16000
            out.append((self.fed, 0.05 if any(a <= at < b for a, b in self.pauses) else 0.95))
            self.fed, self.pending = self.fed + WINDOW, self.pending - WINDOW
        return out


async def _run(
    events: list[bytes],
    decode: Transcribe,
    settings: Settings | None = None,
    vad: Voice | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,  # sees each server event as it is sent
    **limits: Any,
) -> list[dict]:
    out: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(event)
        out.append(event)

    session = Session("s", "ga", settings or Settings(), emit, decode, "m", Limits(**limits))
    if vad is not None:
        session._vad = vad  # type: ignore[assignment]
    for event in events:
        await session.handle(event)
        await asyncio.sleep(0)
    await session.close()
    return out


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_speech_is_cut_into_utterances_each_transcribed_once_finally() -> None:
    pcm = _pcm24k(JFK)
    chunks = [_append(pcm[i : i + 2400]) for i in range(0, len(pcm), 2400)] + [_append(np.zeros(24000))]
    decode = Script("and so my fellow americans ask not")
    events = asyncio.run(_run(chunks, decode))
    kinds = _types(events)
    started = kinds.count("input_audio_buffer.speech_started")
    assert started >= 2, kinds  # jfk.flac has pauses longer than 500 ms
    assert kinds.count("input_audio_buffer.committed") == started
    assert kinds.count("conversation.item.input_audio_transcription.completed") == started
    assert all(e["event_id"].startswith("event_") for e in events)
    # Each committed item is decoded finally exactly once, after the partial decodes.
    assert sum(1 for _, final in decode.calls if final) == started


@pytest.mark.parametrize("final", ["one two three four five six seven eight", "one two three for five six seven eight"])
def test_deltas_are_append_only_and_completed_is_the_final_decode(final: str) -> None:
    speech = _pcm24k(JFK)[: 24000 * 3]  # 3 s, then the client commits (no turn detection)
    settings = Settings(turn=None)
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    commit = json.dumps({"type": "input_audio_buffer.commit"}).encode()
    decode = Script("one two three four five six seven", final_text=final)
    events = asyncio.run(_run([*chunks, commit], decode, settings, partial_every_s=0.5))
    deltas = [e["delta"] for e in events if e["type"].endswith(".delta")]
    [completed] = [e for e in events if e["type"].endswith(".completed")]
    assert len(deltas) >= 2, "no deltas while the utterance grew"
    # `completed` is the final decode. Where the partials heard right, the deltas are its start; where the final
    # decode words a sent word otherwise ("for"), it corrects it, and the last delta brings the words beyond.
    assert completed["transcript"] == final
    sent = "".join(deltas)
    assert sent.endswith(" eight") and (sent == final) == ("four" in final)
    assert completed["usage"] == {"type": "duration", "seconds": 3.0}


def test_speech_without_long_pauses_is_committed_at_a_short_one_and_the_next_utterance_hears_the_text_before() -> None:
    # 16 s of speech with short pauses (0.3 s, below the turn's 0.5 s of silence) at 4 and 10 s, then silence.
    pauses = [(4.0, 4.3), (10.0, 10.3), (16.0, 18.0)]
    speech = np.zeros(24000 * 18, dtype=np.int16)
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    prompts: list[str | None] = []

    async def decode(audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        await asyncio.sleep(0)
        if final:
            prompts.append(prompt)
        return [Piece(len(audio) / 16000, f" said{len(prompts)}")]

    events = asyncio.run(_run(chunks, decode, Settings(), Voice(pauses)))
    kinds = _types(events)
    # Cut at the first pause after PAUSE_CUT_AFTER_S of speech (8 s), in the middle of the pause so far, not at 28 s;
    # the second utterance begins where speech resumes, and ends at the silence.
    first, second = (e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert 10000 < first < 10300 and 4 < PAUSE_CUT_AFTER_S < 10
    assert 16000 < second < 17000
    [second_start] = [e["audio_start_ms"] for e in events if e["type"] == "input_audio_buffer.speech_started"][1:]
    assert first <= second_start < 10300
    assert kinds.count("input_audio_buffer.committed") == 2
    # The second utterance's final decode is prompted with the first one's text, as Whisper conditions a window on
    # the one before.
    assert prompts == [None, "said1"]


def test_a_final_decode_that_leaves_speech_out_decodes_the_rest() -> None:
    speech = np.zeros(24000 * 6, dtype=np.int16)
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    commit = json.dumps({"type": "input_audio_buffer.commit"}).encode()
    finals: list[tuple[float, str | None]] = []

    async def decode(audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        await asyncio.sleep(0)
        if not final:
            return []
        finals.append((len(audio) / 16000, prompt))
        # Whisper closing its text at 2.5 s of 6 s of speech; then the rest.
        return [Piece(2.5, " first part.")] if len(finals) == 1 else [Piece(len(audio) / 16000, " the rest")]

    events = asyncio.run(_run([*chunks, commit], decode, Settings(turn=None), Voice([])))
    [completed] = [e for e in events if e["type"].endswith(".completed")]
    assert completed["transcript"] == "first part. the rest"
    assert finals == [(6.0, None), (3.5, "first part.")]


def test_bad_events_get_an_error_and_the_session_goes_on() -> None:
    bad = [
        b"not json",
        b'["a list"]',
        json.dumps({"type": "response.create"}).encode(),
        json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}).encode(),
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}).encode(),
        json.dumps({"type": "input_audio_buffer.commit", "event_id": "mine"}).encode(),
        json.dumps({"type": "session.update", "session": {"type": "realtime"}}).encode(),
        json.dumps(
            {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/mp3"}}}}}
        ).encode(),
    ]
    speech = _pcm24k(JFK)[: 24000 * 2]
    then = [_append(speech), json.dumps({"type": "input_audio_buffer.commit"}).encode()]
    events = asyncio.run(_run([*bad, *then], Script("and so"), Settings(turn=None)))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == [
        "invalid_json",
        "invalid_json",
        "invalid_value",
        "invalid_value",
        "invalid_value",
        "input_audio_buffer_commit_empty",
        "invalid_value",
        "invalid_value",
    ]
    assert errors[2]["param"] == "type" and errors[3]["param"] == "audio"
    assert errors[5]["event_id"] == "mine"
    assert all(e["type"] == "invalid_request_error" for e in errors)
    assert _types(events)[-1] == "conversation.item.input_audio_transcription.completed"


def _update(session: Any, kind: str = "session.update") -> bytes:
    return json.dumps({"type": kind, "session": session}).encode()


def _transcription(**values: Any) -> dict[str, Any]:
    return {"type": "transcription", "audio": {"input": {"transcription": values}}}


def _turn_detection(**values: Any) -> dict[str, Any]:
    return {"type": "transcription", "audio": {"input": {"turn_detection": {"type": "server_vad", **values}}}}


# Each a session.update a hostile or careless client sends, and the param its error names; found by a probe that
# closed the session with these (OverflowError, TypeError, RecursionError) or accepted them and failed every item.
BAD_UPDATES = [
    (
        b'{"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"turn_detection": '
        b'{"type": "server_vad", "silence_duration_ms": 1e400}}}}}',
        "session.audio.input.turn_detection.silence_duration_ms",
    ),
    (_turn_detection(prefix_padding_ms="300"), "session.audio.input.turn_detection.prefix_padding_ms"),
    (_turn_detection(threshold=True), "session.audio.input.turn_detection.threshold"),
    (_turn_detection(type=["server_vad"]), "session.audio.input.turn_detection.type"),
    ({"type": "transcription", "audio": {"input": {"format": {"type": ["audio/pcm"]}}}}, "session.audio.input.format"),
    (_transcription(prompt=7), "session.audio.input.transcription.prompt"),
    (_transcription(language=["en"]), "session.audio.input.transcription.language"),
    (_transcription(model={"id": "whisper-1"}), "session.audio.input.transcription.model"),
    ({"type": "transcription", "include": "x"}, "session.include"),
]


@pytest.mark.parametrize(("update", "param"), BAD_UPDATES)
def test_a_bad_session_update_gets_an_error_changes_nothing_and_the_session_goes_on(update: Any, param: str) -> None:
    raw = update if isinstance(update, bytes) else _update(update)
    speech = _pcm24k(JFK)[: 24000 * 2]
    then = [_append(speech), json.dumps({"type": "input_audio_buffer.commit"}).encode()]
    events = asyncio.run(_run([raw, *then], Script("and so"), Settings(turn=None)))
    [error] = [e["error"] for e in events if e["type"] == "error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", param)
    assert "session.updated" not in _types(events)
    assert _types(events)[-1] == "conversation.item.input_audio_transcription.completed"


def test_beta_shape_and_deep_or_huge_events_get_an_error_too() -> None:
    deep = b'{"type": "session.update", "session": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge_type = json.dumps({"type": "x" * 100_000}).encode()
    beta_format = _update({"input_audio_format": ["pcm16"]}, "transcription_session.update")
    speech = _pcm24k(JFK)[: 24000 * 2]
    then = [_append(speech), json.dumps({"type": "input_audio_buffer.commit"}).encode()]
    events = asyncio.run(_run([deep, huge_type, beta_format, *then], Script("and so"), Settings(turn=None)))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(e["code"], e["param"]) for e in errors] == [
        ("invalid_json", None),
        ("invalid_value", "type"),
        ("invalid_value", "session.input_audio_format"),
    ]
    assert len(errors[1]["message"]) < 400  # the 100,000-character type is not echoed back whole
    assert _types(events)[-1] == "conversation.item.input_audio_transcription.completed"


def test_a_buffer_beyond_its_limit_is_refused_and_clear_empties_it() -> None:
    second = _append(np.zeros(24000))
    clear = json.dumps({"type": "input_audio_buffer.clear"}).encode()
    events = asyncio.run(_run([second, second, second, clear], Script(""), Settings(turn=None), max_buffer_s=2.0))
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["input_audio_buffer_too_large"]
    assert _types(events)[-1] == "input_audio_buffer.cleared"


def test_session_update_in_either_shape() -> None:
    settings = Settings()
    settings.apply(
        {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "whisper-1", "language": "en", "prompt": "names"},
                    "turn_detection": {"type": "semantic_vad"},
                }
            },
        },
        "ga",
    )
    assert (settings.format, settings.language, settings.prompt, settings.turn_type) == (
        "g711_ulaw",
        "en",
        "names",
        "semantic_vad",
    )
    rendered = settings.render("sess_1", "ga", "whisper-tiny.en")
    assert rendered["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert "server_vad" in rendered["audio"]["input"]["turn_detection"]["x_asrpro_note"]
    settings.apply({"input_audio_format": "g711_alaw", "turn_detection": None}, "beta")
    assert settings.format == "g711_alaw" and settings.turn is None
    beta = settings.render("sess_1", "beta", "whisper-tiny.en")
    assert beta["input_audio_format"] == "g711_alaw" and beta["turn_detection"] is None
    with pytest.raises(ProtocolError) as bad:
        settings.apply({"input_audio_format": "opus"}, "beta")
    assert bad.value.param == "session.input_audio_format"
    assert settings.format == "g711_alaw"  # a refused update changes nothing


def test_pcm16_at_24k_becomes_16k_across_chunk_seams() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 24000) * 32767).astype("<i2")
    decoder = Decoder("pcm16")
    pieces = [decoder.decode(base64.b64encode(tone[i : i + 2407].tobytes()).decode()) for i in range(0, 48000, 2407)]
    out = np.concatenate(pieces)
    assert abs(len(out) - 32000) <= 1
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    assert np.abs(out[50:-50] - expected[50:-50]).max() < 0.05  # no jumps at the seams


def test_g711_decodes_both_laws() -> None:
    ulaw, alaw = Decoder("g711_ulaw"), Decoder("g711_alaw")
    loud = ulaw.decode(base64.b64encode(bytes([0x80, 0x00, 0xFF])).decode())
    # 8 kHz to 16 kHz: every other sample is one sent, those between are interpolated.
    assert loud[0] > 0.9 and loud[2] < -0.9 and loud[4] == 0.0
    quiet = alaw.decode(base64.b64encode(bytes([0xD5, 0x55, 0xAA])).decode())
    assert 0 < quiet[0] < 0.001 and -0.001 < quiet[2] < 0 and quiet[4] > 0.9


def test_alignment_of_sent_words_in_the_final_decode() -> None:
    assert _aligned([], ["a"]) == 0
    assert _aligned(["And", "so"], ["and", "so,", "my"]) == 2
    assert _aligned(["one", "two", "tree"], ["one", "two", "three", "four"]) == 3
    assert word_error_rate("and so my", "and so my") == 0


class Segmented:
    """Two words a second in segments of 2 s; a decode that starts after anchored words (given as its prompt)
    hears the words that follow them."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.partial_lengths: list[float] = []

    async def __call__(self, audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        await asyncio.sleep(0)
        seconds = len(audio) / 16000
        if not final:
            self.partial_lengths.append(seconds)
        offset = len(prompt.split()) if prompt else 0
        heard = self.words[offset : offset + int(seconds * 2)]
        return [
            Piece(min(seconds, 2.0 * (k + 1)), " ".join(heard[4 * k : 4 * k + 4])) for k in range((len(heard) + 3) // 4)
        ]


def test_partial_decodes_of_a_long_utterance_start_after_what_was_sent() -> None:
    words = [f"w{n}" for n in range(40)]
    speech = np.zeros(24000 * 14, dtype=np.int16)  # 14 s: the scripted decoder does not listen
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    commit = json.dumps({"type": "input_audio_buffer.commit"}).encode()
    decode = Segmented(words)
    events = asyncio.run(_run([*chunks, commit], decode, Settings(turn=None), partial_every_s=0.5))
    deltas = "".join(e["delta"] for e in events if e["type"].endswith(".delta"))
    [completed] = [e for e in events if e["type"].endswith(".completed")]
    assert completed["transcript"] == deltas == " ".join(words[:28])
    assert max(decode.partial_lengths) < 10, decode.partial_lengths  # trimmed: never the whole 14 s again


def test_the_final_decode_begins_at_the_pause_and_is_dropped_if_speech_resumes() -> None:
    # Speech, a 400-ms pause (shorter than the turn's 500-ms silence), speech, the turn's silence.
    pauses = [(2.0, 2.4), (4.0, 6.0)]  # an utterance shorter than PAUSE_CUT_AFTER_S: cut by the turn's silence
    speech = np.zeros(24000 * 6, dtype=np.int16)
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    finals: list[float] = []
    release = asyncio.Event()

    async def decode(audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        seconds = len(audio) / 16000
        if final:
            finals.append(seconds)
            await release.wait()  # a decode that takes its time: still running when speech resumes
        return [Piece(seconds, " ".join(["w"] * int(seconds * 2)))]

    def released(event: dict[str, Any]) -> None:
        if event["type"] == "input_audio_buffer.speech_stopped":
            release.set()

    events = asyncio.run(_run(chunks, decode, vad=Voice(pauses), on_event=released))
    [stopped] = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    [completed] = [e for e in events if e["type"].endswith(".completed")]
    assert 4400 < stopped < 4600 and PAUSE_CUT_AFTER_S > 4.5
    # Two final decodes began, each 256 ms into a pause: the first was dropped when speech resumed (its 2.2 s would
    # be 4 words), the second is `completed`, begun before the turn's silence had elapsed; none began at the commit.
    assert len(finals) == 2 and 2.2 < finals[0] < 2.4 and 4.2 < finals[1] < 4.4, finals
    assert completed["transcript"].split() == ["w"] * int(finals[1] * 2)
    assert completed["usage"]["seconds"] == pytest.approx(stopped / 1000, abs=0.05)


def test_a_final_decode_begun_at_a_pause_hears_nothing_after_it_in_a_long_append() -> None:
    # 1-s appends: the pause, the turn's end and the next speech all come in one chunk, read window by window.
    pauses = [(2.0, 2.6), (5.0, 7.0)]
    speech = np.zeros(24000 * 7, dtype=np.int16)
    chunks = [_append(speech[i : i + 24000]) for i in range(0, len(speech), 24000)]
    finals: list[float] = []

    async def decode(audio: np.ndarray, final: bool, _: Settings, prompt: str | None) -> list[Piece]:
        await asyncio.sleep(0)
        if final:
            finals.append(len(audio) / 16000)
        return [Piece(len(audio) / 16000, " w")]

    events = asyncio.run(_run(chunks, decode, Settings(), Voice(pauses)))
    stops = [e["audio_end_ms"] / 1000 for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    starts = [e["audio_start_ms"] / 1000 for e in events if e["type"] == "input_audio_buffer.speech_started"]
    assert len(stops) == 2 and 2.4 < stops[0] < 2.6
    # The first utterance's final decode ends in its pause, not in the next utterance's speech after 2.6 s.
    assert finals[0] <= stops[0] - starts[0], (finals, stops)


def _server_vad_from_1_5_s(settings: Settings) -> list[dict[str, Any]]:
    """5 s of speech with a pause from 3 s, server_vad (600 ms of silence) set by a session.update 1.5 s into it."""
    speech = np.zeros(24000 * 5, dtype=np.int16)
    chunks = [_append(speech[i : i + 2400]) for i in range(0, len(speech), 2400)]
    turn = {"type": "server_vad", "silence_duration_ms": 600}
    update = {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": turn}}},
    }
    chunks.insert(15, json.dumps(update).encode())  # 1.5 s into the speech
    return asyncio.run(_run(chunks, Script("one two three four five six"), settings, Voice([(3.0, 5.0)])))


def test_new_turn_settings_mid_speech_keep_the_utterance() -> None:
    events = _server_vad_from_1_5_s(Settings())
    kinds = _types(events)
    assert "session.updated" in kinds
    # One utterance from 0 to the new silence's end: the speech under way was neither dropped nor cut in two.
    assert kinds.count("input_audio_buffer.speech_started") == 1
    [stopped] = [e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert 3550 < stopped < 3700
    assert kinds.count("conversation.item.input_audio_transcription.completed") == 1


def test_turn_detection_switched_on_mid_speech_announces_the_clients_utterance_before_it_stops_it() -> None:
    events = _server_vad_from_1_5_s(Settings(turn=None))  # speech the client was to commit itself
    speech_events = [e for e in events if e["type"].startswith("input_audio_buffer.speech_")]
    assert [e["type"] for e in speech_events] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ]
    started, stopped = speech_events
    assert started["item_id"] == stopped["item_id"] and started["audio_start_ms"] == 0
    assert _types(events).count("conversation.item.input_audio_transcription.completed") == 1
