"""Speakers put on words and segments (actors/proxy/speakers.py), the diarizer's clustering and its checkpoint
reader, and the diarization error rate the benchmark reports."""

from __future__ import annotations

import base64
import pickle
from pathlib import Path

import numpy as np
import pytest

from actors.live.actor import _wav as wav_bytes
from actors.proxy.speakers import attribute
from bench.conversation import error_rate
from model_server.engines import diarizer
from model_server.engines.base import BadOption
from model_server.engines.diarizer import DiarizerEngine, _turns, cluster
from model_server.engines.torch_weights import MAGIC, CheckpointError, load_state
from schemas.errors import AsrError
from schemas.jobs import job_request_ok
from schemas.transcribe import KnownSpeaker, Segment, TranscribeRequest, TranscriptionResult, Word, diarization


def _turn(start: float, end: float, speaker: str) -> Segment:
    return Segment(id=0, start=start, end=end, text="", speaker=speaker)


def _word(text: str, start: float, end: float) -> Word:
    return Word(word=f" {text}", start=start, end=end, probability=0.9)


def _result(segments: list[Segment], words: list[Word]) -> TranscriptionResult:
    text = "".join(s.text for s in segments).strip()
    return TranscriptionResult(text=text, language="en", duration=10.0, segments=segments, words=words)


def test_a_segment_is_cut_where_its_words_change_speaker() -> None:
    words = [_word("hello", 0.0, 0.4), _word("there", 0.5, 0.9), _word("hi", 1.3, 1.6), _word("back", 1.7, 2.0)]
    segment = Segment(id=0, start=0.0, end=2.0, text=" hello there hi back", tokens=[1, 2, 3], avg_logprob=-0.2)
    turns = [_turn(0.0, 1.0, "A"), _turn(1.2, 2.2, "B")]
    result = attribute(_result([segment], words), turns, keep_words=True)
    assert [(s.id, s.speaker, s.text, s.start, s.end) for s in result.segments] == [
        (0, "A", " hello there", 0.0, 0.9),
        (1, "B", " hi back", 1.3, 2.0),
    ]
    assert [w.speaker for w in result.words or []] == ["A", "A", "B", "B"]
    assert result.segments[0].tokens == [] and result.segments[0].avg_logprob == -0.2
    assert result.text == "hello there hi back"  # the text is the transcription's, untouched


def test_a_word_goes_to_the_turn_it_overlaps_most_or_the_nearest() -> None:
    turns = [_turn(0.0, 1.0, "A"), _turn(1.0, 3.0, "B"), _turn(5.0, 6.0, "A")]
    words = [_word("across", 0.8, 1.5), _word("pause", 3.4, 3.6), _word("late", 4.6, 4.8)]
    segment = Segment(id=0, start=0.8, end=4.8, text=" across pause late")
    result = attribute(_result([segment], words), turns, keep_words=False)
    assert [s.speaker for s in result.segments] == ["B", "A"]  # pause is nearer B's end, late nearer A's start
    assert result.words is None  # asked only to match turns: not given back


def test_segments_keep_their_order_and_ids_run_on_across_them() -> None:
    segments = [Segment(id=0, start=0.0, end=1.0, text=" one two"), Segment(id=1, start=1.0, end=2.0, text=" three")]
    words = [_word("one", 0.0, 0.4), _word("two", 0.6, 0.9), _word("three", 1.1, 1.5)]
    turns = [_turn(0.0, 0.5, "A"), _turn(0.5, 2.0, "B")]
    result = attribute(_result(segments, words), turns, keep_words=True)
    assert [(s.id, s.speaker) for s in result.segments] == [(0, "A"), (1, "B"), (2, "B")]


def test_without_turns_everyone_is_the_first_speaker_and_wordless_segments_are_labelled() -> None:
    segment = Segment(id=0, start=0.0, end=1.0, text=" hm")
    assert attribute(_result([segment], []), [], keep_words=False).segments[0].speaker == "A"
    labelled = attribute(_result([segment], []), [_turn(0.0, 2.0, "B")], keep_words=False)
    assert labelled.segments[0].speaker == "B"


def test_clustering_finds_the_voices_and_keeps_to_the_counts_asked() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 256))
    points = np.concatenate([c + 0.3 * rng.normal(size=(40, 256)) for c in centres])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = cluster(points, 1, 8)
    assert len(set(labels.tolist())) == 3
    assert all(len(set(labels[i * 40 : (i + 1) * 40].tolist())) == 1 for i in range(3))
    assert len(set(cluster(points, 1, 2).tolist())) == 2
    assert len(set(cluster(points[:40], 2, 8).tolist())) == 2  # at least two, though one voice


def test_turns_follow_the_nearest_window_and_letter_speakers_by_first_appearance() -> None:
    speech = np.zeros(600, bool)
    speech[50:250] = speech[300:550] = True
    centres = np.array([100, 200, 350, 450, 520])
    labels = np.array([1, 1, 0, 0, 0])
    assert _turns(speech, centres, labels) == [(0.5, 2.5, "A"), (3.0, 5.5, "B")]


