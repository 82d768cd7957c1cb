"""Recovery actor: restarts crashed and unhealthy model servers with back-off, and keeps a circuit
breaker per model so that a model that keeps failing is not started again and again.

Breaker states travel as `breaker` events (closed → open → half_open → closed); the lifecycle actor
refuses to start a model whose breaker is open, and both actors rebuild the states from the stream
ASR_EVENTS when they restart.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from framework.actor import Actor, endpoint, on_event
from framework.config import Config, start_budget
from schemas import endpoints
from schemas.errors import AsrError, ErrorCode
from schemas.events import (
    BreakerChanged,
    BreakerStateName,
    RestartScheduled,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerUnhealthy,
)
from schemas.lifecycle import BreakerClosed, CloseBreaker, EnsureServer, ServerStatus


@dataclass
class ModelHealth:
    failures: deque[float] = field(default_factory=deque)  # when recent failures happened
    attempts: int = 0  # restarts since the model was last stable
    ready_since: float | None = None
    breaker: BreakerStateName = "closed"
    cooldown: float = 0.0
    retry_at: float | None = None
    restarting: bool = False


class Recovery(Actor):
    """Back-off restarts and per-model circuit breakers, driven by lifecycle events."""

    name = "recovery"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config.recovery
        self.models: dict[str, ModelHealth] = {}
        self.born = time.time()

    def health(self, model: str) -> ModelHealth:
        return self.models.setdefault(model, ModelHealth(cooldown=self.cfg.breaker_cooldown))

    def delay(self, attempt: int) -> float:
        """Seconds before restart number `attempt` (1-based); the last back-off value repeats."""
        schedule = self.cfg.backoff or [0.0]
        return schedule[min(attempt, len(schedule)) - 1]

    @on_event(BreakerChanged, replay="last")
    async def on_breaker(self, event: BreakerChanged) -> None:
        """Breakers left open by a previous recovery actor stay open, and their probes are scheduled again."""
        h = self.health(event.model)
        if event.state == "closed" and event.source != self.instance and h.breaker != "closed":
            # Closed by another node's recovery actor (its probe, or an operator it served): so here too.
            h.breaker, h.retry_at, h.attempts = "closed", None, 0
            h.failures.clear()
            return
        if event.state == "closed" or event.at >= self.born or h.breaker != "closed":
            return  # live announcements are this (or another) recovery actor's own: it already acts on them
        h.breaker, h.retry_at = "open", event.retry_at or time.time()
        self.spawn(self._probe(event.model))

    def _elsewhere(self, event: ServerReady | ServerCrashed | ServerUnhealthy | ServerFailed) -> bool:
        """Each node's recovery actor restarts that node's servers: two never restart the same one, and none
        tries on a node that is gone."""
        return bool(event.node) and event.node != self.node_name

    @on_event(ServerReady)
    async def on_ready(self, event: ServerReady) -> None:
        if not self._elsewhere(event):
            self.health(event.model).ready_since = event.at

    @on_event(ServerCrashed, ServerUnhealthy, ServerFailed)
    async def on_failure(self, event: ServerCrashed | ServerUnhealthy | ServerFailed) -> None:
        # A server that did not come up counts; no GPU room or an open breaker is not the model's fault.
        if (isinstance(event, ServerFailed) and event.cause != "start") or self._elsewhere(event):
            return
        h = self.health(event.model)
        now = time.time()
        if h.ready_since is not None and now - h.ready_since >= self.cfg.stable_after:
            h.attempts = 0  # it had been stable: this is a new incident, not the next step of the last one
        h.ready_since = None
        h.failures.append(now)
        while h.failures and now - h.failures[0] > self.cfg.breaker_window:
            h.failures.popleft()
        if h.breaker != "closed":
            return  # the probe decides
        if len(h.failures) >= self.cfg.breaker_failures:
            await self._open(
                event.model, f"{len(h.failures)} failures in {self.cfg.breaker_window:g} s, last: {event.reason}"
            )
            return
        if isinstance(event, ServerCrashed | ServerUnhealthy) and self.cfg.restart_crashed and not h.restarting:
            h.attempts += 1
            h.restarting = True
            self.spawn(self._restart(event.model, h.attempts, event.reason))

    async def _restart(self, model: str, attempt: int, reason: str) -> None:
        h = self.health(model)
        delay = self.delay(attempt)
        await self.publish(RestartScheduled(model=model, attempt=attempt, delay_s=delay, reason=reason))
        self.log.info("restarting %s in %.1f s (attempt %d) after: %s", model, delay, attempt, reason)
        try:
            await asyncio.sleep(delay)
            if h.breaker != "closed":
                return
            await self._ensure(model, probe=False)
        except AsrError as exc:
            self.log.warning("restart of %s failed: %s", model, exc.message)
        finally:
            h.restarting = False

    async def _ensure(self, model: str, *, probe: bool) -> ServerStatus:
        budget = start_budget(self.config)
        return await self.request(
            endpoints.LIFECYCLE_ENSURE.on(self.node_name),
            EnsureServer(model=model, restart=True, probe=probe, timeout=budget),
            timeout=budget + 5,
        )

    async def _open(self, model: str, reason: str) -> None:
        h = self.health(model)
        h.breaker = "open"
        h.retry_at = time.time() + h.cooldown
        self.log.warning("circuit breaker of %s open for %.0f s: %s", model, h.cooldown, reason)
        await self.publish(
            BreakerChanged(model=model, state="open", reason=reason, retry_at=h.retry_at, failures=len(h.failures))
        )
        self.spawn(self._probe(model))

    @endpoint(endpoints.RECOVERY_CLOSE_BREAKER)
    async def close_breaker(self, msg: CloseBreaker) -> BreakerClosed:
        """An operator's word: the model may start again, its failures forgotten; the event says who."""
        h = self.health(msg.model)
        was = h.breaker
        h.breaker, h.retry_at, h.attempts = "closed", None, 0
        h.failures.clear()
        h.cooldown = self.cfg.breaker_cooldown
        self.log.warning("circuit breaker of %s closed by %s (was %s)", msg.model, msg.by, was)
        await self.publish(BreakerChanged(model=msg.model, state="closed", reason=f"closed by {msg.by}"))
        return BreakerClosed(model=msg.model, was=was)

    async def _probe(self, model: str) -> None:
        """After the cooldown, one start attempt: success closes the breaker, failure reopens it for longer."""
        h = self.health(model)
        await asyncio.sleep(max(0.0, (h.retry_at or 0.0) - time.time()))
        if h.breaker != "open":
            return  # an operator closed it meanwhile
        h.breaker = "half_open"
        await self.publish(BreakerChanged(model=model, state="half_open", reason="probing", failures=len(h.failures)))
        try:
            await self._ensure(model, probe=True)
        except AsrError as exc:
            # No GPU room (or a GPU this runtime cannot use) says nothing about the model: try again as soon.
            if exc.kind not in (ErrorCode.NO_ROOM, ErrorCode.GPU_UNUSABLE):
                h.cooldown = min(h.cooldown * 2, self.cfg.breaker_max_cooldown)
            await self._open(model, f"probe failed: {exc.message}")
            return
        h.breaker, h.retry_at, h.attempts = "closed", None, 0
        h.failures.clear()
        h.cooldown = self.cfg.breaker_cooldown
        self.log.info("circuit breaker of %s closed: the probe started it", model)
        await self.publish(BreakerChanged(model=model, state="closed", reason="probe succeeded"))
