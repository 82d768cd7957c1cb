"""Speakers put on a transcript: the diarizer's turns (segments with a speaker and no text) matched to the words
by time. Each word goes to the turn it overlaps most (the nearest turn where it overlaps none: a word said in
what the diarizer heard as a pause); a segment whose words change speaker is cut there, so that every segment
has one speaker."""

from __future__ import annotations

import bisect

import msgspec

from schemas.transcribe import Segment, TranscriptionResult, Word, cut, speaker_letter

FIRST_SPEAKER = speaker_letter(0)  # everything, when the diarizer heard no speech at all


class Turns:
    """The diarizer's turns, in time order, for looking words up."""

    def __init__(self, turns: list[Segment]) -> None:
        self.turns = sorted(turns, key=lambda t: t.start)
        self.starts = [t.start for t in self.turns]

    def speaker(self, start: float, end: float) -> str:
        if not self.turns:
            return FIRST_SPEAKER
        # Turns that may overlap [start, end]: those starting before its end (turns rarely overlap each other).
        last = bisect.bisect_right(self.starts, end)
        best, best_overlap = None, 0.0
        for turn in self.turns[max(0, last - 4) : last]:
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > best_overlap:
                best, best_overlap = turn, overlap
        if best is None:
            middle = (start + end) / 2
            best = min(self.turns, key=lambda t: max(t.start - middle, middle - t.end, 0.0))
        return best.speaker or FIRST_SPEAKER


def split(segment: Segment, words: list[Word], turns: Turns, next_id: int) -> list[tuple[Segment, list[Word]]]:
    """The segment with its words labelled, cut where the speaker changes; ids from `next_id` on."""
    if not words:
        speaker = turns.speaker(segment.start, segment.end)
        return [(msgspec.structs.replace(segment, id=next_id, speaker=speaker), [])]
    runs: list[list[Word]] = []
    for word in words:
        labelled = msgspec.structs.replace(word, speaker=turns.speaker(word.start, word.end))
        if runs and runs[-1][-1].speaker == labelled.speaker:
            runs[-1].append(labelled)
        else:
            runs.append([labelled])
    pieces = cut(segment, runs, next_id)
    return [(msgspec.structs.replace(p, speaker=run[0].speaker), run) for p, run in zip(pieces, runs, strict=True)]


def words_of(segments: list[Segment], words: list[Word]) -> list[list[Word]]:
    """The result's flat word list shared out to its segments (in order: a word belongs to the segment it starts
    in, or the last one that started before it)."""
    shared: list[list[Word]] = [[] for _ in segments]
    starts = [s.start for s in segments]
    for word in words:
        at = max(0, bisect.bisect_right(starts, word.start + 0.01) - 1)
        if shared:
            shared[at].append(word)
    return shared


def attribute(result: TranscriptionResult, turns: list[Segment], *, keep_words: bool) -> TranscriptionResult:
    """The result with a speaker on every segment (cut where it changes) and word; words dropped unless asked
    for (the proxy asked for them to match them to turns)."""
    lookup = Turns(turns)
    segments: list[Segment] = []
    words: list[Word] = []
    for segment, own in zip(result.segments, words_of(result.segments, result.words or []), strict=True):
        for piece, labelled in split(segment, own, lookup, len(segments)):
            segments.append(piece)
            words.extend(labelled)
    return msgspec.structs.replace(result, segments=segments, words=words if keep_words else None)
