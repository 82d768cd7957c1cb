"""The lifecycle actor's durable record of each running model server (JetStream KV bucket ASR_SERVERS):
what a restarted lifecycle actor needs to resume the idle clocks of the servers it re-adopts, and what the
model proxies watch to find a ready server without asking the lifecycle actor."""

from __future__ import annotations

import contextlib
import logging

import msgspec

from framework.transport import KeyValueStore, Transport
from schemas.kv import SERVER
from schemas.lifecycle import ServerStatus

log = logging.getLogger("asrpro.lifecycle")


class ServerRecords:
    """In memory: what the KV-backed subclass keeps in step, and a stand-in a test may declare instead of it."""

    def __init__(self) -> None:
        self.saved: dict[str, ServerStatus] = {}

    async def connect(self, transport: Transport) -> None:
        """Records kept in memory need no bucket."""

    async def load(self) -> dict[str, ServerStatus]:
        return dict(self.saved)

    async def save(self, status: ServerStatus) -> None:
        self.saved[status.model] = status

    async def forget(self, model_id: str) -> None:
        self.saved.pop(model_id, None)


class KvServerRecords(ServerRecords):
    """One node's records (schemas.kv.SERVER: keys <node>.<model id>); the other nodes' records are theirs. Used
    once `connect` opened the bucket (the actor's setup does, before anything starts)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self._kv: KeyValueStore | None = None

    async def connect(self, transport: Transport) -> None:
        self._kv = await transport.kv(SERVER.bucket)

    @property
    def kv(self) -> KeyValueStore:
        if self._kv is None:
            raise RuntimeError("server records used before the bucket was opened (connect)")
        return self._kv

    async def load(self) -> dict[str, ServerStatus]:
        found: dict[str, ServerStatus] = {}
        mine = SERVER.key(self.node, "")
        # Any failure to read fails the adoption, which the supervisor retries.
        for entry in await self.kv.current(f"{mine}>"):
            if not entry.value:
                continue
            try:
                found[entry.key[len(mine) :]] = SERVER.decode(entry.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # never a reason to adopt nothing
                log.warning("ignoring the malformed server record %s: %s", entry.key, exc)
        return found

    async def save(self, status: ServerStatus) -> None:
        await super().save(status)
        try:
            await self.kv.put(SERVER.key(self.node, status.model), SERVER.encode(status))
        except Exception as exc:  # a record lost to a bus outage must not fail the work that caused it
            log.warning("could not record %s: %s", status.model, exc)

    async def forget(self, model_id: str) -> None:
        await super().forget(model_id)
        with contextlib.suppress(Exception):
            await self.kv.purge(SERVER.key(self.node, model_id))
