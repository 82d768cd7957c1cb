"""Bounded waiting for a model: at most `max_parallel` requests forwarded at once, at most `max_queue`
waiting behind them; overflow is refused at once (429) and a wait past the deadline ends in 504."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from schemas import errors
from schemas.errors import AsrError, ErrorCode


class ModelQueue:
    def __init__(self, model: str, max_parallel: int, max_queue: int) -> None:
        self.model = model
        self.max_parallel, self.max_queue = max_parallel, max_queue
        self._slots = asyncio.Semaphore(max_parallel)
        self.waiting = 0
        self.running = 0

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[float]:
        """Hold one of the model's slots; yields the seconds spent waiting for it."""
        t0 = time.monotonic()
        if self._slots.locked() and self.waiting >= self.max_queue:
            raise AsrError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                f"{self.model} is overloaded: {self.running} request(s) running and {self.waiting} waiting "
                f"(max_queue = {self.max_queue})",
                retry_after=1.0,
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, deadline - t0))
        except TimeoutError:
            raise AsrError(
                errors.TIMEOUT, f"timed out after {time.monotonic() - t0:.1f} s waiting in the queue of {self.model}"
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield time.monotonic() - t0
        finally:
            self.running -= 1
            self._slots.release()
