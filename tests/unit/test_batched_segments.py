"""The batched mode's segments, cut from a chunk's words (model_server/engines/batched_pipeline.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from faster_whisper.transcribe import Segment, Word

from model_server.engines.batched_pipeline import LONGEST_S, resegmented, with_fallback


def chunk(words: list[tuple[str, float, float]], start: float = 0.0) -> Segment:
    heard = [Word(start=a, end=b, word=w, probability=0.9) for w, a, b in words]
    text = "".join(w for w, _, _ in words)
    end = heard[-1].end if heard else start + 30
    return Segment(0, 0, start, end, text, [1, 2, 3], -0.2, 1.5, 0.01, heard, 0.0)


def cut(*pieces: Segment) -> list[Segment]:
    return list(resegmented(pieces, lambda text: [len(word) for word in text.split()]))


def test_a_chunk_is_cut_at_sentence_ends_and_pauses_keeping_every_word() -> None:
    words = [(" Hello", 0.0, 0.4), (" there.", 0.4, 0.9), (" How", 1.0, 1.2), (" are", 1.2, 1.4), (" you", 1.4, 1.6)]
    words += [(" and", 2.6, 2.8), (" yours?", 2.8, 3.1)]  # a pause of a second before "and"
    segments = cut(chunk(words, start=0.0))
    assert [s.text for s in segments] == [" Hello there.", " How are you", " and yours?"]
    assert [(s.start, s.end) for s in segments] == [(0.0, 0.9), (1.0, 1.6), (2.6, 3.1)]
    assert "".join(s.text for s in segments) == "".join(w for w, _, _ in words)
    assert segments[1].words is not None and [w.word for w in segments[1].words] == [" How", " are", " you"]
    assert segments[0].tokens == [5, 6]  # the segment's own text encoded, not the chunk's tokens
    assert all(s.avg_logprob == -0.2 and s.no_speech_prob == 0.01 for s in segments)


def test_a_long_run_without_sentence_end_is_cut_at_a_comma_then_anywhere() -> None:
    steady = [(f" w{n}{',' if n == 40 else ''}", n * 0.4, n * 0.4 + 0.35) for n in range(150)]
    segments = cut(chunk(steady))
    assert sum(len(s.words or []) for s in segments) == 150
    assert segments[0].words is not None and segments[0].words[-1].word == " w40,"  # the first comma past 12 s
    assert all(s.end - s.start <= 2 * LONGEST_S + 0.4 for s in segments)


def test_chunks_stay_in_order_and_a_silent_chunk_passes_through() -> None:
    first = chunk([(" One.", 0.0, 0.5), (" Two.", 0.6, 1.0)])
    silent = chunk([], start=30.0)
    last = chunk([(" Three.", 60.0, 60.5)], start=60.0)
    segments = cut(first, silent, last)
    assert [s.text for s in segments] == [" One.", " Two.", "", " Three."]


def test_a_looping_chunk_is_decoded_again_between_its_neighbours_in_the_recordings_time() -> None:
    """The stretch decoded again runs from the text before it to the next chunk's first word, in the recording's
    time (the chunks' `seek` counts without the VAD's silences, so it is not used)."""
    good = chunk([(" One.", 0.0, 4.0)])
    looping = chunk([(" X, X, X, X, X, X, X,", 40.0, 60.0)], start=40.0)
    looping = dataclasses.replace(looping, compression_ratio=5.0, seek=1234)
    after = chunk([(" Two.", 70.0, 72.0)], start=70.0)
    asked: list[tuple[float, float]] = []

    def again(start: float, end: float) -> list[Segment]:
        asked.append((start, end))
        return [chunk([(" Again.", start + 1, start + 2)], start=start)]

    out = list(with_fallback([good, looping, after], 90.0, lambda p: p.compression_ratio > 2.4, again))
    assert asked == [(4.0, 70.0)]
    assert [s.text for s in out] == [" One.", " Again.", " Two."]
    # The last chunk looping: up to the recording's end.
    asked.clear()
    list(with_fallback([good, looping], 90.0, lambda p: p.compression_ratio > 2.4, again))
    assert asked == [(4.0, 90.0)]


def test_segments_are_given_out_as_the_pipeline_yields_them() -> None:
    taken: list[int] = []

    def lazily() -> Iterator[Segment]:
        for n in range(3):
            taken.append(n)
            yield chunk([(f" W{n}.", 10.0 * n, 10.0 * n + 1)], start=10.0 * n)

    first = next(with_fallback(lazily(), 30.0, lambda p: False, lambda a, b: []))
    assert first.text == " W0." and taken == [0, 1]  # one chunk ahead, no more
