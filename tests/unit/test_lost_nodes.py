"""Node heartbeats and the lost-node janitor on the in-memory KV (revisions, compare-and-set, watches as
JetStream's): a node silent past its lease loses its server records (announced once, whoever sweeps), its GPU
table and its installed report; a node that came back meanwhile keeps what it wrote; a janitor whose own
heartbeats do not reach its watch sweeps nothing; a node name alive on another host is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from nats.js.errors import KeyNotFoundError, NoKeysError

from actors.lifecycle.janitor import NodeJanitor
from actors.lifecycle.node import NodeBeacon, NodeNameTaken
from framework.kv_view import KvView, heartbeats
from framework.memory_bus import MemoryBus
from framework.memory_store import MemoryKv
from schemas.gpu import AllocationTable, GpuDevice
from schemas.kv import GPU_TABLE, INSTALLED, NODE, PLACEMENT_CLAIM, SERVER
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord
from schemas.registry import Installed, InstalledModels
from tests.unit.fakes import config

LEASE = 20.0
NOW = 1_000_000.0


async def until(condition: Callable[[], bool]) -> None:
    """Let the watches deliver (they run as tasks of their own) until `condition` holds."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the watched view never caught up")


class Cluster:
    """The buckets of a cluster in memory and what two nodes, `a` (alive) and `b`, left in them."""

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.announced: list[ServerStatus] = []

    async def kv(self, bucket: str) -> MemoryKv:
        return await self.bus.kv(bucket)

    async def beat(self, node: str, at: float) -> None:
        record = NodeRecord(name=node, host=f"host-{node}", instance="i", started_at=0.0, heartbeat_at=at, runtime="x")
        await (await self.kv(NODE.bucket)).put(NODE.key(node), NODE.encode(record))

    async def leave_traces(self, node: str, model: str) -> None:
        status = ServerStatus(model=model, state="ready", runtime="local", url="http://x", node=node)
        await (await self.kv(SERVER.bucket)).put(SERVER.key(node, model), SERVER.encode(status))
        await (await self.kv(GPU_TABLE.bucket)).put(GPU_TABLE.key(node), GPU_TABLE.encode(AllocationTable()))
        report = InstalledModels(models={model: Installed(installed=True)})
        await (await self.kv(INSTALLED.bucket)).put(INSTALLED.key(node), INSTALLED.encode(report))

    async def janitor(self, me: str, servers: MemoryKv | None = None) -> NodeJanitor:
        view: KvView[NodeRecord] = heartbeats()
        await view.follow(self.bus, wait=1.0)

        async def announce(status: ServerStatus) -> None:
            self.announced.append(status)

        return NodeJanitor(
            me,
            LEASE,
            view,
            await self.kv(NODE.bucket),
            servers or await self.kv(SERVER.bucket),
            await self.kv(GPU_TABLE.bucket),
            await self.kv(INSTALLED.bucket),
            announce,
        )

    async def keys(self, bucket: str) -> set[str]:
        try:
            return set(await (await self.kv(bucket)).keys())
        except NoKeysError:
            return set()


async def two_nodes_b_silent() -> Cluster:
    cluster = Cluster()
    await cluster.beat("a", NOW)
    await cluster.beat("b", NOW - LEASE - 5)
    await cluster.leave_traces("a", "whisper-base")
    await cluster.leave_traces("b", "whisper-small")
    return cluster


async def test_a_node_silent_past_its_lease_loses_its_records_and_its_server_is_announced_once() -> None:
    cluster = await two_nodes_b_silent()
    claim = ServerStatus(model="whisper-tiny", state="placing", runtime="", node="b", started_at=NOW)
    servers = await cluster.kv(SERVER.bucket)
    await servers.put(PLACEMENT_CLAIM.key("whisper-tiny"), PLACEMENT_CLAIM.encode(claim))
    janitor = await cluster.janitor("a")
    await until(lambda: len(janitor.heartbeats.values) == 2)
    assert await janitor.sweep(NOW) == ["b.whisper-small"]
    assert [(s.node, s.model) for s in cluster.announced] == [("b", "whisper-small")]
    # What b left is gone, a's stays, and a placement claim is no node's record.
    assert await cluster.keys(SERVER.bucket) == {"a.whisper-base", "_placing.whisper-tiny"}
    assert await cluster.keys(GPU_TABLE.bucket) == {"a"}
    assert await cluster.keys(INSTALLED.bucket) == {"installed.a"}
    assert await janitor.sweep(NOW + 1) == [] and len(cluster.announced) == 1


async def test_of_janitors_sweeping_at_once_exactly_one_announces_each_lost_server() -> None:
    cluster = await two_nodes_b_silent()
    await cluster.beat("c", NOW)
    janitors = [await cluster.janitor("a"), await cluster.janitor("c")]
    await until(lambda: all(len(j.heartbeats.values) == 3 for j in janitors))
    swept = await asyncio.gather(*(j.sweep(NOW) for j in janitors))
    assert sorted(key for keys in swept for key in keys) == ["b.whisper-small"]
    assert len(cluster.announced) == 1


class ComesBackOnDelete(MemoryKv):
    """ASR_SERVERS where node b writes its record again between the janitor's read and its delete."""

    async def delete(self, key: str, last: int | None = None) -> bool:
        found = self.entries[key][0]
        await self.put(key, found.value or b"")  # b is back: its lifecycle actor records the server again
        return await super().delete(key, last=last)


