"""JetStream's KV and object store in memory, for the fast tests: real implementations, not stand-ins.

`MemoryKv` keeps what the system relies on a KV bucket for: one revision counter per bucket (as a stream's
sequence), compare-and-set (`create` fails on an existing key, `update` on a stale revision, with nats-py's
KeyWrongLastSequenceError), deletes as markers a watch sees, a bucket TTL after which a key is gone (as
nats-server's max age), and watches that first deliver the current values, then None, then every change, as
nats-py's `KeyWatcher` does. Code written against nats-py's `KeyValue` runs on it unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BufferedIOBase
from typing import Any

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, ObjectNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from schemas.subjects import matches


class MemoryWatcher:
    def __init__(self, kv: MemoryKv, keys: str) -> None:
        self.kv, self.keys = kv, keys
        self.queue: asyncio.Queue[KeyValue.Entry | None] = asyncio.Queue()

    async def updates(self, timeout: float = 5.0) -> KeyValue.Entry | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise nats.errors.TimeoutError from None

    async def stop(self) -> None:
        self.kv.watchers.discard(self)


class MemoryKv:
    def __init__(self, bucket: str, *, ttl: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.bucket, self.ttl, self.clock = bucket, ttl, clock
        self.entries: dict[str, tuple[KeyValue.Entry, float]] = {}  # key -> (last entry, when written)
        self.sequence = 0
        self.watchers: set[MemoryWatcher] = set()

    def _live(self, key: str) -> KeyValue.Entry | None:
        found = self.entries.get(key)
        if found is None:
            return None
        entry, written = found
        if self.ttl is not None and self.clock() - written >= self.ttl:
            del self.entries[key]  # expired, as the stream's max age removes it (no marker)
            return None
        return None if entry.operation in (KV_DEL, KV_PURGE) else entry

    def _write(self, key: str, value: bytes, operation: str | None = None) -> int:
        self.sequence += 1
        entry = KeyValue.Entry(self.bucket, key, value, self.sequence, 0, None, operation)
        self.entries[key] = (entry, self.clock())
        for watcher in list(self.watchers):
            if matches(watcher.keys, key):
                watcher.queue.put_nowait(entry)
        return self.sequence

    async def get(self, key: str) -> KeyValue.Entry:
        await asyncio.sleep(0)  # a round trip: others run meanwhile, as they do while nats-server answers
        entry = self._live(key)
        if entry is None:
            raise KeyNotFoundError
        return entry

    async def put(self, key: str, value: bytes) -> int:
        await asyncio.sleep(0)
        return self._write(key, value)

    async def create(self, key: str, value: bytes) -> int:
        await asyncio.sleep(0)
        if self._live(key) is not None:
            raise KeyWrongLastSequenceError(description=f"wrong last sequence: {key} exists")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        await asyncio.sleep(0)
        found = self.entries.get(key)
        current = found[0].revision if found is not None and self._live(key) is not None else 0
        if (last or 0) != current:
            raise KeyWrongLastSequenceError(description=f"wrong last sequence: {current}")
        return self._write(key, value)

    async def delete(self, key: str, last: int | None = None) -> bool:
        await asyncio.sleep(0)
        if last:
            entry = self._live(key)
            if entry is None or entry.revision != last:
                raise KeyWrongLastSequenceError(description="wrong last sequence")
        self._write(key, b"", KV_DEL)
        return True

    async def purge(self, key: str) -> bool:
        await asyncio.sleep(0)
        self._write(key, b"", KV_PURGE)
        return True

    async def keys(self) -> list[str]:
        found = [key for key in list(self.entries) if self._live(key) is not None]
        if not found:
            raise NoKeysError
        return found

    async def current(self, keys: str = ">") -> list[KeyValue.Entry]:
        await asyncio.sleep(0)
        live = (self._live(key) for key in sorted(self.entries) if matches(keys, key))
        return [entry for entry in live if entry is not None]

    async def watch(self, keys: str) -> MemoryWatcher:
        watcher = MemoryWatcher(self, keys)
        for key in list(self.entries):
            entry = self._live(key)
            if entry is not None and matches(keys, key):
                watcher.queue.put_nowait(entry)
        watcher.queue.put_nowait(None)  # the current values are all in
        self.watchers.add(watcher)
        return watcher


@dataclass
class MemoryObject:
    name: str
    data: bytes | None


class MemoryObjectStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    async def put(self, name: str, data: bytes | BufferedIOBase) -> MemoryObject:
        self.objects[name] = data if isinstance(data, bytes) else data.read()
        return MemoryObject(name, None)

    async def get(self, name: str, writeinto: Any = None) -> MemoryObject:
        if name not in self.objects:
            raise ObjectNotFoundError
        if writeinto is not None:
            writeinto.write(self.objects[name])
            return MemoryObject(name, b"")
        return MemoryObject(name, self.objects[name])

    async def delete(self, name: str) -> MemoryObject:
        if self.objects.pop(name, None) is None:
            raise ObjectNotFoundError
        return MemoryObject(name, None)
