"""The lifecycle actor's durable record of each running model server (JetStream KV bucket ASR_SERVERS):
what a restarted lifecycle actor needs to resume idle clocks of the containers it re-adopts."""

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
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, nc: Client) -> ServerRecords:
        return cls(await nc.jetstream().key_value(subjects.SERVERS_BUCKET))

    async def load(self) -> dict[str, ServerStatus]:
        found: dict[str, ServerStatus] = {}
        with contextlib.suppress(Exception):  # nats-py raises NoKeysError on an empty bucket
            for key in await self.kv.keys():
                entry = await self.kv.get(key)
                if entry.value:
                    found[key] = _decode(entry.value)
        return found

    async def save(self, status: ServerStatus) -> None:
        try:
            await self.kv.put(status.model, msgspec.msgpack.encode(status))
        except Exception as exc:  # a record lost to a bus outage must not fail the work that caused it
            log.warning("could not record %s: %s", status.model, exc)

    async def forget(self, model_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.kv.purge(model_id)
