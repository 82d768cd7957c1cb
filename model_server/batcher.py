"""Dynamic batching across requests: short transcriptions that arrive together are decoded together.

Requests of at most one 30-s window whose decoding options match wait at most `window_s` for company (less when
no other request is on its way into the server: a lone request is not held up at all) and go to the engine as one
batch of up to `max_batch` — one encoder pass and one beam search for all of them. Each waiting request gets its
own result back; one that goes away (a client gone) does not stop the others. A runner thread per CTranslate2
worker takes the next batch while the others decode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, cast, runtime_checkable

import numpy as np

from model_server.engines.base import Decoding
from model_server.gpu_memory import out_of_memory
from schemas.model_server import TranscribeOptions

log = logging.getLogger("model_server")
CROWD_MEMORY_S = 1.0  # how long several requests at once make the server expect more
SHRUNK_FOR_S = 60.0  # how long batches stay at half the size that ran out of GPU memory

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    key: Hashable
    item: Item
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """`decode(items)` runs one batch (items of one key) and returns one result per item, in order."""

    def __init__(
        self,
        decode: Callable[[Sequence[Item]], Sequence[Result]],
        *,
        max_batch: int,
        window_s: float,
        runners: int = 1,
        name: str = "batcher",
        limit: Callable[[Hashable, int], int] | None = None,
    ) -> None:
        self._decode = decode
        self.max_batch = max(1, max_batch)
        self._limit = limit  # (key, max_batch) -> the batch that fits now: on a GPU, its free memory decides
        self.window_s = max(0.0, window_s)
        self._waiting: deque[_Pending[Item, Result]] = deque()
        self._changed = threading.Condition()
        self._gathering = threading.Lock()  # one runner gathers at a time: two would wait for the same request
        self._inside = 0  # requests the server is working on (`inside`)
        self._decoding = 0  # requests in the batches under way
        self._crowded_at = -CROWD_MEMORY_S  # when two requests or more were last inside at once
        self.batches = 0
        self.batched = 0
        for n in range(max(1, runners)):
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True).start()

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Held by a request for as long as the server works on it. Requests inside but not yet waiting for a
        batch are company on its way; several inside at once mark a crowded server, where a batch waits its window
        for more even when none is on its way yet (the clients of the last batch come back together)."""
        self._count(1)
        try:
            yield
        finally:
            self._count(-1)

    def submit(self, key: Hashable, item: Item) -> Result:
        """Block until the batch holding `item` is decoded; its result, or the batch's exception."""
        pending: _Pending[Item, Result] = _Pending(key, item, time.monotonic())
        with self._changed:
            self._waiting.append(pending)
            self._changed.notify_all()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return cast(Result, pending.result)  # set with `done`, and may itself be None

    def _count(self, delta: int) -> None:
        with self._changed:
            self._inside += delta
            if self._inside + max(0, -delta) >= 2:
                self._crowded_at = time.monotonic()
            self._changed.notify_all()

    def _next_batch(self) -> list[_Pending[Item, Result]]:
        """The oldest waiting request and those of its key that arrive within its window, up to max_batch."""
        with self._gathering, self._changed:
            while not self._waiting:
                self._changed.wait()
            first = self._waiting[0]
            deadline = first.arrived + self.window_s
            size = self._size(first.key)
            while True:
                same = [p for p in self._waiting if p.key == first.key][:size]
                left = deadline - time.monotonic()
                if len(same) >= size or left <= 0 or not self._expecting():
                    break
                self._changed.wait(left)
            for pending in same:
                self._waiting.remove(pending)
            self._decoding += len(same)
            return same

    def _size(self, key: Hashable) -> int:
        """The batch's size now: max_batch, or less where `limit` says (a limit that fails is not fatal to the
        runner: every waiting request would hang with it)."""
        if self._limit is None:
            return self.max_batch
        try:
            return max(1, min(self.max_batch, self._limit(key, self.max_batch)))
        except Exception:
            log.exception("the batch size limit failed: batches of up to %d", self.max_batch)
            return self.max_batch

    def _expecting(self) -> bool:
        """Whether company is likely within the window: a request inside that is not waiting yet (its audio
        still being decoded), or a server crowded within the last second. Otherwise a lone request would only be
        delayed."""
        on_its_way = self._inside > len(self._waiting) + self._decoding
        return on_its_way or time.monotonic() - self._crowded_at < CROWD_MEMORY_S

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                results = self._decode([p.item for p in batch])
                for pending, result in zip(batch, results, strict=True):
                    pending.result = result
            except BaseException as exc:  # every waiter hears of it; the runner goes on with the next batch
                log.exception("batched decoding failed", extra={"batch": len(batch)})
                for pending in batch:
                    pending.error = exc
            with self._changed:
                self._decoding -= len(batch)
                self.batches += 1
                self.batched += len(batch)
            for pending in batch:
                pending.done.set()


