"""Segments for faster-whisper's batched pipeline, cut from its words.

With timestamps on, the batched pipeline (faster-whisper 1.2) loses words: Whisper often ends a chunk's text at the
last segment it can close and leaves the rest for the next window, which the sequential decode then reads from that
timestamp on, but a batched chunk has no next window. On long speech with few pauses that dropped the last sentence
of nearly every 30-s chunk: batch 8 heard 761 of 818 words, its word error rate 0.012 above the sequential decode's;
the same chunks decoded without timestamps heard 820, 0.039 below it (`bench/batching.py`, 5 minutes, tiny.en).

So the batched mode decodes without timestamps, one text per chunk, with word timestamps (the cross-attention
alignment, about 15 % of the decode), and cuts each chunk here into segments at sentence ends and pauses: subtitles
keep lines of a sentence or so, with word-accurate times.

And a chunk decoded at the first temperature only can loop ("X, X, X, X, ..."): 5 of 45 chunks of 20 minutes did,
where the sequential decode would have tried again hotter. `with_fallback` decodes such a chunk again, alone, the
sequential way (the whole temperature ladder), so batching buys no speed with those words.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

PAUSE_S = 0.8  # a silence this long between two words ends a segment
LONGEST_S = 12.0  # past this, a segment ends at the next comma (or word): subtitle lines stay readable
MIN_AGAIN_S = 1.0  # the shortest stretch decoded again for a chunk that looped
SENTENCE_END = (".", "?", "!", "\u3002", "\uff1f", "\uff01")  # and the CJK full stop, question, exclamation
CLAUSE_END = (",", ";", ":", "\u3001", "\uff0c")


def with_fallback(
    pieces: Iterable[Any],
    duration: float,
    would_retry: Callable[[Any], bool],
    again: Callable[[float, float], Iterable[Any]],
) -> Iterator[Any]:
    """The batched pipeline's segments (one per chunk, in order), where a chunk's crosses the sequential decode's
    thresholds (`would_retry`) replaced by `again(start_s, end_s)`: that stretch of the recording decoded alone.

    The stretch runs from where the text before it ends to where the next chunk's begins, in the recording's time.
    Not from the chunks' `seek`: with its VAD on, the pipeline counts that in audio with the silences taken out,
    while segment and word times are given back in the recording's."""
    done_until = 0.0  # the end of the last text given out
    held = None
    for piece in itertools.chain(pieces, [None]):  # lazily: segments stream as each batch ends
        if held is not None:
            until = piece.start if piece is not None else duration
            if not would_retry(held):
                yield held
                done_until = held.end
            else:
                if until - done_until < MIN_AGAIN_S:  # the next chunk's words start early: its own end bounds it
                    until = max(held.end, done_until + MIN_AGAIN_S)
                yield from again(done_until, until)
                done_until = until
        held = piece


def resegmented(pieces: Iterable[Any], encode: Callable[[str], list[int]]) -> Iterator[Any]:
    """faster-whisper segments of whole chunks (with words) as segments of a sentence or so, in order; `encode`
    gives a segment's text tokens. A chunk without words (nothing heard) is passed on as it is."""
    for piece in pieces:
        if not piece.words:
            yield piece
            continue
        for words in _runs(piece.words):
            text = "".join(w.word for w in words)
            yield dataclasses.replace(
                piece, start=words[0].start, end=words[-1].end, text=text, tokens=encode(text), words=words
            )


def _runs(words: list[Any]) -> Iterator[list[Any]]:
    run: list[Any] = []
    for word, following in zip(words, [*words[1:], None], strict=True):
        run.append(word)
        if following is not None and _ends_run(run, word, following):
            yield run
            run = []
    yield run


def _ends_run(run: list[Any], word: Any, following: Any) -> bool:
    said, length = word.word.strip(), word.end - run[0].start
    if said.endswith(SENTENCE_END) or following.start - word.end >= PAUSE_S:
        return True
    # A long run ends at a comma, a very long one anywhere: subtitle lines stay readable.
    return (length >= LONGEST_S and said.endswith(CLAUSE_END)) or length >= 2 * LONGEST_S
