"""Recovery actor: restarts a model server that crashed, with back-off between attempts."""

from __future__ import annotations

import asyncio
import time

from actors.base import Actor, on_event
from actors.config import Config, start_budget
from schemas import subjects
from schemas.errors import AsrError
from schemas.events import Event, ServerCrashed, ServerReady
from schemas.lifecycle import EnsureServer, ServerStatus

# A server that stayed up this long is healthy again: its next crash starts the back-off anew.
STABLE_AFTER_S = 300.0


class Recovery(Actor):
    """Listens for crashed events and asks lifecycle to bring the model back."""

    name = "recovery"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.attempts: dict[str, int] = {}
        self.last_ready: dict[str, float] = {}
        self.pending: set[str] = set()

    def delay(self, model: str) -> float:
        schedule = self.config.recovery.backoff or [0.0]
        return schedule[min(self.attempts.get(model, 0), len(schedule) - 1)]

    @on_event(subjects.EVENTS_PREFIX + "ready.>")
    async def on_ready(self, event: Event) -> None:
        if isinstance(event, ServerReady):
            self.last_ready[event.model] = event.at

    @on_event(subjects.EVENTS_PREFIX + "crashed.>")
    async def on_crash(self, event: Event) -> None:
        if not isinstance(event, ServerCrashed) or not self.config.recovery.restart_crashed:
            return
        if time.time() - self.last_ready.get(event.model, 0.0) > STABLE_AFTER_S:
            self.attempts[event.model] = 0
        if event.model in self.pending:
            return
        self.pending.add(event.model)
        self.spawn(self.restart(event.model, self.delay(event.model), event.reason))

    async def restart(self, model: str, delay: float, reason: str) -> None:
        self.attempts[model] = self.attempts.get(model, 0) + 1
        self.log.info("restarting %s in %.1f s after: %s", model, delay, reason, extra={"model": model})
        try:
            await asyncio.sleep(delay)
            status = await self.request(
                subjects.LIFECYCLE_ENSURE,
                EnsureServer(model=model, restart=True),
                ServerStatus,
                timeout=start_budget(self.config),
            )
            self.log.info("restarted %s", model, extra={"model": model, "url": status.url, "pid": status.pid})
        except AsrError as exc:
            self.log.warning("restart of %s failed: %s", model, exc.message, extra={"model": model})
        finally:
            self.pending.discard(model)
