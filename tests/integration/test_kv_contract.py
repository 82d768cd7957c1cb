"""The in-memory KV (framework.memory_store) behaves as JetStream KV does where the system relies on it: the same
assertions run against a real bucket on nats-server and against MemoryKv. What passes here may be trusted in the
unit tier (allocator compare-and-set, placement claims, the lost-node janitor, heartbeats)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats.errors
import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KV_DEL

from framework.memory_store import MemoryKv
from framework.transport import KeyValueStore
from tests.conftest import Nats

TTL = 1.0


@pytest.fixture(params=["nats", "memory"])
async def kv(request: pytest.FixtureRequest, jetstream: Nats) -> AsyncIterator[KeyValueStore]:
    if request.param == "memory":
        yield MemoryKv("T", ttl=TTL)
        return
    nc = await jetstream.connect("admin")
    bucket = f"CONTRACT_{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    store = await js.create_key_value(KeyValueConfig(bucket=bucket, ttl=TTL))
    try:
        yield store
    finally:
        await js.delete_key_value(bucket)
        await nc.close()


async def test_revisions_grow_and_compare_and_set_refuses_a_stale_writer(kv: KeyValueStore) -> None:
    first = await kv.create("a.b", b"1")
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.create("a.b", b"again")
    second = await kv.update("a.b", b"2", last=first)
    assert second > first
    with pytest.raises(KeyWrongLastSequenceError):
        await kv.update("a.b", b"stale", last=first)
    entry = await kv.get("a.b")
    assert (entry.value, entry.revision) == (b"2", second)


async def test_a_deleted_key_is_gone_and_can_be_created_again(kv: KeyValueStore) -> None:
    await kv.put("k", b"v")
    await kv.delete("k")
    with pytest.raises(KeyNotFoundError):
        await kv.get("k")
    with pytest.raises(NoKeysError):
        await kv.keys()
    await kv.create("k", b"new")
    assert (await kv.get("k")).value == b"new"


async def test_a_watch_gives_the_current_values_then_none_then_changes(kv: KeyValueStore) -> None:
    await kv.put("n.x", b"1")
    await kv.put("other", b"-")
    watcher = await kv.watch("n.>")
    try:
        first = await watcher.updates(timeout=2)
        assert first is not None and (first.key, first.value) == ("n.x", b"1")
        assert await watcher.updates(timeout=2) is None
        await kv.put("n.y.z", b"2")
        await kv.put("other", b"not watched")
        await kv.delete("n.x")
        changed = await watcher.updates(timeout=2)
        assert changed is not None and (changed.key, changed.value) == ("n.y.z", b"2")
        deleted = await watcher.updates(timeout=2)
        assert deleted is not None and (deleted.key, deleted.operation) == ("n.x", KV_DEL)
        with pytest.raises(nats.errors.TimeoutError):
            await watcher.updates(timeout=0.3)
    finally:
        await watcher.stop()


async def test_the_bucket_ttl_removes_a_key_nobody_rewrote(kv: KeyValueStore) -> None:
    await kv.put("beat", b"1")
    assert sorted(await kv.keys()) == ["beat"]
    await asyncio.sleep(TTL + 0.6)
    with pytest.raises(KeyNotFoundError):
        await kv.get("beat")
