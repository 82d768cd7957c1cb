"""Placement claims on the in-memory KV (compare-and-set as JetStream's): of proxies placing one model at once,
one wins and the others are sent to the winner's node; a stale or excluded claim is taken over; an unclaim of a
claim someone else has since taken leaves theirs."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.errors import KeyNotFoundError

from actors.proxy import ModelProxy
from actors.proxy.claims import PlacementClaims
from framework.collaborators import worker_factory
from framework.config import start_budget
from framework.memory_bus import MemoryBus
from schemas.kv import PLACEMENT_CLAIM
from schemas.lifecycle import ServerStatus
from tests.unit.fakes import FakeModelServer, config

MODEL = "whisper-tiny.en"


async def claims_on(bus: MemoryBus) -> PlacementClaims:
    proxy = worker_factory(ModelProxy, config(), model_server=FakeModelServer().client())
    await proxy.claims.connect(bus)
    return proxy.claims


async def test_of_proxies_placing_at_once_exactly_one_wins_and_the_others_follow_it() -> None:
    bus = MemoryBus()
    proxies = [await claims_on(bus) for _ in range(5)]
    won = await asyncio.gather(*(p.claim(MODEL, f"node-{i}", set()) for i, p in enumerate(proxies)))
    winners = [c for c in won if c is not None and c.revision != 0]
    assert len(winners) == 1
    assert {c.node for c in won if c is not None} == {winners[0].node}  # everyone sends its request there
    kv = await bus.kv(PLACEMENT_CLAIM.bucket)
    record = PLACEMENT_CLAIM.decode((await kv.get(PLACEMENT_CLAIM.key(MODEL))).value or b"")
    assert record.node == winners[0].node and record.state == "placing"


async def test_a_claim_for_an_excluded_node_is_taken_over() -> None:
    bus = MemoryBus()
    first, second = await claims_on(bus), await claims_on(bus)
    theirs = await first.claim(MODEL, "node-a", set())
    assert theirs is not None and theirs.revision > 0
    mine = await second.claim(MODEL, "node-b", exclude={"node-a"})  # node-a failed this request already
    assert mine is not None and mine.node == "node-b" and mine.revision > theirs.revision


async def test_a_claim_older_than_the_start_budget_is_taken_over() -> None:
    bus = MemoryBus()
    kv = await bus.kv(PLACEMENT_CLAIM.bucket)
    old = time.time() - start_budget(config()) - 1
    stale = ServerStatus(model=MODEL, state="placing", runtime="", node="node-dead", started_at=old)
    await kv.put(PLACEMENT_CLAIM.key(MODEL), PLACEMENT_CLAIM.encode(stale))
    mine = await (await claims_on(bus)).claim(MODEL, "node-b", set())
    assert mine is not None and mine.node == "node-b" and mine.revision > 0


async def test_unclaim_removes_our_claim_but_not_one_taken_since() -> None:
    bus = MemoryBus()
    kv = await bus.kv(PLACEMENT_CLAIM.bucket)
    claims = await claims_on(bus)
    mine = await claims.claim(MODEL, "node-a", set())
    assert mine is not None
    await claims.unclaim(MODEL, mine.revision)
    with pytest.raises(KeyNotFoundError):
        await kv.get(PLACEMENT_CLAIM.key(MODEL))
    again = await claims.claim(MODEL, "node-a", set())
    assert again is not None and again.revision > mine.revision  # the key was free: created anew
    other = await (await claims_on(bus)).claim(MODEL, "node-b", exclude={"node-a"})
    assert other is not None and other.node == "node-b"
    await claims.unclaim(MODEL, again.revision)  # stale: node-b's claim stays
    record = PLACEMENT_CLAIM.decode((await kv.get(PLACEMENT_CLAIM.key(MODEL))).value or b"")
    assert record.node == "node-b"