class BatchingEngine:
    """An engine whose short decodes of matching options share batches (`Batcher`); the rest go to it directly.
    What the server holds when `max_batch` > 1 and the engine can batch (`batch_key`, `decode_batch`)."""

    def __init__(self, engine: BatchCapable, *, max_batch: int, window_s: float, runners: int) -> None:
        self._engine = engine
        self.device, self.compute_type = engine.device, engine.compute_type
        self._shrunk: tuple[int, float] = (0, 0.0)  # after an out-of-memory error: (at most this many, until when)
        self.batcher: Batcher[tuple[np.ndarray, TranscribeOptions], Decoding | None] = Batcher(
            self._decode_batch, max_batch=max_batch, window_s=window_s, runners=runners, limit=self._limit
        )

    def inside(self) -> AbstractContextManager[None]:
        return self.batcher.inside()

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        key = self._engine.batch_key(audio, options)
        if key is not None:
            decoded = self.batcher.submit(key, (audio, options))
            if decoded is not None:
                return decoded
            # The sequential decode would have retried at a higher temperature: it does, for this one alone.
        return self._engine.decode(audio, options)

    def _limit(self, key: Hashable, wanted: int) -> int:
        """The engine's limit (on a GPU, what fits in its free memory now), and for a while after a batch ran out of
        memory anyway, half that batch: the estimate was low, and every batch would otherwise fail first."""
        size = self._engine.batch_limit(key, wanted)
        at_most, until = self._shrunk
        return min(size, at_most) if time.monotonic() < until else size

    def _decode_batch(
        self, items: Sequence[tuple[np.ndarray, TranscribeOptions]], *, first: bool = True
    ) -> list[Decoding | None]:
        if len(items) == 1:
            return [None]  # alone after all: decoded the sequential way, exactly as without batching
        try:
            return self._engine.decode_batch([audio for audio, _ in items], items[0][1])
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            # The device had less room than the estimate said (another process grew meanwhile): each half again,
            # down to one request alone, which only then fails if it must.
            half = len(items) // 2
            if first:  # the batch as gathered sets the next ones' size, not the halves that failed in turn
                self._shrunk = (half, time.monotonic() + SHRUNK_FOR_S)
                log.warning(
                    "a batch of %d ran out of GPU memory: decoding it in halves, batches of at most %d for %g s",
                    len(items),
                    half,
                    SHRUNK_FOR_S,
                )
            return self._decode_batch(items[:half], first=False) + self._decode_batch(items[half:], first=False)


@runtime_checkable
class BatchCapable(Protocol):
    device: str
    compute_type: str

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding: ...

    def batch_key(self, audio: np.ndarray, options: TranscribeOptions) -> Hashable | None: ...

    def decode_batch(self, audios: Sequence[np.ndarray], options: TranscribeOptions) -> list[Decoding | None]: ...

    def batch_limit(self, key: Hashable, wanted: int) -> int: ...
