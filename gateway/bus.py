"""The gateway's NATS connection; it keeps trying in the background when the bus is down at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar

from fastapi import Request
from nats.aio.client import Client

from actors import bus
from actors.config import Config
from schemas import errors
from schemas.errors import AsrError

log = logging.getLogger("asrpro.gateway")
T = TypeVar("T")


class GatewayBus:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.nc: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS not reachable at start (%s): retrying in the background", exc)
            self._task = asyncio.create_task(self._keep_trying())

    async def _connect(self) -> None:
        cfg = self.config.nats
        self.nc = await bus.connect(
            cfg.url, name="asrpro-gateway", user=cfg.user, password=cfg.password, connect_timeout=cfg.connect_timeout
        )

    async def _keep_trying(self) -> None:
        while self.nc is None:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self._connect()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def client(self) -> Client:
        """The connection, or 503 at once while the bus is down (never a hang)."""
        if self.nc is None or not self.nc.is_connected:
            raise AsrError(errors.UNAVAILABLE, "message bus (NATS) is not connected")
        return self.nc

    async def request(self, subject: str, message: Any, reply_type: type[T], timeout: float = 5.0) -> T:
        return await bus.request(self.client, subject, message, reply_type, timeout=timeout)


def get_bus(request: Request) -> GatewayBus:
    return request.app.state.bus  # type: ignore[no-any-return]


def get_config(request: Request) -> Config:
    return request.app.state.config  # type: ignore[no-any-return]
