"""Scheduling on a real bus with real model servers: GPU admission and eviction, CPU fallback, waiting
for memory, keep_alive, durable allocations, and bounded queues.

The GPU is a configured inventory (one 16384 MB device, accounting only), see tests/fixtures/scheduling.toml.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from nats.aio.client import Client

from actors.gpu import GpuAllocator
from actors.lifecycle import Lifecycle
from actors.proxy import ModelProxy
from actors.registry import Registry
from asrpro import client as asr_client
from framework import bus
from schemas import encode, endpoints, subjects
from schemas.errors import AsrError
from schemas.events import ServerStopped, TranscriptionCompleted
from schemas.gpu import Allocate, Allocation, Bind, GpuStatus, GpuStatusRequest, Release
from schemas.lifecycle import LifecycleStatusRequest, ServerStatus
from schemas.transcribe import TranscribeRequest, TranscriptionResult
from tests.conftest import REPO, Nats, ensure, instances, reset_state
from tests.unit.fakes import until

CONFIG = str(REPO / "tests" / "fixtures" / "scheduling.toml")


@pytest.fixture
async def scheduler(start_actor):
    async def start(**env: str) -> Lifecycle:
        env.setdefault("ASRPRO_CONFIG", CONFIG)
        await start_actor(Registry, **env)
        await start_actor(GpuAllocator, **env)
        return await start_actor(Lifecycle, **env)

    return start


async def done(nc: Client, model: str, request_id: str) -> None:
    event = TranscriptionCompleted(model=model, request_id=request_id, audio_s=1.0, total_s=0.1)
    await nc.publish(subjects.event("transcribed", model), encode(event))
    await nc.flush()


async def gpu_status(nats: Nats) -> GpuStatus:
    nc = await nats.connect("gateway")
    try:
        return await bus.request(nc, endpoints.GPU_STATUS, GpuStatusRequest())
    finally:
        await nc.close()


async def running(nats: Nats) -> dict[str, ServerStatus]:
    nc = await nats.connect("gateway")
    try:
        status = await bus.request(nc, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
        return {s.model: s for s in status.servers}
    finally:
        await nc.close()


async def test_loading_past_capacity_evicts_the_least_recently_used_idle_server(
    scheduler, proxy_nc, jetstream, events
) -> None:
    small_log = await events("small")
    lifecycle = await scheduler()
    small = await ensure(proxy_nc, "small", request_id="s1")
    await done(proxy_nc, "small", "s1")
    medium = await ensure(proxy_nc, "medium", request_id="m1")
    await done(proxy_nc, "medium", "m1")
    # The events reach lifecycle on another subscription than ensure: both must be idle before large asks,
    # or medium (idle first) would be the one evicted.
    await until(lambda: not any(lifecycle.servers[m].inflight for m in ("small", "medium")), timeout=10)
    # Accounting only: the GPU memory is allocated, the servers run (and say they run) on the CPU.
    assert (small.device, small.memory_mb, medium.device, medium.memory_mb) == ("cpu", 2048, "cpu", 4096)
    # 6144 MB in use, large needs 12288 of 16384: one idle server must go, the least recently used (small).
    large = await ensure(proxy_nc, "large")
    assert (large.device, large.memory_mb) == ("cpu", 12288)
    stopped = await small_log.wait_for("stopped")
    assert isinstance(stopped, ServerStopped) and stopped.reason == "evicted"
    assert set(await running(jetstream)) == {"medium", "large"}
    status = await gpu_status(jetstream)
    assert status.devices[0].allocated_mb == 16384 and status.devices[0].free_mb == 0
    assert sorted(a.model for a in status.allocations) == ["large", "medium"]


async def test_busy_servers_are_never_evicted_then_fallback_wait_and_503(
    scheduler, proxy_nc, jetstream, events
) -> None:
    large_log = await events("large")
    await scheduler()
    await ensure(proxy_nc, "small", request_id="busy-s")
    await ensure(proxy_nc, "medium", request_id="busy-m")
    # Both busy: no room for 12288 MB and nothing may be evicted; large has no cpu_fallback → 503 at its deadline.
    t0 = time.monotonic()
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "large", timeout=2.0)
    assert 1.5 < time.monotonic() - t0 < 10
    assert err.value.code == "503" and err.value.retry_after
    assert "no room for large" in err.value.message and "cpu_fallback is off" in err.value.message
    assert (await large_log.wait_for("failed")).reason == err.value.message
    assert set(await running(jetstream)) == {"small", "medium"}
    # A model that allows it runs on the CPU instead.
    fallback = await ensure(proxy_nc, "large-fallback")
    assert fallback.device == "cpu" and fallback.memory_mb == 0
    # large waits in the queue until memory frees: once small finishes its request it can be evicted.
    waiting = asyncio.ensure_future(ensure(proxy_nc, "large", timeout=30.0))
    await large_log.wait_for("starting", count=2)  # lifecycle has it: waiting for room from here on
    await asyncio.sleep(1.5)  # on purpose: long enough to show it keeps waiting rather than fail or start
    assert not waiting.done()
    await done(proxy_nc, "small", "busy-s")
    large = await waiting
    # Accounting only: the GPU memory is allocated, the server runs (and says it runs) on the CPU.
    assert (large.device, large.memory_mb) == ("cpu", 12288) and set(await running(jetstream)) == {
        "medium",
        "large",
        "large-fallback",
    }


async def test_max_concurrent_containers_evicts_idle_first(scheduler, proxy_nc, jetstream) -> None:
    await scheduler(ASRPRO_LIFECYCLE__MAX_CONCURRENT_CONTAINERS="1")
    await ensure(proxy_nc, "small")
    await ensure(proxy_nc, "medium")
    assert set(await running(jetstream)) == {"medium"}


async def test_keep_alive_zero_stops_right_after_and_minus_one_never(scheduler, proxy_nc, jetstream, events) -> None:
    small_log = await events("small")
    await scheduler(ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="1")
    await ensure(proxy_nc, "small", request_id="k0", keep_alive=0.0)
    await done(proxy_nc, "small", "k0")
    t0 = time.monotonic()
    stopped = await small_log.wait_for("stopped", timeout=5)
    assert stopped.reason == "keep_alive" and time.monotonic() - t0 < 1.0

    medium = await ensure(proxy_nc, "medium", request_id="k1", keep_alive=-1.0)
    await done(proxy_nc, "medium", "k1")
    await asyncio.sleep(3.0)  # three times the inactivity timeout
    now = await running(jetstream)
    assert "medium" in now and now["medium"].pid == medium.pid
    assert now["medium"].expires_at is None and now["medium"].keep_alive == -1


async def test_two_gpu_actor_processes_never_allocate_the_same_memory(jetstream: Nats) -> None:
    await reset_state(jetstream)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    env.update(
        ASRPRO_CONFIG=CONFIG,
        ASRPRO_NATS__URL=jetstream.url,
        ASRPRO_NATS__USER="gpu",
        ASRPRO_NATS__PASSWORD=jetstream.passwords["gpu"],
    )
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "asrpro.cli", "actor", "gpu", cwd=REPO, env=env)
        for _ in range(2)
    ]
    lifecycle = await jetstream.connect("lifecycle")
    try:
        deadline = time.monotonic() + 60
        while len(await instances(jetstream, "gpu")) < 2:  # both processes serve, not just the first
            assert time.monotonic() < deadline, "the two gpu actor processes did not both start serving"
            assert all(p.returncode is None for p in procs), "a gpu actor process exited"

        async def allocate(i: int) -> Allocation | AsrError:
            try:
                return await bus.request(
                    lifecycle, endpoints.GPU_ALLOCATE, Allocate(model=f"m{i}", memory_mb=4096), timeout=10
                )
            except AsrError as exc:
                return exc

        results = await asyncio.gather(*(allocate(i) for i in range(12)))
        won = [r for r in results if isinstance(r, Allocation)]
        lost = [r for r in results if isinstance(r, AsrError)]
        assert len(won) == 4 and all(e.code == "507" for e in lost)
        status = await gpu_status(jetstream)
        assert status.devices[0].allocated_mb == 16384
        assert sorted(a.model for a in status.allocations) == sorted(a.model for a in won)
    finally:
        await lifecycle.close()
        for proc in procs:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)


async def test_gpu_actor_restart_keeps_allocations(start_actor, jetstream: Nats) -> None:
    first = await start_actor(GpuAllocator, ASRPRO_CONFIG=CONFIG)
    lifecycle = await jetstream.connect("lifecycle")
    try:
        a = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="x", memory_mb=10000))
        await first.stop()
        await start_actor(GpuAllocator, ASRPRO_CONFIG=CONFIG)
        status = await gpu_status(jetstream)
        assert [(x.model, x.memory_mb) for x in status.allocations] == [("x", 10000)]
        again = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="x", memory_mb=10000))
        assert again.device == a.device and again.at == a.at  # the same allocation, not a second one
        with pytest.raises(AsrError):
            await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="y", memory_mb=10000))
    finally:
        await lifecycle.close()


async def test_measured_memory_replaces_the_declaration(start_actor, jetstream: Nats) -> None:
    """NVML per-process use is read by a function the actor is given; here a fixed reading stands in for NVML."""
    gpu = await start_actor(GpuAllocator, ASRPRO_CONFIG=CONFIG)
    gpu.measure = lambda: {0: {0: 5000, 4242: 3000}}  # device 0: 5000 MB in use, 3000 of them by pid 4242
    lifecycle = await jetstream.connect("lifecycle")
    try:
        await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="z", memory_mb=12288))
        await bus.request(lifecycle, endpoints.GPU_BIND, Bind(model="z", pid=4242))
        assert await gpu.measure_once() == {"z": 3000}
        table, _ = await gpu._read()
        assert table.external_mb == {0: 2000}  # the rest is someone else's: placement leaves it alone
        await bus.request(lifecycle, endpoints.GPU_RELEASE, Release(model="z"))
    finally:
        await lifecycle.close()
    lifecycle = await jetstream.connect("lifecycle")
    try:
        again = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="z", memory_mb=12288))
        assert again.memory_mb == 3000
    finally:
        await lifecycle.close()


async def test_queue_overflow_is_429_and_a_queue_wait_past_the_timeout_is_504(
    scheduler, start_actor, client: Client, shared_data
) -> None:
    sox = await asyncio.create_subprocess_exec(
        "sox",
        *[str(shared_data / "jfk.flac")] * 6,
        "-r",
        "16000",
        "-c",
        "1",
        "-b",
        "16",
        "-t",
        "wav",
        "-",
        stdout=asyncio.subprocess.PIPE,
    )
    long_audio, _ = await sox.communicate()
    await scheduler(ASRPRO_MODELS__SMALL__MAX_PARALLEL="1", ASRPRO_MODELS__SMALL__MAX_QUEUE="1")
    proxy = await start_actor(
        ModelProxy, ASRPRO_CONFIG=CONFIG, ASRPRO_MODELS__SMALL__MAX_PARALLEL="1", ASRPRO_MODELS__SMALL__MAX_QUEUE="1"
    )
    await bus.request(client, endpoints.TRANSCRIBE.at("small"), TranscribeRequest(audio=long_audio), timeout=60)
    queue = proxy.serving.queues["small"]  # made by the request above; the proxy runs in this process

    async def queue_is(running: int, waiting: int) -> None:
        """Until the proxy's queue of small holds these many requests (not a guess at upload times)."""
        await until(lambda: (queue.running, queue.waiting) == (running, waiting), timeout=30)

    async def send(timeout: float | None = None) -> TranscriptionResult | AsrError:
        # The second waits out the first: two 66 s recordings on a loaded 2-core runner take over 60 s.
        try:
            return await asr_client.transcribe(
                client, "small", TranscribeRequest(audio=long_audio, timeout=timeout), timeout=180
            )
        except AsrError as exc:
            return exc

    first = asyncio.ensure_future(send())
    await queue_is(running=1, waiting=0)
    second = asyncio.ensure_future(send())  # waits behind the first
    await queue_is(running=1, waiting=1)
    third = await send()  # the queue (max_queue = 1) is full
    assert isinstance(third, AsrError) and third.code == "429" and third.kind == "rate_limit_exceeded"
    assert third.retry_after and "max_queue = 1" in third.message
    results = await asyncio.gather(first, second)
    assert all(isinstance(r, TranscriptionResult) for r in results), results
    assert isinstance(results[1], TranscriptionResult) and results[1].timing.queue_s > 0.3

    blocker = asyncio.ensure_future(send())
    await queue_is(running=1, waiting=0)
    late = await send(timeout=0.4)
    assert isinstance(late, AsrError) and late.code == "504" and "waiting in the queue of small" in late.message
    assert isinstance(await blocker, TranscriptionResult)