async def test_a_node_that_came_back_meanwhile_keeps_what_it_wrote() -> None:
    cluster = await two_nodes_b_silent()
    servers = ComesBackOnDelete(SERVER.bucket)
    status = ServerStatus(model="whisper-small", state="ready", runtime="local", url="http://x", node="b")
    await servers.put(SERVER.key("b", "whisper-small"), SERVER.encode(status))
    janitor = await cluster.janitor("a", servers=servers)
    await until(lambda: len(janitor.heartbeats.values) == 2)
    assert await janitor.sweep(NOW) == [] and cluster.announced == []
    assert (await servers.get(SERVER.key("b", "whisper-small"))).value


async def test_a_janitor_whose_own_heartbeats_do_not_reach_its_watch_sweeps_nothing() -> None:
    cluster = await two_nodes_b_silent()
    janitor = await cluster.janitor("a")
    await until(lambda: len(janitor.heartbeats.values) == 2)
    # Our own last beat is older than half the lease in our view: the watch fell behind, every node looks silent.
    assert await janitor.sweep(NOW + LEASE) == []
    assert await cluster.keys(SERVER.bucket) == {"a.whisper-base", "b.whisper-small"} and not cluster.announced


async def test_a_node_first_seen_by_its_records_gets_the_full_lease_from_then() -> None:
    cluster = Cluster()
    await cluster.beat("a", NOW)
    await cluster.leave_traces("d", "whisper-small")  # no heartbeat of d at all: it may be starting
    janitor = await cluster.janitor("a")
    await until(lambda: len(janitor.heartbeats.values) == 1)
    assert await janitor.sweep(NOW) == []
    await cluster.beat("a", NOW + LEASE)
    await until(lambda: janitor.heartbeats.values["a"].heartbeat_at == NOW + LEASE)
    assert await janitor.sweep(NOW + LEASE) == []  # exactly the lease: not yet
    await cluster.beat("a", NOW + LEASE + 1)
    await until(lambda: janitor.heartbeats.values["a"].heartbeat_at == NOW + LEASE + 1)
    assert await janitor.sweep(NOW + LEASE + 1) == ["d.whisper-small"]


async def test_a_silent_node_in_the_watch_whose_record_says_it_beats_is_not_lost() -> None:
    """The watch may lag a heartbeat: the record read at the moment of deciding has the last word."""
    cluster = await two_nodes_b_silent()
    janitor = await cluster.janitor("a")
    await until(lambda: len(janitor.heartbeats.values) == 2)
    await janitor.heartbeats.stop()  # the watch stops delivering
    await cluster.beat("b", NOW)
    assert await janitor.sweep(NOW) == [] and not cluster.announced


# -- heartbeats ----------------------------------------------------------------


def beacon(node: str, **env: str) -> NodeBeacon:
    async def devices() -> list[GpuDevice]:
        return []

    return NodeBeacon(config(ASRPRO_NODE__NAME=node, **env), "instance-1", "fake", lambda: ["whisper-base"], devices)


async def test_a_node_claims_its_name_beats_and_leaves_and_a_watch_sees_each() -> None:
    bus = MemoryBus()
    view: KvView[NodeRecord] = heartbeats()
    await view.follow(bus, wait=1.0)
    nodes = await bus.kv(NODE.bucket)
    first = beacon("alpha")
    await first.claim(nodes)
    await until(lambda: "alpha" in view.values)
    seen = view.values["alpha"]
    assert seen.servers == ["whisper-base"] and seen.runtime == "fake" and time.time() - seen.heartbeat_at < 5
    await first.beat()
    await until(lambda: view.values["alpha"].heartbeat_at > seen.heartbeat_at)
    await first.leave()
    await until(lambda: "alpha" not in view.values)
    with pytest.raises(KeyNotFoundError):
        await nodes.get(NODE.key("alpha"))
    await view.stop()


async def test_a_name_alive_on_another_host_is_refused_and_a_dead_ones_is_taken() -> None:
    nodes = MemoryKv(NODE.bucket)
    other = NodeRecord(
        name="alpha", host="elsewhere", instance="i", started_at=0, heartbeat_at=time.time(), runtime="x"
    )
    await nodes.put(NODE.key("alpha"), NODE.encode(other))
    with pytest.raises(NodeNameTaken, match="alive on host elsewhere"):
        await beacon("alpha").claim(nodes)
    other.heartbeat_at = time.time() - 3600  # long past its lease: the name is free
    await nodes.put(NODE.key("alpha"), NODE.encode(other))
    mine = beacon("alpha")
    await mine.claim(nodes)
    assert NODE.decode((await nodes.get(NODE.key("alpha"))).value or b"").host == mine.host


async def test_a_record_expires_with_the_buckets_ttl_when_beats_stop() -> None:
    clock = [NOW]
    nodes = MemoryKv(NODE.bucket, ttl=LEASE, clock=lambda: clock[0])
    alpha = beacon("alpha")
    await alpha.claim(nodes)
    clock[0] += LEASE - 1
    assert (await nodes.get(NODE.key("alpha"))).value
    clock[0] += 2
    with pytest.raises(KeyNotFoundError):
        await nodes.get(NODE.key("alpha"))
