"""What a lost node leaves behind: the records of its servers (proxies would route to them) and its GPU allocation
table. Any live node's lifecycle actor clears them once it has heard no heartbeat of the node for node.dead_after
(its lease); each delete is compare-and-set on the revision it read, so of several janitors exactly one announces
each server gone, and a node that came back meanwhile keeps what it wrote.

Heartbeats are followed with a watch, not listed: a listing of a replicated bucket can come back short while a
replica catches up, and a short listing must never look like a dead node. A node first seen by its records gets
the full lease from then."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

from framework.kv_view import KvView
from framework.transport import KeyValueStore
from schemas.kv import GPU_TABLE, INSTALLED, NODE, SERVER
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord

log = logging.getLogger("asrpro.lifecycle")


async def _keys(kv: KeyValueStore) -> list[str]:
    try:
        return list(await kv.keys())
    except NoKeysError:
        return []


class NodeJanitor:
    def __init__(
        self,
        me: str,
        dead_after: float,
        heartbeats: KvView[NodeRecord],
        nodes: KeyValueStore,
        servers: KeyValueStore,
        gpu: KeyValueStore,
        settings: KeyValueStore,
        announce: Callable[[ServerStatus], Awaitable[None]],
    ) -> None:
        self.me, self.dead_after, self.heartbeats, self.nodes = me, dead_after, heartbeats, nodes
        self.servers, self.gpu, self.settings = servers, gpu, settings
        self.announce = announce  # a lost server, once: a `stopped` event with reason node_lost
        self.heard: dict[str, float] = {}  # node -> when it last beat (or when we first saw a trace of it)

    async def lost(self, node: str, now: float) -> bool:
        """Silent for longer than its lease in our watch, and its record, read now, says so too (or is gone)."""
        for record in self.heartbeats.values.values():
            self.heard[record.name] = max(self.heard.get(record.name, 0.0), record.heartbeat_at)
        self.heard.setdefault(node, now)
        if node == self.me or now - self.heard[node] <= self.dead_after:
            return False
        try:
            entry = await self.nodes.get(NODE.key(node))
        except KeyNotFoundError:
            return True
        if not entry.value:
            return True
        beat = NODE.decode(entry.value).heartbeat_at
        self.heard[node] = max(self.heard[node], beat)
        return now - beat > self.dead_after

    def view_is_current(self, now: float) -> bool:
        """Our own heartbeats reach our watch: a watch that fell behind (our bus restarting) shows every other
        node silent, and must not be taken for their death."""
        own = self.heartbeats.values.get(self.me)
        return own is not None and now - own.heartbeat_at < self.dead_after / 2

    async def sweep(self, now: float | None = None) -> list[str]:
        """Clear what nodes without a heartbeat left; the servers announced gone, as `<node>.<model>`."""
        now = time.time() if now is None else now
        gone: list[str] = []
        if not self.view_is_current(now):
            return gone
        for key in await _keys(self.servers):
            node = (SERVER.parse(key) or ("_",))[0]
            if node.startswith("_") or not await self.lost(node, now):  # a placement claim is no node's
                continue
            with contextlib.suppress(Exception):
                entry = await self.servers.get(key)
                status = SERVER.decode(entry.value) if entry.value else None
                if await self._delete(self.servers, key, entry.revision) and status is not None:
                    if status.node != node:
                        continue  # a record from before nodes (key <model>): removed without a word
                    gone.append(key)
                    log.warning("node %s is lost: its server of %s is gone", node, status.model)
                    await self.announce(status)
        for key in await _keys(self.gpu):
            if GPU_TABLE.parse(key) is None or not await self.lost(key, now):
                continue
            with contextlib.suppress(Exception):
                entry = await self.gpu.get(key)
                if await self._delete(self.gpu, key, entry.revision):
                    log.warning("node %s is lost: its GPU allocations are released", key)
        for key in await _keys(self.settings):
            parts = INSTALLED.parse(key)
            node = parts[0] if parts else ""
            if not node or not await self.lost(node, now):
                continue
            with contextlib.suppress(Exception):
                entry = await self.settings.get(key)
                if await self._delete(self.settings, key, entry.revision):
                    log.warning("node %s is lost: its weights no longer count as installed", node)
        return gone

    @staticmethod
    async def _delete(kv: KeyValueStore, key: str, revision: int | None) -> bool:
        try:
            await kv.delete(key, last=revision)
        except KeyWrongLastSequenceError:
            return False  # changed since we read it: its node is back, or another janitor got there first
        return True
