"""Bounded waiting for a model, by one scheduling rule: at most `max_parallel` requests forwarded at once; a freed
slot goes to the most urgent waiter — live sessions, then interactive requests, then batch (durable jobs) — first
come first served within each; batch requests hold at most max_parallel - 1 slots (all of them when there is
only one), so with two slots or more an interactive request never waits for a job to end: one slot is always
out of the jobs' reach. (A running job is not interrupted: with one slot, an interactive request waits for it.)
Interactive overflow (more than `max_queue` waiting) is refused at once (429); batch requests are not refused
(the jobs actor bounds them with jobs.max_running); a wait past the deadline ends in 504."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from typing import Literal

from schemas import errors
from schemas.errors import AsrError, ErrorCode

Priority = Literal["live", "interactive", "batch"]
RANK: dict[str, int] = {"live": 0, "interactive": 1, "batch": 2}


class ModelQueue:
    def __init__(self, model: str, max_parallel: int, max_queue: int) -> None:
        self.model = model
        self.max_parallel, self.max_queue = max(1, max_parallel), max_queue
        self.batch_cap = max(1, self.max_parallel - 1)
        self._waiters: list[tuple[int, int, asyncio.Future[None], bool]] = []  # (rank, arrival, granted, batch)
        self._arrivals = itertools.count()
        self.running = 0
        self.running_batch = 0

    @property
    def waiting(self) -> int:
        return sum(not granted.done() for _, _, granted, _ in self._waiters)

    def _grant(self) -> None:
        """Free slots to the most urgent waiters that may take them."""
        passed = []
        while self._waiters and self.running < self.max_parallel:
            entry = heapq.heappop(self._waiters)
            _, _, granted, batch = entry
            if granted.done():  # gave up waiting
                continue
            if batch and self.running_batch >= self.batch_cap:
                passed.append(entry)  # its kind is at its cap: the next kind may go (none is more urgent)
                continue
            granted.set_result(None)
            self.running += 1
            self.running_batch += batch
        for entry in passed:
            heapq.heappush(self._waiters, entry)

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float, priority: Priority = "interactive") -> AsyncIterator[float]:
        """Hold one of the model's slots; yields the seconds spent waiting for it."""
        t0 = time.monotonic()
        batch = priority == "batch"
        if not batch and self.running >= self.max_parallel and self.waiting >= self.max_queue:
            raise AsrError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"{self.model} is overloaded: {self.running} request(s) running and {self.waiting} waiting "
                f"(max_queue = {self.max_queue})",
                retry_after=1.0,
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (RANK[priority], next(self._arrivals), granted, batch))
        self._grant()
        try:
            await asyncio.wait_for(asyncio.shield(granted), max(0.0, deadline - t0))
        except (TimeoutError, asyncio.CancelledError) as exc:
            if granted.done() and not granted.cancelled():  # granted as it gave up: hand the slot on
                self._release(batch)
            else:
                granted.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise AsrError(
                errors.TIMEOUT, f"timed out after {time.monotonic() - t0:.1f} s waiting in the queue of {self.model}"
            ) from None
        try:
            yield time.monotonic() - t0
        finally:
            self._release(batch)

    def _release(self, batch: bool) -> None:
        self.running -= 1
        self.running_batch -= batch
        self._grant()
