"""The GPU allocator's compare-and-set, on the in-memory KV (framework.memory_store, checked against nats-server by
tests/integration/test_kv_contract.py): copies of one node's gpu actor never give the same memory out twice."""

from __future__ import annotations

import asyncio

import pytest

from actors.gpu import GpuAllocator
from framework.collaborators import worker_factory
from framework.memory_bus import MemoryBus
from schemas import kv as kv_records
from schemas.errors import AsrError
from schemas.gpu import Allocate, Allocation, Release
from tests.unit.fakes import config

ONE_GPU = {"ASRPRO_GPU__DEVICES": "[{index = 0, memory_mb = 1000}]", "ASRPRO_NODE__NAME": "box"}


async def copies(n: int, bus: MemoryBus | None = None) -> tuple[MemoryBus, list[GpuAllocator]]:
    bus = bus or MemoryBus()
    actors = [await bus.start(worker_factory(GpuAllocator, config(**ONE_GPU), measure=dict)) for _ in range(n)]
    return bus, actors  # type: ignore[return-value]


async def test_concurrent_allocations_by_two_copies_never_overcommit_the_device() -> None:
    bus, (a, b) = await copies(2)
    asks = [(a if i % 2 else b).allocate(Allocate(model=f"m{i}", memory_mb=300)) for i in range(6)]
    results = await asyncio.gather(*asks, return_exceptions=True)
    given = [r for r in results if isinstance(r, Allocation)]
    refused = [r for r in results if isinstance(r, AsrError)]
    assert len(given) == 3 and len(refused) == 3  # 3 x 300 MB fit in 1000 MB, a fourth does not
    assert all(r.code == "507" and r.kind == "no_room" for r in refused)
    kv = await bus.kv(kv_records.GPU_TABLE.bucket)
    table = kv_records.GPU_TABLE.decode((await kv.get(kv_records.GPU_TABLE.key("box"))).value or b"")
    assert sorted(table.allocations) == sorted(r.model for r in given)
    assert sum(x.memory_mb for x in table.allocations.values()) == 900


async def test_a_release_by_one_copy_frees_room_for_the_other() -> None:
    _, (a, b) = await copies(2)
    await a.allocate(Allocate(model="big", memory_mb=800))
    with pytest.raises(AsrError):
        await b.allocate(Allocate(model="other", memory_mb=400))
    assert (await b.release(Release(model="big"))).released
    assert (await a.allocate(Allocate(model="other", memory_mb=400))).device == "cuda:0"


async def test_the_same_model_asked_twice_gets_its_one_allocation() -> None:
    _, (a, b) = await copies(2)
    first, second = await asyncio.gather(
        a.allocate(Allocate(model="m", memory_mb=600)), b.allocate(Allocate(model="m", memory_mb=600))
    )
    assert first.device == second.device == "cuda:0" and first.memory_mb == second.memory_mb == 600


async def test_a_stale_writer_retries_instead_of_overwriting() -> None:
    bus, (a,) = await copies(1)
    kv = await bus.kv(kv_records.GPU_TABLE.bucket)
    await a.allocate(Allocate(model="first", memory_mb=100))
    original_update = kv.update
    raced = False

    async def update_after_a_rival(key: str, value: bytes, last: int | None = None) -> int:
        nonlocal raced
        if not raced:  # another copy writes between this one's read and its write
            raced = True
            rival = kv_records.GPU_TABLE.decode((await kv.get(key)).value or b"")
            rival.allocations["rival"] = Allocation(model="rival", device="cuda:0", device_index=0, memory_mb=500)
            await kv.put(key, kv_records.GPU_TABLE.encode(rival))
        return await original_update(key, value, last=last)

    kv.update = update_after_a_rival  # type: ignore[method-assign]
    with pytest.raises(AsrError):  # after its retry, the rival's 500 MB leave no room for 500 more
        await a.allocate(Allocate(model="late", memory_mb=500))
    table = kv_records.GPU_TABLE.decode((await kv.get(kv_records.GPU_TABLE.key("box"))).value or b"")
    assert sorted(table.allocations) == ["first", "rival"]
