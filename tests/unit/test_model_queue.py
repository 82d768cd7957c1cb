"""The decoding slots' scheduling rule (actors/proxy/queue.py): interactive before batch, batch on all slots but
one, FIFO within a kind, no slot lost to a waiter that gave up."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.proxy.queue import ModelQueue
from schemas.errors import AsrError


async def hold(queue: ModelQueue, priority: str, order: list[str], name: str, release: asyncio.Event) -> None:
    async with queue.slot(time.monotonic() + 10, priority):  # type: ignore[arg-type]
        order.append(name)
        await release.wait()


async def test_batch_never_takes_the_last_slot_and_interactive_goes_first() -> None:
    queue = ModelQueue("m", max_parallel=2, max_queue=10)
    order: list[str] = []
    release = {n: asyncio.Event() for n in ("j1", "j2", "j3", "i1", "i2")}
    tasks = [asyncio.ensure_future(hold(queue, "batch", order, n, release[n])) for n in ("j1", "j2", "j3")]
    await asyncio.sleep(0.05)
    assert order == ["j1"] and queue.running == 1 and queue.running_batch == 1  # one slot kept from jobs
    tasks.append(asyncio.ensure_future(hold(queue, "interactive", order, "i1", release["i1"])))
    await asyncio.sleep(0.05)
    assert order == ["j1", "i1"]  # at once, on the slot jobs may not take
    tasks.append(asyncio.ensure_future(hold(queue, "interactive", order, "i2", release["i2"])))
    release["j1"].set()
    await asyncio.sleep(0.05)
    assert order == ["j1", "i1", "i2"]  # the freed slot went to the interactive waiter, not to j2 before it
    release["i1"].set()
    await asyncio.sleep(0.05)
    assert order == ["j1", "i1", "i2", "j2"]  # jobs in their order
    for event in release.values():
        event.set()
    await asyncio.gather(*tasks)
    assert order[-1] == "j3" and queue.running == 0 and queue.waiting == 0


async def test_one_slot_is_shared_and_a_waiter_that_gives_up_loses_no_slot() -> None:
    queue = ModelQueue("m", max_parallel=1, max_queue=1)
    order: list[str] = []
    release = asyncio.Event()
    job = asyncio.ensure_future(hold(queue, "batch", order, "j", release))
    await asyncio.sleep(0.05)
    assert order == ["j"]  # with one slot, jobs may use it
    with pytest.raises(AsrError) as err:
        async with queue.slot(time.monotonic() + 0.1):
            pass
    assert err.value.code == "504"
    waiter = asyncio.ensure_future(hold(queue, "interactive", order, "i", asyncio.Event()))
    await asyncio.sleep(0.05)
    with pytest.raises(AsrError) as err:  # the interactive queue is full (max_queue 1)
        async with queue.slot(time.monotonic() + 1):
            pass
    assert err.value.code == "429"
    async with asyncio.timeout(1):  # batch waiters are never refused for a full queue
        extra = asyncio.ensure_future(hold(queue, "batch", order, "j2", release))
        await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(job, extra)
    assert order == ["j", "j2"] and queue.running == 0 and queue.waiting == 0
