"""Runs the gateway under uvicorn with the limits a server facing untrusted clients needs: a client that never
finishes its request headers, or trickles its body, is cut off (uvicorn waits for ever), and connections beyond
`gateway.max_connections` get a 503 instead of exhausting the process."""

from __future__ import annotations

import asyncio
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from framework.config import Config
from gateway.app import create_app
from gateway.auth import check_exposure

log = logging.getLogger("asrpro.gateway")


def slow_client_protocol(seconds: float, min_rate: float) -> type[H11Protocol]:
    class SlowClientGuard(H11Protocol):
        """Closes a connection whose request head has been arriving for longer than `seconds` (slowloris), or
        whose body arrives slower than `min_rate` bytes/s over any `seconds` (a trickled upload that would hold
        a connection slot for ever). Not while the server itself has stopped reading."""

        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None
        _body_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.IDLE:
                self._arm_head()  # a head has begun (or is awaited) and is not complete
                return
            self._disarm()
            if state is h11.SEND_BODY:
                self._body_bytes += len(data)
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(seconds, self._check_body, self._body_bytes)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._body_timer is not None:
                self._body_timer.cancel()
            super().connection_lost(exc)

        def _arm_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(seconds, self._expire_head)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _mine(self) -> bool:
            return self.transport.get_protocol() is self  # after a WebSocket upgrade it belongs to another

        def _expire_head(self) -> None:
            self._head_timer = None
            if self._mine() and self.conn.their_state is h11.IDLE:
                self.transport.close()

        def _check_body(self, bytes_then: int) -> None:
            self._body_timer = None
            if not self._mine() or self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused or self._body_bytes - bytes_then >= min_rate * seconds:
                self._body_timer = self.loop.call_later(seconds, self._check_body, self._body_bytes)
                return
            log.warning("closing a connection whose request body arrives slower than %g bytes/s", min_rate)
            self.transport.close()

    return SlowClientGuard


def serve(config: Config) -> None:
    access = check_exposure(config)  # raises ConfigError for an open gateway on a network address
    log.info("gateway on %s:%d; %s", config.gateway.host, config.gateway.port, access)
    gw = config.gateway
    uvicorn.run(
        create_app(config),
        host=gw.host,
        port=gw.port,
        log_level="warning",
        log_config=None,
        http=slow_client_protocol(gw.header_timeout, gw.min_upload_rate),
        limit_concurrency=gw.max_connections,
    )
