"""A node's name is claimed in ASR_NODES by its lifecycle actor and kept alive by its heartbeat: a name alive on
another host is refused, one whose heartbeat is older than node.dead_after is taken over, a clean stop leaves."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError

from actors.lifecycle import Lifecycle
from actors.lifecycle.node import NodeNameTaken
from actors.registry import Registry
from schemas import subjects
from schemas.nodes import NodeRecord
from tests.conftest import Nats, make_config


async def put_record(server: Nats, name: str, host: str, age: float) -> None:
    admin = await server.connect("admin")
    try:
        kv = await admin.jetstream().key_value(subjects.NODES_BUCKET)
        then = time.time() - age
        record = NodeRecord(name=name, host=host, instance="x", started_at=then, heartbeat_at=then, runtime="local")
        await kv.put(name, msgspec.msgpack.encode(record))
    finally:
        await admin.close()


async def read_record(server: Nats, name: str) -> NodeRecord | None:
    admin = await server.connect("admin")
    try:
        kv = await admin.jetstream().key_value(subjects.NODES_BUCKET)
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            return None
        return msgspec.msgpack.decode(entry.value, type=NodeRecord) if entry.value else None
    finally:
        await admin.close()


async def test_a_node_name_alive_on_another_host_is_refused(start_actor, jetstream: Nats) -> None:
    await start_actor(Registry)  # the catalogue at once: the lifecycle actor claims its name after reading it
    await put_record(jetstream, "node-b", "another-host", age=1.0)
    lifecycle = Lifecycle(make_config(jetstream, "lifecycle", ASRPRO_NODE__NAME="node-b"))
    try:
        with pytest.raises(NodeNameTaken, match="alive on host another-host"):
            await lifecycle.start()
    finally:
        await lifecycle.stop()
    kept = await read_record(jetstream, "node-b")
    assert kept is not None and kept.host == "another-host"  # not taken over


async def test_a_silent_node_is_taken_over_and_a_clean_stop_leaves(start_actor, jetstream: Nats) -> None:
    await start_actor(Registry)
    await put_record(jetstream, "node-c", "another-host", age=60.0)  # older than node.dead_after
    env = {"ASRPRO_NODE__NAME": "node-c", "ASRPRO_NODE__HEARTBEAT_INTERVAL": "0.2"}
    lifecycle = Lifecycle(make_config(jetstream, "lifecycle", **env))
    await lifecycle.start()
    first = await read_record(jetstream, "node-c")
    assert first is not None and first.host != "another-host" and first.runtime == "local"
    for _ in range(50):  # it beats
        again = await read_record(jetstream, "node-c")
        if again is not None and again.heartbeat_at > first.heartbeat_at:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("no heartbeat")
    await lifecycle.stop()
    assert await read_record(jetstream, "node-c") is None