def test_a_checkpoint_naming_anything_but_tensors_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as f:
        headers: tuple[object, ...] = (MAGIC, 1001, {})
        for header in headers:
            pickle.dump(header, f, protocol=2)
        pickle.dump({"state": Exploit()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_state(evil)
    notes = tmp_path / "notes.pt"
    notes.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state(notes)


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_the_error_rate_counts_missed_false_and_confused_speech() -> None:
    reference = [(0.0, 10.0, "A"), (10.0, 20.0, "B")]
    assert error_rate(reference, [(0.0, 10.0, "x"), (10.0, 20.0, "y")], collar=0.0) == pytest.approx(0.0)
    assert error_rate(reference, [(0.0, 20.0, "x")], collar=0.0) == pytest.approx(0.5)  # B's half confused
    assert error_rate(reference, [(0.0, 10.0, "x")], collar=0.0) == pytest.approx(0.5)  # B's half missed
    false_alarm = [(0.0, 10.0, "x"), (10.0, 20.0, "y"), (20.0, 25.0, "y")]
    assert error_rate(reference, false_alarm, collar=0.0) == pytest.approx(0.25)
    # A collar forgives boundaries: 0.5 s late on each side of a 0.25-s collar still costs the rest.
    late = [(0.5, 10.0, "x"), (10.0, 20.0, "y")]
    assert 0 < error_rate(reference, late, collar=0.25) < error_rate(reference, late, collar=0.0)
    overlap = [(0.0, 10.0, "A"), (5.0, 15.0, "B")]  # two voices at once: each scored
    assert error_rate(overlap, [(0.0, 5.0, "x"), (5.0, 15.0, "y")], collar=0.0) == pytest.approx(0.25)


def test_a_truncated_checkpoint_is_refused_not_read_past_its_end(tmp_path: Path) -> None:
    whole = Path(__file__).resolve().parents[2] / "models" / "diarizer-resemblyzer" / "pretrained.pt"
    if not whole.is_file():
        pytest.fail("no diarizer weights here: asrpro models pull diarizer-resemblyzer (the test command does)")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: 2 * 2**20])
    with pytest.raises(CheckpointError, match=r"truncated|not a checkpoint"):
        load_state(cut)


def test_a_lettered_voice_never_takes_a_known_speakers_name() -> None:
    speech = np.ones(600, bool)
    centres = np.array([100, 300, 500])
    labels = np.array([0, 1, 2])
    turns = _turns(speech, centres, labels, {1: "A"})
    assert [speaker for *_, speaker in turns] == ["B", "A", "C"]


def test_jobs_refuse_known_speakers_and_names_are_given_once() -> None:
    ann = KnownSpeaker(name="Ann", audio=b"RIFF")
    with pytest.raises(AsrError) as refused:
        job_request_ok(TranscribeRequest(known_speakers=[ann]))
    assert refused.value.code == "400" and refused.value.param == "known_speaker_names"
    job_request_ok(TranscribeRequest(diarize="speakers", max_speakers=3))
    with pytest.raises(AsrError, match="once"):
        diarization(TranscribeRequest(known_speakers=[ann, ann]))
    assert diarization(TranscribeRequest(known_speakers=[ann])) == "speakers"  # known speakers mean speakers
    with pytest.raises(AsrError, match="not channels"):
        diarization(TranscribeRequest(known_speakers=[ann], diarize="channels"))


def test_a_name_given_twice_is_one_400_for_the_form_and_the_bus() -> None:
    """The gateway's form check leaves a repeated name to diarization(), which the bus's requests go through too."""
    from gateway.openai_routes import known_speakers_field

    sample = "data:audio/wav;base64," + base64.b64encode(b"RIFF").decode()
    known = known_speakers_field(["Ann", " Ann "], [sample, sample])
    with pytest.raises(AsrError) as refused:
        diarization(TranscribeRequest(known_speakers=known))
    assert (refused.value.code, refused.value.param) == ("400", "known_speaker_names")
    assert "'Ann'" in refused.value.message


def _wav(seconds: float, hz: float) -> str:
    """A tone as a base64 WAV (16 kHz, 16-bit mono), as a known speaker's sample reaches the diarizer."""
    t = np.arange(int(seconds * 16000)) / 16000
    return base64.b64encode(wav_bytes(0.3 * np.sin(2 * np.pi * hz * t))).decode()


class CountingEncoder:
    """The voice encoder's interface, counting the windows it embeds."""

    def __init__(self, weights: Path) -> None:
        self.windows = 0

    def embed(self, mels: np.ndarray) -> np.ndarray:
        self.windows += len(mels)
        out = np.ones((len(mels), 256), np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_known_speakers_sample_sent_again_is_not_embedded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diarizer, "VoiceEncoder", CountingEncoder)
    monkeypatch.setattr(diarizer, "VOICE_CACHE", 2)
    (tmp_path / "pretrained.pt").write_bytes(b"")
    engine = DiarizerEngine(str(tmp_path))
    encoder = engine.encoder
    assert isinstance(encoder, CountingEncoder)
    ann, bob, cy = _wav(3.0, 220.0), _wav(3.0, 330.0), _wav(3.0, 440.0)
    first = engine.known(["Ann"], [ann])
    embedded = encoder.windows
    assert embedded > 0
    again = engine.known(["Anna"], [ann])  # the same sample under another name: the same voice
    assert encoder.windows == embedded
    assert np.array_equal(again["Anna"], first["Ann"])
    engine.known(["Bob", "Cy"], [bob, cy])  # two more samples: Ann's, the least recently used, is dropped
    counted = encoder.windows
    engine.known(["Cy"], [cy])
    assert encoder.windows == counted
    engine.known(["Ann"], [ann])
    assert encoder.windows > counted
    # A sample refused is refused every time, never kept.
    short = _wav(0.5, 220.0)
    for _ in range(2):
        with pytest.raises(BadOption, match=r"lasts 0\.5 s"):
            engine.known(["Dee"], [short])
