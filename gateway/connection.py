"""The gateway's NATS connection (it keeps trying in the background when the bus is down at start) and its
watched copy of the model catalogue, from which it resolves every model name once, at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from nats.aio.client import Client

from framework import bus
from framework.catalogue import Catalogue
from framework.config import Config
from framework.kv_view import KvView, heartbeats
from framework.transport import NatsTransport
from schemas import errors
from schemas.endpoints import Rpc
from schemas.errors import AsrError
from schemas.nodes import NodeRecord

log = logging.getLogger("asrpro.gateway")
Req = TypeVar("Req")
Rep = TypeVar("Rep")


class GatewayConnection:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.catalogue = Catalogue()
        self.nodes: KvView[NodeRecord] = heartbeats()
        self.nc: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS not reachable at start (%s): retrying in the background", exc)
            self._task = asyncio.create_task(self._keep_trying())

    async def _connect(self) -> None:
        self.nc = await bus.connect_as_configured(self.config.nats, "asrpro-gateway")
        # Not waiting for the registry here: until the catalogue arrives, transcriptions get 503 naming it.
        transport = NatsTransport(self.nc)
        await self.catalogue.follow(transport, wait=2.0)
        await self.nodes.follow(transport, wait=2.0)

    async def _keep_trying(self) -> None:
        while self.nc is None:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self._connect()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.catalogue.stop()
        await self.nodes.stop()
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

    async def request(self, rpc: Rpc[Req, Rep], message: Req, timeout: float = 5.0) -> Rep:
        return await bus.request(self.client, rpc, message, timeout=timeout)


def get_connection(request: Request) -> GatewayConnection:
    connection: GatewayConnection = request.app.state.connection
    return connection


def get_config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


# What a route declares to get them (FastAPI dependencies).
Connection = Annotated[GatewayConnection, Depends(get_connection)]
Settings = Annotated[Config, Depends(get_config)]
