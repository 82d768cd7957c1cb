"""Relay: where a request's decoding shows while it runs — progress reports on asr.progress.<model> for everyone,
and for a requester that asked to stream, each segment as a partial reply, once, even across a retry on a fresh
server or another node."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from actors.proxy.speakers import Turns, split
from framework.actor import Actor, send_partial
from schemas import subjects
from schemas.model_server import SegmentFrame
from schemas.transcribe import Segment, TranscribeRequest, TranscriptionDelta, TranscriptionProgress, Word

PROGRESS_EVERY_S = 0.5


@dataclass
class Sent:
    """How far a streaming requester's text has been relayed (the end of the last segment sent)."""

    until: float = -1.0
    opened: bool = False  # the requester heard that its audio opened
    next_id: int = 0  # segments relayed with speakers are renumbered (cut where the speaker changes): the next id


class Relay:
    """Where a request's decoding shows: progress on asr.progress.<model> at most every PROGRESS_EVERY_S, and for
    a requester that asked to stream, each segment as a partial reply (once, even across a retry)."""

    def __init__(self, proxy: Actor, msg: TranscribeRequest, model_id: str, started: float, sent: Sent) -> None:
        self.proxy, self.msg, self.model_id, self.started = proxy, msg, model_id, started
        self.sent = sent  # end of the last segment relayed, also by another node before a retry here
        self.last_progress = 0.0
        self.first_text_s: float | None = None  # a streamed request: when its first text went back (metrics)
        # With diarize=speakers: the diarizer's turns (being found), to put speakers on streamed segments.
        self.turns: asyncio.Task[list[Segment]] | None = None

    async def opened(self) -> None:
        """The model server opened the audio: a streaming requester may start its stream (one empty partial)."""
        if self.msg.stream and not self.sent.opened:
            self.sent.opened = True
            await send_partial(
                TranscriptionDelta(
                    request_id=self.msg.request_id,
                    model=self.model_id,
                    text="",
                    progress=0.0,
                    elapsed_s=round(time.monotonic() - self.started, 3),
                )
            )

    async def segment(self, frame: SegmentFrame) -> None:
        end = frame.segment.end
        # Already relayed before a retry on a fresh server: segments come in time order. Not those of channel
        # diarization, merged by start from several channels, whose ends go back and forth.
        if end <= self.sent.until and frame.segment.speaker is None:
            return
        self.sent.until = max(self.sent.until, end)
        progress = min(1.0, end / frame.duration) if frame.duration else 0.0
        if self.msg.stream:
            pieces: list[tuple[Segment, list[Word] | None]] = [(frame.segment, frame.words)]
            if self.turns is not None:  # the same cuts and ids as the final result (actors/proxy/speakers.py)
                labelled = split(frame.segment, frame.words or [], Turns(await self.turns), self.sent.next_id)
                self.sent.next_id += len(labelled)
                keep_words = "word" in self.msg.timestamp_granularities
                pieces = [(segment, words if keep_words else None) for segment, words in labelled]
            for segment, words in pieces:
                delta = TranscriptionDelta(
                    request_id=self.msg.request_id,
                    model=self.model_id,
                    text=segment.text,
                    segment=segment,
                    words=words,
                    progress=round(progress, 4),
                    elapsed_s=round(time.monotonic() - self.started, 3),
                )
                await send_partial(delta)
            if self.first_text_s is None and frame.segment.text.strip():
                self.first_text_s = round(time.monotonic() - self.started, 3)
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            await self._progress(progress, end, frame.duration)

    async def done(self, duration: float) -> None:
        await self._progress(1.0, duration, duration)

    async def _progress(self, progress: float, done_s: float, duration: float) -> None:
        report = TranscriptionProgress(
            model=self.model_id,
            request_id=self.msg.request_id,
            progress=round(progress, 4),
            done_s=round(done_s, 3),
            duration=round(duration, 3),
            elapsed_s=round(time.monotonic() - self.started, 3),
            filename=self.msg.filename,
        )
        await self.proxy.send(subjects.progress(self.model_id), report)
