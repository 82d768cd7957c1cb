"""The gateway's NATS connection; it keeps trying in the background when the bus is down at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, TypeVar

from fastapi import Request
from nats.aio.client import Client

from framework import bus
from framework.config import Config
from schemas import errors
from schemas.errors import AsrError
from schemas.registry import ModelInfo, ModelList

log = logging.getLogger("asrpro.gateway")
T = TypeVar("T")


class Catalogue:
    """The registry's last answer to asr.registry.list, kept to resolve model names while it restarts."""

    MAX_AGE_S = 30.0

    def __init__(self) -> None:
        self.listing: ModelList | None = None
        self.at = 0.0

    def stale(self) -> bool:
        return time.monotonic() - self.at > self.MAX_AGE_S

    def update(self, listing: ModelList) -> None:
        self.listing, self.at = listing, time.monotonic()

    def lookup(self, name: str) -> ModelInfo | None:
        if self.listing is None:
            return None
        if name in ("whisper-1", "default"):
            name = self.listing.default_model
        for model in self.listing.models:
            if name == model.id or name in model.aliases:
                return model
        return None


class GatewayBus:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalogue = Catalogue()
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
