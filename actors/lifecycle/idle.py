"""Idle clocks: a server is held busy by the requests the proxies report (their `transcribing` and `transcribed`
events), its activity is recorded for a lifecycle actor that restarts, and it is stopped once idle past its timeout
(the last request's keep_alive, else the model's, else lifecycle.inactivity_timeout)."""

from __future__ import annotations

import asyncio
import time

from actors.lifecycle.server import Server
from actors.lifecycle.starter import Starter
from framework.actor import Actor
from schemas.durations import NEVER

# Activity is recorded (for idle clocks after a restart) at most this often per server: a burst of requests
# costs one KV write, not one each.
RECORD_ACTIVITY_EVERY_S = 2.0


class IdleClocks:
    def __init__(self, actor: Actor, starter: Starter) -> None:
        self.actor, self.starter = actor, starter
        self._recording: set[str] = set()  # models with an activity record pending

    def began(self, server: Server, request_id: str, keep_alive: float | None) -> None:
        server.begin(request_id, keep_alive)
        self._record_soon(server)  # a long request is recorded busy: a restarted lifecycle actor must not stop it

    def ended(self, server: Server, request_id: str) -> None:
        # The idle clock runs from the end of the last request, not from its start.
        server.inflight.pop(request_id, None)
        server.last_activity = time.time()
        if not server.inflight and self.starter.idle_timeout(server) == 0:
            self.actor.spawn(self.starter.stop_if_idle(server, "keep_alive"))
        else:
            self._record_soon(server)

    def _record_soon(self, server: Server) -> None:
        if server.model_id not in self._recording:
            self._recording.add(server.model_id)
            self.actor.spawn(self._record_activity(server))

    async def _record_activity(self, server: Server) -> None:
        try:
            await asyncio.sleep(RECORD_ACTIVITY_EVERY_S)
            if self.starter.servers.get(server.model_id) is server and not server.stopping:
                await self.starter.save(server)
        finally:
            self._recording.discard(server.model_id)

    async def reap(self, now: float | None = None) -> None:
        """Stop the servers idle past their timeout; forget requests whose proxy never reported back."""
        now = time.time() if now is None else now
        stale_after = self.actor.config.gateway.request_timeout + 30
        for server in list(self.starter.servers.values()):
            for request_id, since in list(server.inflight.items()):
                if now - since > stale_after:
                    server.inflight.pop(request_id, None)
            if server.state != "ready" or server.inflight:
                continue
            timeout = self.starter.idle_timeout(server)
            if timeout != NEVER and now - server.last_activity >= timeout:
                await self.starter.stop_if_idle(server, "idle" if server.keep_alive is None else "keep_alive")
