"""The transport seam: what an actor needs from the bus, implemented by NATS and, for the fast tests, in memory.

    class Transport(Protocol):
        publish(subject, data, headers)     core messages (events, progress, cancels)
        request(rpc, message, timeout)      typed request/reply, errors back as AsrError
        kv(bucket)                          a JetStream KV bucket (revisions, compare-and-set, watch, TTL)
        object_store(bucket)                a JetStream object store bucket

Actors use only this (and their entrypoints), so the same actor runs on NATS (`NatsTransport`) and on the
in-memory bus (`framework.memory_bus.MemoryBus`, whose KV and object store are `framework.memory_store`) without
a branch of its own. The KV and object store protocols are the subset of nats-py's `KeyValue` and `ObjectStore`
the system uses, with nats-py's entry type and errors, so code written against one runs on the other.
"""

from __future__ import annotations

import io
from io import BufferedIOBase
from typing import Any, Protocol, TypeVar

from nats.aio.client import Client
from nats.js.kv import KeyValue

from framework import bus
from framework.nats_internals import ListedKeyValue
from schemas.endpoints import Rpc

Req = TypeVar("Req")
Rep = TypeVar("Rep")


class KeyWatcher(Protocol):
    async def updates(self, timeout: float = 5.0) -> KeyValue.Entry | None:
        """The next change; None once the current values were all delivered; nats.errors.TimeoutError."""
        ...

    async def stop(self) -> None: ...


class KeyValueStore(Protocol):
    """A KV bucket: nats-py's `KeyValue` as the system uses it (KeyNotFoundError, KeyWrongLastSequenceError,
    NoKeysError from nats.js.errors)."""

    async def get(self, key: str) -> KeyValue.Entry: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def create(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...

    async def delete(self, key: str, last: int | None = None) -> bool: ...

    async def purge(self, key: str) -> bool: ...

    async def keys(self) -> list[str]: ...

    async def current(self, keys: str = ">") -> list[KeyValue.Entry]:
        """The live keys' entries that match `keys` (a NATS wildcard pattern): a listing and its reads at once."""
        ...

    async def watch(self, keys: str) -> Any: ...


class StoredObject(Protocol):
    data: bytes | None


class ObjectStoreLike(Protocol):
    async def put(self, name: str, data: bytes | BufferedIOBase) -> Any: ...  # a file is read in chunks

    async def get(self, name: str, writeinto: Any = None) -> Any: ...  # writeinto: the chunks go there

    async def delete(self, name: str) -> Any: ...


class Transport(Protocol):
    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None: ...

    async def request(self, rpc: Rpc[Req, Rep], message: Req, *, timeout: float = 5.0) -> Rep: ...

    async def kv(self, bucket: str) -> KeyValueStore: ...

    async def object_store(self, bucket: str) -> ObjectStoreLike: ...


class NatsTransport:
    """The transport on a NATS connection."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.nc.publish(subject, data, headers=headers)

    async def request(self, rpc: Rpc[Req, Rep], message: Req, *, timeout: float = 5.0) -> Rep:
        return await bus.request(self.nc, rpc, message, timeout=timeout)

    async def kv(self, bucket: str) -> KeyValueStore:
        return await ListedKeyValue.bind(self.nc.jetstream(), bucket)

    async def object_store(self, bucket: str) -> ObjectStoreLike:
        store: ObjectStoreLike = await self.nc.jetstream().object_store(bucket)
        return store


async def read_object(store: ObjectStoreLike, name: str, into: Any = None) -> bytes:
    """An object's bytes (or, with `into`, written into that file and b"" returned). Never `store.get(name).data`:
    nats-py builds that with `bytes +=` per chunk, quadratic in the size (24 s for 100 MB, hours for gigabytes)."""
    sink = into if into is not None else io.BytesIO()
    await store.get(name, writeinto=sink)
    return b"" if into is not None else sink.getvalue()
