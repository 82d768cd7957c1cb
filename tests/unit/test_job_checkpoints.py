"""A job's checkpointed decode, through the transport seam: a stand-in for the streamed transcription that decodes
a recording of 10-s segments from any offset, and dies where told. A decode resumed from the last checkpoint asks
only for the rest, with the caller's prompt, and gives the same result as one uninterrupted decode; checkpoints fall
only where the decode began a new window."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from actors.jobs.checkpoints import Decode, decode_with_checkpoints
from schemas.jobs import JobCheckpoint
from schemas.transcribe import Segment, TranscribeRequest, TranscriptionDelta, TranscriptionResult

SEGMENTS = 12  # a two-minute recording
WORDS = ["ask", "not", "what", "your", "country", "can", "do", "for", "you", "but", "what", "together"]


class Crash(Exception):
    pass


class Recording:
    """The streamed transcription of a 120-s recording, one 10-s segment per word; `crash_after` segments into a
    decode, it dies (the model server or the proxy killed)."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.crash_after = crash_after
        self.requests: list[TranscribeRequest] = []

    async def decode(self, request: TranscribeRequest) -> AsyncIterator[TranscriptionDelta | TranscriptionResult]:
        self.requests.append(request)
        yield TranscriptionDelta(request_id="r", model="m", text="", progress=0.0, elapsed_s=0.0)
        decoded: list[Segment] = []
        for i in range(SEGMENTS):
            start = i * 10.0
            if start < request.offset:
                continue
            if self.crash_after is not None and len(decoded) == self.crash_after:
                raise Crash("model server killed")
            segment = Segment(id=len(decoded), start=start, end=start + 10.0, text=f" {WORDS[i]}")
            decoded.append(segment)
            yield TranscriptionDelta(
                request_id="r", model="m", text=segment.text, segment=segment, progress=(start + 10) / 120, elapsed_s=1
            )
        text = "".join(s.text for s in decoded).strip()
        yield TranscriptionResult(text=text, language="en", duration=120.0, segments=decoded)


async def test_a_resumed_decode_reads_as_one_decode_of_the_whole() -> None:
    request = TranscribeRequest(response_format="srt", prompt="JFK.")
    uninterrupted = await decode_with_checkpoints(request, None, Recording().decode, save=_ignore)

    saved: list[JobCheckpoint] = []

    async def save(checkpoint: JobCheckpoint) -> None:
        saved.append(checkpoint)

    crashing = Recording(crash_after=7)
    with pytest.raises(Crash):
        await decode_with_checkpoints(request, None, crashing.decode, save, every_s=30.0)
    assert [c.seek for c in saved] == [30.0, 60.0]  # at least every 30 s of audio; the 10 s after 60 are lost
    resuming = Recording()
    result = await decode_with_checkpoints(request, saved[-1], resuming.decode, save, every_s=30.0)
    [resumed] = resuming.requests
    assert resumed.offset == 60.0 and resumed.stream and resumed.prompt == "JFK."  # the caller's, not the text
    assert result.text == uninterrupted.text == " ".join(WORDS)
    assert [(s.id, s.start) for s in result.segments] == [(s.id, s.start) for s in uninterrupted.segments]
    assert result.formatted == uninterrupted.formatted and result.formatted and "00:01:50,000" in result.formatted
    # The resumed decode went on checkpointing (each as the next segment began: its last is in the result).
    assert [c.seek for c in saved] == [30.0, 60.0, 90.0]


async def test_the_first_decode_starts_at_zero_with_the_callers_prompt() -> None:
    recording = Recording()
    await decode_with_checkpoints(TranscribeRequest(prompt="Names: Kennedy."), None, recording.decode, _ignore)
    assert (recording.requests[0].offset, recording.requests[0].prompt) == (0.0, "Names: Kennedy.")


async def test_a_stream_without_a_result_is_an_error_not_a_short_text() -> None:
    async def cut(_: TranscribeRequest) -> AsyncIterator[TranscriptionDelta | TranscriptionResult]:
        yield TranscriptionDelta(request_id="r", model="m", text="", progress=0.0, elapsed_s=0.0)

    with pytest.raises(RuntimeError, match="without a result"):
        await decode_with_checkpoints(TranscribeRequest(), None, cut, _ignore)


async def _ignore(_: JobCheckpoint) -> None:
    return None


