"""A KV view whose watch gives its end-of-values marker before the values (as nats-py does when the server pushed
them before the client read them) asks the bucket instead of believing it: it is never known-but-empty, and a
resync never empties it."""

from __future__ import annotations

import asyncio

from framework.kv_view import KvView
from framework.memory_bus import MemoryBus
from framework.memory_store import MemoryKv, MemoryWatcher
from schemas.kv import SERVER
from schemas.lifecycle import ServerStatus

LATE_S = 0.3  # the values come this long after the marker


class EarlyMarkerKv(MemoryKv):
    async def watch(self, keys: str) -> MemoryWatcher:
        watcher = await super().watch(keys)
        current = []
        while not watcher.queue.empty():
            current.append(watcher.queue.get_nowait())
        watcher.queue.put_nowait(None)
        for entry in current[:-1]:  # the values, without the marker that followed them
            asyncio.get_running_loop().call_later(LATE_S, watcher.queue.put_nowait, entry)
        return watcher


def status(model: str) -> ServerStatus:
    return ServerStatus(model=model, state="ready", runtime="local", url="http://x", node="n1")


async def test_a_view_is_not_known_empty_nor_emptied_by_a_marker_that_comes_first() -> None:
    bus = MemoryBus()
    kv = bus.buckets[SERVER.bucket] = EarlyMarkerKv(SERVER.bucket)
    for model in ("tiny", "base"):
        await kv.put(SERVER.key("n1", model), SERVER.encode(status(model)))
    await kv.put("_placing.other", b"not a server record")  # in the bucket, not watched by this view
    view: KvView[ServerStatus] = KvView(SERVER, resync=0.5)
    try:
        await view.follow(bus, wait=2.0)
        assert view.known.is_set() and sorted(view.values) == ["n1.base", "n1.tiny"]
        await asyncio.sleep(LATE_S + 0.1)  # the watch's late values in (this fake would deliver them after a change)
        await kv.delete(SERVER.key("n1", "base"))  # seen by the watch as it happens
        await asyncio.sleep(0.1)
        assert sorted(view.values) == ["n1.tiny"]
        # Quiet past `resync`: the watch starts again, its marker first again; the view keeps what the bucket holds.
        for _ in range(20):
            await asyncio.sleep(0.05)
            assert sorted(view.values) == ["n1.tiny"], view.values
    finally:
        await view.stop()
