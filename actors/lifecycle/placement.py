"""Placement and admission: the lifecycle actor's scheduling decisions. The policies are plain functions of
its state; `Placement` applies them (GPU memory, container slots, eviction, CPU fallback, waiting)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from schemas import errors
from schemas.durations import NEVER
from schemas.errors import AsrError, ErrorCode
from schemas.events import StopReason
from schemas.gpu import Allocation
from schemas.lifecycle import ServerState
from schemas.registry import ModelInfo

if TYPE_CHECKING:
    from actors.lifecycle.server import Fleet, Server

log = logging.getLogger("asrpro.lifecycle")
RETRY_AFTER_S = 5.0


class Running(Protocol):
    """What the policies need to know about a running model server."""

    @property
    def model_id(self) -> str: ...

    @property
    def state(self) -> ServerState: ...

    last_activity: float
    inflight: dict[str, float]


S = TypeVar("S", bound=Running)


def idle_timeout(keep_alive: float | None, model_timeout: float | None, default: float) -> float:
    """Seconds of idleness before a stop (NEVER = -1: never). The last request's keep_alive wins, then the
    model's own inactivity_timeout, then lifecycle.inactivity_timeout."""
    for value in (keep_alive, model_timeout):
        if value is not None:
            return NEVER if value < 0 else value
    return default


def expires_at(last_activity: float, busy: bool, timeout: float) -> float | None:
    if busy or timeout == NEVER:
        return None
    return last_activity + timeout


def eviction_order(servers: Iterable[S], exclude: str, locked: Sequence[str] = ()) -> list[S]:
    """Servers that may be stopped to make room, least recently used first. One serving a request is never
    among them, nor one whose lock is held (being started, checked or stopped)."""
    idle = [s for s in servers if s.model_id != exclude and s.state == "ready" and not s.inflight]
    return sorted((s for s in idle if s.model_id not in locked), key=lambda s: s.last_activity)


class Placement:
    """Where a model server may run: GPU memory from the gpu actor (and a container slot), evicting idle
    servers least recently used first, then the CPU when the model allows it, else waiting for room until
    the caller's deadline."""

    def __init__(
        self,
        fleet: Fleet,
        max_containers: int,
        allocate: Callable[[ModelInfo], Awaitable[Allocation]],
        retire: Callable[[Server, StopReason], Awaitable[bool]],
    ) -> None:
        self.fleet = fleet
        self.max_containers = max_containers
        self.allocate = allocate
        self.retire = retire  # stops an idle server; False when it turned out busy

    async def admit(self, model: ModelInfo, deadline: float) -> Allocation:
        while True:
            limit = self.max_containers
            if limit and len(self.fleet.servers) >= limit:
                if await self.evict_one(model.id, holding_gpu=False):
                    continue
                await self.wait_for_room(
                    model, deadline, f"max_concurrent_containers = {limit} servers run and all are busy"
                )
                continue
            try:
                return await self.allocate(model)
            except AsrError as exc:
                if exc.code != errors.NO_ROOM:
                    # Without the gpu actor the safe choice is the CPU: it can never overcommit GPU memory.
                    log.warning("gpu allocation for %s failed (%s): using the CPU", model.id, exc.message)
                    return Allocation(model=model.id, device="cpu")
                if await self.evict_one(model.id, holding_gpu=True):
                    continue
                if model.cpu_fallback:
                    log.info("%s on the CPU: %s", model.id, exc.message, extra={"model": model.id})
                    return Allocation(model=model.id, device="cpu")
                await self.wait_for_room(model, deadline, exc.message)

    async def evict_one(self, for_model: str, *, holding_gpu: bool) -> bool:
        """Stop the least recently used idle server; for GPU room only one that holds GPU memory."""
        servers = [s for s in self.fleet.servers.values() if s.allocation.memory_mb > 0 or not holding_gpu]
        for victim in eviction_order(servers, for_model, self.fleet.locked()):
            async with self.fleet.locks[victim.model_id]:
                if await self.retire(victim, "evicted"):
                    log.info("evicted %s to make room for %s", victim.model_id, for_model)
                    return True
        return False

    async def wait_for_room(self, model: ModelInfo, deadline: float, why: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AsrError(
                errors.UNAVAILABLE,
                f"no room for {model.id}: {why}; no idle server to evict and cpu_fallback is off",
                retry_after=RETRY_AFTER_S,
                kind=ErrorCode.NO_ROOM,
            )
        self.fleet.capacity_freed.clear()
        # Other lifecycle actors free memory too, without telling us: look again at least every second.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.fleet.capacity_freed.wait(), min(remaining, 1.0))