async def test_a_server_that_ignores_the_offset_still_gives_each_segment_once() -> None:
    """A model server of an older image decodes from 0 whatever `offset` says: what precedes the checkpoint is
    dropped, not doubled."""
    recording = Recording()

    async def from_zero(request: TranscribeRequest) -> AsyncIterator[TranscriptionDelta | TranscriptionResult]:
        async for piece in recording.decode(msgspec.structs.replace(request, offset=0.0)):
            yield piece

    saved: list[JobCheckpoint] = []

    async def save(checkpoint: JobCheckpoint) -> None:
        saved.append(checkpoint)

    with pytest.raises(Crash):
        await decode_with_checkpoints(TranscribeRequest(), None, Recording(crash_after=5).decode, save, every_s=30.0)
    result = await decode_with_checkpoints(TranscribeRequest(), saved[-1], from_zero, _ignore, every_s=30.0)
    assert result.text == " ".join(WORDS) and len(result.segments) == SEGMENTS


# Whisper's windows, as (what it said, when it was said, the segment's start and end as Whisper gave them, the
# window's seek): the second segment's end runs four seconds past where the third segment's words begin, and the
# windows end before 30 s, where Whisper moved on.
DRIFTING = [
    ("and so", 0.0, 0.0, 10.0, 0),
    ("my fellow", 10.0, 10.0, 22.0, 0),
    ("americans", 18.0, 22.0, 27.0, 0),
    ("ask not", 27.0, 27.0, 37.0, 2700),
    ("what your", 37.0, 37.0, 47.0, 2700),
    ("country can do", 47.0, 47.0, 54.0, 2700),
    ("for you", 54.0, 54.0, 64.0, 5400),
    ("ask what", 64.0, 64.0, 70.0, 6400),
]


def drifting(crash_after: int | None = None) -> Decode:
    """A decoder from `offset` on hears only what was said from there; it dies after `crash_after` segments."""

    async def decode(request: TranscribeRequest) -> AsyncIterator[TranscriptionDelta | TranscriptionResult]:
        yield TranscriptionDelta(request_id="r", model="m", text="", progress=0.0, elapsed_s=0.0)
        heard = [s for s in DRIFTING if s[1] >= request.offset]
        segments = []
        for n, (text, _, start, end, seek) in enumerate(heard):
            if n == crash_after:
                raise Crash("worker killed")
            segments.append(Segment(id=n, start=start, end=end, text=f" {text}", seek=seek))
            yield TranscriptionDelta(
                request_id="r", model="m", text=f" {text}", segment=segments[-1], progress=end / 70, elapsed_s=1
            )
        yield TranscriptionResult(text="", language="en", duration=70.0, segments=segments)

    return decode


@pytest.mark.parametrize(("crash_after", "checkpoints"), [(2, []), (4, [27.0]), (6, [27.0]), (7, [27.0, 54.0])])
@pytest.mark.parametrize("every_s", [10.0, 30.0])
async def test_checkpoints_fall_where_windows_end_so_a_segment_end_that_overshoots_loses_nothing(
    crash_after: int, checkpoints: list[float], every_s: float
) -> None:
    saved: list[JobCheckpoint] = []

    async def save(checkpoint: JobCheckpoint) -> None:
        saved.append(checkpoint)

    with pytest.raises(Crash):
        await decode_with_checkpoints(TranscribeRequest(), None, drifting(crash_after), save, every_s=every_s)
    # At every window's end (windows are shorter than both), never inside one.
    assert [c.seek for c in saved] == checkpoints
    assert all(len(c.segments) == len([s for s in DRIFTING if s[3] <= c.seek]) for c in saved)
    last = saved[-1] if saved else None
    resumed = await decode_with_checkpoints(TranscribeRequest(), last, drifting(), _ignore, every_s=every_s)
    assert resumed.text == " ".join(text for text, *_ in DRIFTING)


async def test_checkpoints_are_no_more_than_every_s_apart_and_at_window_ends() -> None:
    saved: list[JobCheckpoint] = []

    async def save(checkpoint: JobCheckpoint) -> None:
        saved.append(checkpoint)

    await decode_with_checkpoints(TranscribeRequest(), None, drifting(), save, every_s=60.0)
    assert [c.seek for c in saved] == [54.0]  # 27 is under 60 - 30 (the longest window) from 0; 64 is 10 after 54
