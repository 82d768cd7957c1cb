"""The lifecycle actor's durable record of each running model server (JetStream KV bucket ASR_SERVERS):
what a restarted lifecycle actor needs to resume the idle clocks of the servers it re-adopts, and what the
model proxies watch to find a ready server without asking the lifecycle actor."""

from __future__ import annotations

import contextlib
import logging

import msgspec
from nats.aio.client import Client
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.lifecycle import ServerStatus

log = logging.getLogger("asrpro.lifecycle")
_decode = msgspec.msgpack.Decoder(ServerStatus).decode


class ServerRecords:
    """In memory (for the fast tests, and what the KV-backed subclass keeps in step)."""

    def __init__(self) -> None:
        self.saved: dict[str, ServerStatus] = {}

    async def connect(self, nc: Client) -> None:
        """Records kept in memory need no bucket."""

    async def load(self) -> dict[str, ServerStatus]:
        return dict(self.saved)

    async def save(self, status: ServerStatus) -> None:
        self.saved[status.model] = status

    async def forget(self, model_id: str) -> None:
        self.saved.pop(model_id, None)


class KvServerRecords(ServerRecords):
    """One node's records: keys <node>.<model id>; the other nodes' records are theirs. Until `connect` opens the
    bucket they are kept in memory only (an actor served by a MemoryBus never connects)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self.kv: KeyValue | None = None

    async def connect(self, nc: Client) -> None:
        self.kv = await nc.jetstream().key_value(subjects.SERVERS_BUCKET)

    async def load(self) -> dict[str, ServerStatus]:
        if self.kv is None:
            return await super().load()
        found: dict[str, ServerStatus] = {}
        mine = subjects.server_key(self.node, "")
        with contextlib.suppress(Exception):  # nats-py raises NoKeysError on an empty bucket
            for key in await self.kv.keys():
                if not key.startswith(mine):
                    continue
                entry = await self.kv.get(key)
                if entry.value:
                    found[key[len(mine) :]] = _decode(entry.value)
        return found

    async def save(self, status: ServerStatus) -> None:
        await super().save(status)
        if self.kv is None:
            return
        try:
            await self.kv.put(subjects.server_key(self.node, status.model), msgspec.msgpack.encode(status))
        except Exception as exc:  # a record lost to a bus outage must not fail the work that caused it
            log.warning("could not record %s: %s", status.model, exc)

    async def forget(self, model_id: str) -> None:
        await super().forget(model_id)
        if self.kv is None:
            return
        with contextlib.suppress(Exception):
            await self.kv.purge(subjects.server_key(self.node, model_id))
