"""This host's node: its name, claimed in ASR_NODES at start and kept alive by a heartbeat (the bucket's TTL ends
the record of a node that stops beating; a clean stop deletes it). A name alive on another host is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError

from framework.config import Config, node_name
from framework.transport import KeyValueStore
from schemas.gpu import GpuDevice
from schemas.kv import NODE
from schemas.nodes import NodeRecord

log = logging.getLogger("asrpro.lifecycle")


class NodeNameTaken(RuntimeError):
    pass


class NodeBeacon:
    def __init__(
        self,
        config: Config,
        instance: str,
        runtime: str,
        servers: Callable[[], list[str]],
        devices: Callable[[], Awaitable[list[GpuDevice]]],
        installed: Callable[[], list[str]] = list,
    ) -> None:
        self.name = node_name(config)
        self.host = socket.gethostname()
        self.cfg = config.node
        self.max_containers = config.lifecycle.max_concurrent_containers
        self.instance, self.runtime = instance, runtime
        self.servers, self.devices, self.installed = servers, devices, installed
        self.started_at = time.time()
        self.kv: KeyValueStore | None = None

    async def claim(self, kv: KeyValueStore) -> None:
        """Take the node's name, unless a node of that name beats on another host (then it is not ours to delete)."""
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(NODE.key(self.name))
            if entry.value:
                other = NODE.decode(entry.value)
                age = time.time() - other.heartbeat_at
                if other.host != self.host and age < self.cfg.dead_after:
                    raise NodeNameTaken(
                        f"node name {self.name!r} is alive on host {other.host} (heartbeat {age:.0f} s ago): "
                        "give this host another node.name (ASRPRO_NODE__NAME)"
                    )
        self.kv = kv
        await self.beat()

    async def beat(self) -> None:
        assert self.kv is not None
        record = NodeRecord(
            name=self.name,
            host=self.host,
            instance=self.instance,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            runtime=self.runtime,
            devices=await self.devices(),
            servers=sorted(self.servers()),
            max_containers=self.max_containers,
            installed=self.installed(),
        )
        await self.kv.put(NODE.key(self.name), NODE.encode(record))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            try:
                await self.beat()
            except Exception as exc:  # the bus is down for a moment: the next beat tries again
                log.warning("node heartbeat failed: %s", exc)

    async def leave(self) -> None:
        if self.kv is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(NODE.key(self.name))
