"""Runs the gateway under uvicorn with the limits a server facing untrusted clients needs: a client that never
finishes its request headers is cut off (uvicorn waits for them for ever), and connections beyond
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


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    class HeaderTimeout(H11Protocol):
        """Closes a connection whose request head has been arriving for longer than `seconds` (slowloris)."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()  # a head has begun (or is awaited) and is not complete
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _expire(self) -> None:
            self._head_timer = None
            # After a WebSocket upgrade the transport belongs to another protocol.
            if self.transport.get_protocol() is self and self.conn.their_state is h11.IDLE:
                self.transport.close()

    return HeaderTimeout


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
        http=header_timeout_protocol(gw.header_timeout),
        limit_concurrency=gw.max_connections,
    )
