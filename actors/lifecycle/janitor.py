"""What a lost node leaves behind: the records of its servers (proxies would route to them) and its GPU allocation
table. Any live node's lifecycle actor clears them once the node's heartbeat has expired (its lease, the ASR_NODES
TTL); each delete is compare-and-set on the revision it read, so of several janitors exactly one announces each
server gone, and a node that came back meanwhile (a fresh heartbeat) keeps what it wrote."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from schemas.lifecycle import ServerStatus

log = logging.getLogger("asrpro.lifecycle")
_decode = msgspec.msgpack.Decoder(ServerStatus).decode


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


class NodeJanitor:
    def __init__(
        self,
        me: str,
        nodes: KeyValue,
        servers: KeyValue,
        gpu: KeyValue,
        announce: Callable[[ServerStatus], Awaitable[None]],
    ) -> None:
        self.me, self.nodes, self.servers, self.gpu = me, nodes, servers, gpu
        self.announce = announce  # a lost server, once: a `stopped` event with reason node_lost

    async def sweep(self) -> list[str]:
        """Clear what nodes without a heartbeat left; the servers announced gone, as `<node>.<model>`."""
        alive = set(await _keys(self.nodes)) | {self.me}
        gone: list[str] = []
        for key in await _keys(self.servers):
            node, _, _model = key.partition(".")
            if node in alive:
                continue
            with contextlib.suppress(Exception):
                entry = await self.servers.get(key)
                status = _decode(entry.value) if entry.value else None
                if await self._delete(self.servers, key, entry.revision) and status is not None:
                    status.node = status.node or node
                    gone.append(key)
                    log.warning("node %s is lost: its server of %s is gone", node, status.model)
                    await self.announce(status)
        for key in await _keys(self.gpu):
            if key in alive or "." in key:
                continue
            with contextlib.suppress(Exception):
                entry = await self.gpu.get(key)
                if await self._delete(self.gpu, key, entry.revision):
                    log.warning("node %s is lost: its GPU allocations are released", key)
        return gone

    @staticmethod
    async def _delete(kv: KeyValue, key: str, revision: int | None) -> bool:
        try:
            await kv.delete(key, last=revision)
        except KeyWrongLastSequenceError:
            return False  # changed since we read it: its node is back, or another janitor got there first
        return True
