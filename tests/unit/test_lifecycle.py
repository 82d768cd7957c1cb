"""The lifecycle actor in memory: a fake runtime, fake model servers, a stand-in gpu actor, the real actor code."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.lifecycle import Lifecycle
from actors.lifecycle.records import ServerRecords
from actors.lifecycle.runtimes import LaunchSpec, ServerHandle
from actors.registry import catalogue as catalogue_of
from framework.catalogue import Catalogue
from framework.collaborators import worker_factory
from framework.memory_bus import MemoryBus
from schemas import codec, endpoints
from schemas.errors import AsrError
from schemas.events import (
    BreakerChanged,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    ServerUnhealthy,
    TranscriptionCompleted,
    TranscriptionStarted,
    kind,
)
from schemas.gpu import Allocate, Allocation, Release, Released
from schemas.lifecycle import EnsureServer, LifecycleStatusRequest, PullModel, PullProgress, ServerStatus, StopServer
from schemas.registry import ModelList
from tests.unit.fakes import FakeModelServer, FakeRuntime, config, until


class Gpu:
    """A stand-in for the gpu actor: `free_mb` of one device, first come first served."""

    def __init__(self, free_mb: int = 0) -> None:
        self.free_mb = free_mb
        self.allocations: dict[str, int] = {}

    def allocate(self, msg: Allocate) -> Allocation:
        if msg.memory_mb <= 0 or self.free_mb == 0:
            return Allocation(model=msg.model, device="cpu")
        used = sum(self.allocations.values())
        if used + msg.memory_mb > self.free_mb:
            raise AsrError("507", f"no GPU has {msg.memory_mb} MB free for {msg.model}")
        self.allocations[msg.model] = msg.memory_mb
        return Allocation(model=msg.model, device="cuda:0", device_index=0, memory_mb=msg.memory_mb)

    def release(self, msg: Release) -> Released:
        return Released(model=msg.model, released=self.allocations.pop(msg.model, None) is not None)


async def start(gpu: Gpu | None = None, **env: str) -> tuple[MemoryBus, Lifecycle, FakeRuntime, FakeModelServer]:
    cfg = config(**env)
    listing = ModelList(models=list(catalogue_of(cfg).values()), default_model=cfg.registry.default_model)
    bus, runtime = MemoryBus(), FakeRuntime()
    servers = FakeModelServer(runtime)
    gpu = gpu or Gpu()
    bus.answer(endpoints.GPU_ALLOCATE, gpu.allocate)
    bus.answer(endpoints.GPU_RELEASE, gpu.release)
    bus.answer(endpoints.GPU_BIND, lambda msg: Allocation(model=msg.model, device="cuda:0"))
    lifecycle = worker_factory(
        Lifecycle, cfg, runtime_choice=(runtime, "fake"), catalogue=Catalogue(listing), model_server=servers.client()
    )
    await bus.start(lifecycle)
    return bus, lifecycle, runtime, servers


def kinds(bus: MemoryBus, model: str | None = None) -> list[str]:
    return [kind(e) for e in bus.events if model in (None, e.model)]


async def test_ensure_starts_once_then_reuses_the_server() -> None:
    bus, lifecycle, runtime, _ = await start()
    first = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-1"))
    second = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (first.model, first.state, first.cold_start, first.url) == (
        "whisper-tiny.en",
        "ready",
        True,
        "http://whisper-tiny.en.fake",
    )
    assert second.cold_start is False and len(runtime.launched) == 1
    assert kinds(bus) == ["starting", "ready"]
    ready = bus.events[-1]
    assert isinstance(ready, ServerReady) and ready.url == first.url
    await bus.stop()
    assert runtime.stopped == ["whisper-tiny.en"] and kinds(bus)[-1] == "stopped"


async def test_unknown_model_is_404_naming_the_known_ones() -> None:
    bus, *_ = await start()
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-huge"))
    assert err.value.code == "404" and "whisper-tiny.en" in err.value.message


async def test_a_server_failing_its_health_check_at_start_is_a_clear_503() -> None:
    bus, lifecycle, runtime, servers = await start()
    servers.health["whisper-tiny.en"] = "error"
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert err.value.code == "503" and "whisper-tiny.en is error" in err.value.message
    assert kinds(bus) == ["starting", "failed"] and runtime.stopped == ["whisper-tiny.en"]
    assert not lifecycle.servers


async def test_requests_reported_by_events_hold_the_server_and_keep_alive_zero_stops_it_after() -> None:
    bus, lifecycle, runtime, _ = await start()
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    await lifecycle.publish(TranscriptionStarted(model="whisper-tiny.en", request_id="r1", keep_alive=0))
    assert lifecycle.servers["whisper-tiny.en"].inflight.keys() == {"r1"}
    # Busy: never stopped, however idle the clock says it is (300 s inactivity_timeout).
    await lifecycle.idle.reap(now=time.time() + 310)
    assert "whisper-tiny.en" in lifecycle.servers
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_STOP, StopServer(model="whisper-tiny.en"))
    assert err.value.code == "409"
    await lifecycle.publish(TranscriptionCompleted(model="whisper-tiny.en", request_id="r1", audio_s=1, total_s=1))
    await until(lambda: "stopped" in kinds(bus))
    stopped = bus.events[-1]
    assert isinstance(stopped, ServerStopped) and stopped.reason == "keep_alive"
    assert "whisper-tiny.en" not in lifecycle.servers


async def test_idle_clock_arithmetic() -> None:
    bus, lifecycle, runtime, _ = await start(ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="60")
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en", keep_alive=-1))
    assert status.keep_alive == -1 and status.expires_at is None
    await lifecycle.idle.reap(now=time.time() + 10_000)
    assert "whisper-tiny.en" in lifecycle.servers  # keep_alive -1: never
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en", keep_alive=30))
    assert status.last_activity is not None
    assert status.expires_at == pytest.approx(status.last_activity + 30)
    await lifecycle.idle.reap(now=status.last_activity + 29)
    assert "whisper-tiny.en" in lifecycle.servers
    await lifecycle.idle.reap(now=status.last_activity + 30)
    assert "whisper-tiny.en" not in lifecycle.servers
    stopped = bus.events[-1]
    assert isinstance(stopped, ServerStopped) and stopped.reason == "keep_alive"


async def test_gpu_full_evicts_the_least_recently_used_idle_server() -> None:
    gpu = Gpu(free_mb=4096)
    env = {
        "ASRPRO_MODELS__WHISPER_BASE__WEIGHTS": "x",
        "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_BASE__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_LARGE_V3__GPU_MEMORY_MB": "2048",
    }
    bus, lifecycle, runtime, _ = await start(gpu, **env)
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    lifecycle.servers["whisper-base"].inflight["busy"] = time.time()  # busy: never evicted
    lifecycle.servers["whisper-tiny.en"].last_activity -= 100
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-large-v3"))
    assert status.device == "cuda:0"
    assert set(lifecycle.servers) == {"whisper-base", "whisper-large-v3"}
    evicted = [e for e in bus.events if isinstance(e, ServerStopped)]
    assert [(e.model, e.reason) for e in evicted] == [("whisper-tiny.en", "evicted")]


async def test_no_room_falls_back_to_the_cpu_or_fails_at_the_deadline() -> None:
    gpu = Gpu(free_mb=1024)
    env = {
        "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_BASE__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_BASE__CPU_FALLBACK": "true",
        "ASRPRO_MODELS__WHISPER_TINY_EN__CPU_FALLBACK": "false",
    }
    bus, lifecycle, runtime, _ = await start(gpu, **env)
    on_cpu = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert on_cpu.device == "cpu"
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en", timeout=0.2))
    assert err.value.code == "503" and "no room for whisper-tiny.en" in err.value.message
    assert err.value.retry_after and "no_room" in [getattr(e, "cause", "") for e in bus.events]


async def test_max_concurrent_containers_stops_an_idle_one_first() -> None:
    bus, lifecycle, runtime, _ = await start(ASRPRO_LIFECYCLE__MAX_CONCURRENT_CONTAINERS="1")
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert list(lifecycle.servers) == ["whisper-base"] and runtime.stopped == ["whisper-tiny.en"]
    lifecycle.servers["whisper-base"].inflight["busy"] = time.time()
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en", timeout=0.2))
    assert "max_concurrent_containers = 1" in err.value.message


async def test_an_open_breaker_refuses_starts_except_the_probe() -> None:
    bus, lifecycle, runtime, _ = await start()
    await lifecycle.publish(
        BreakerChanged(model="whisper-tiny.en", state="open", reason="5 crashes", retry_at=time.time() + 30)
    )
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (err.value.code, err.value.kind) == ("503", "breaker_open") and 25 < (err.value.retry_after or 0) <= 30
    status = await bus.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    assert [(b.model, b.state) for b in status.breakers] == [("whisper-tiny.en", "open")]
    assert (
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en", probe=True))
    ).state == "ready"
    await lifecycle.publish(BreakerChanged(model="whisper-tiny.en", state="closed"))
    assert not (await bus.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())).breakers


async def test_breakers_are_rebuilt_from_the_last_events_at_start() -> None:
    cfg = config()
    bus = MemoryBus()
    await bus.publish(
        "asr.events.breaker.whisper-base",
        __import__("schemas.codec", fromlist=["encode"]).encode(
            BreakerChanged(model="whisper-base", state="open", reason="crashes", retry_at=time.time() + 60)
        ),
    )
    from schemas.registry import ModelList

    listing = ModelList(models=list(catalogue_of(cfg).values()), default_model="whisper-tiny.en")
    lifecycle = worker_factory(
        Lifecycle,
        cfg,
        runtime_choice=(FakeRuntime(), "fake"),
        catalogue=Catalogue(listing),
        model_server=FakeModelServer().client(),
    )
    await bus.start(lifecycle)
    assert set(lifecycle.breakers.by_model) == {"whisper-base"}


async def test_a_crash_is_announced_and_frees_the_model() -> None:
    bus, lifecycle, runtime, _ = await start()
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    runtime.crash("whisper-tiny.en")
    await until(lambda: "crashed" in kinds(bus))
    crashed = bus.events[-1]
    assert isinstance(crashed, ServerCrashed) and crashed.exit_code == -9 and "SIGKILL" in crashed.reason
    assert not lifecycle.servers
    again = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert again.cold_start and len(runtime.launched) == 2


async def test_a_failing_health_check_is_announced_once() -> None:
    bus, lifecycle, runtime, servers = await start()
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    servers.health["whisper-tiny.en"] = "error"
    await lifecycle.check_health()
    await lifecycle.check_health()
    unhealthy = [e for e in bus.events if isinstance(e, ServerUnhealthy)]
    assert len(unhealthy) == 1 and "whisper-tiny.en is error" in unhealthy[0].reason


async def test_a_request_that_arrives_while_an_idle_server_is_withdrawn_keeps_it() -> None:
    bus, lifecycle, runtime, _ = await start()
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    server = lifecycle.servers["whisper-tiny.en"]
    retiring = asyncio.ensure_future(lifecycle.idle.reap(now=time.time() + 400))
    await until(lambda: server.state == "stopping")
    assert lifecycle.records is not None and lifecycle.records.saved["whisper-tiny.en"].state == "stopping"
    # A proxy that read the view just before found it ready: its event arrives during the grace period.
    await lifecycle.publish(TranscriptionStarted(model="whisper-tiny.en", request_id="late"))
    await retiring
    assert lifecycle.servers["whisper-tiny.en"] is server and server.state == "ready" and not runtime.stopped
    assert lifecycle.records.saved["whisper-tiny.en"].state == "ready"


async def test_an_adopted_server_recorded_busy_gets_a_fresh_idle_clock() -> None:
    cfg = config()
    listing = ModelList(models=list(catalogue_of(cfg).values()), default_model="whisper-tiny.en")
    runtime = FakeRuntime()
    handle = ServerHandle(model="whisper-tiny.en", url="http://whisper-tiny.en.fake", runtime="fake", pid=7)
    runtime.adoptable = [handle]
    records = ServerRecords()
    long_ago = time.time() - 10_000
    await records.save(
        ServerStatus(model="whisper-tiny.en", state="ready", runtime="fake", last_activity=long_ago, inflight=1)
    )
    bus = MemoryBus()
    bus.answer(endpoints.GPU_ALLOCATE, lambda msg: Allocation(model=msg.model, device="cpu"))
    bus.answer(endpoints.GPU_RELEASE, lambda msg: Released(model=msg.model, released=False))
    lifecycle = worker_factory(
        Lifecycle,
        cfg,
        runtime_choice=(runtime, "fake"),
        catalogue=Catalogue(listing),
        records=records,
        model_server=FakeModelServer().client(),
    )
    await bus.start(lifecycle)
    adopted = lifecycle.servers["whisper-tiny.en"]
    assert adopted.last_activity > long_ago + 9_000
    ready = bus.events[-1]
    assert isinstance(ready, ServerReady) and ready.adopted


async def test_a_model_not_installed_is_404_with_the_hint_and_never_started() -> None:
    bus, lifecycle, runtime, _ = await start()
    runtime.absent.add("whisper-base")
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert (err.value.code, err.value.kind) == ("404", "model_not_installed")
    assert "asrpro models pull whisper-base" in err.value.message and "/weights/whisper-base" in err.value.message
    assert not runtime.launched and kinds(bus) == ["failed"]
    assert bus.events[-1].cause == "not_installed"  # type: ignore[union-attr]


async def test_a_gpu_placement_the_runtime_cannot_use_falls_back_or_names_the_fix() -> None:
    gpu = Gpu(free_mb=8192)
    env = {
        "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_BASE__GPU_MEMORY_MB": "2048",
        "ASRPRO_MODELS__WHISPER_BASE__WEIGHTS": "x",
        "ASRPRO_MODELS__WHISPER_BASE__CPU_FALLBACK": "true",
        "ASRPRO_MODELS__WHISPER_TINY_EN__CPU_FALLBACK": "false",
    }
    bus, lifecycle, runtime, servers = await start(gpu, **env)
    runtime.gpu_trouble = "the CUDA image asrpro/whisper-tiny.en:0.1.0-cuda is not built (asrpro images build ...)"
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert err.value.code == "503" and "asrpro images build" in err.value.message
    assert err.value.kind == "gpu_unusable" and gpu.allocations == {}  # the GPU memory is given back
    failed = [e for e in bus.events if isinstance(e, ServerFailed)]
    assert failed and failed[-1].cause == "gpu"  # not the model's fault: no breaker counts it
    assert runtime.launched == []
    on_cpu = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert on_cpu.device == "cpu" and runtime.launched[-1].device == "cpu" and gpu.allocations == {}
    reasons = [e.reason for e in bus.events if isinstance(e, ServerStarting) and e.model == "whisper-base"]
    assert any("on the CPU instead of cuda:0" in r for r in reasons)
    runtime.gpu_trouble = ""
    lifecycle.servers.clear()
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (status.device, status.compute_type) == ("cuda:0", "float16")


GPU_ENV = {
    "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "2048",
    "ASRPRO_MODELS__WHISPER_BASE__GPU_MEMORY_MB": "2048",
    "ASRPRO_MODELS__WHISPER_BASE__WEIGHTS": "x",
    "ASRPRO_MODELS__WHISPER_BASE__CPU_FALLBACK": "true",
    "ASRPRO_MODELS__WHISPER_TINY_EN__CPU_FALLBACK": "false",
}


async def test_the_first_gpu_refusal_of_a_runtime_is_the_gpus_fault_and_falls_back_where_allowed() -> None:
    gpu = Gpu(free_mb=8192)
    bus, lifecycle, runtime, _ = await start(gpu, **GPU_ENV)
    runtime.refuse_gpu = "Docker cannot give a container a GPU (no NVIDIA Container Toolkit ...)"
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (err.value.code, err.value.kind) == (
        "503",
        "gpu_unusable",
    ) and "NVIDIA Container Toolkit" in err.value.message
    [failed] = [e for e in bus.events if isinstance(e, ServerFailed)]
    assert failed.cause == "gpu" and gpu.allocations == {}  # the very first refusal: no breaker counts it
    on_cpu = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert on_cpu.device == "cpu" and [s.device for s in runtime.launched] == ["cpu"] and gpu.allocations == {}


async def test_a_load_the_gpu_cannot_run_fails_with_cause_gpu_and_the_device_is_what_the_engine_says() -> None:
    gpu = Gpu(free_mb=8192)
    bus, lifecycle, runtime, servers = await start(gpu, **GPU_ENV)
    servers.gpu_failure["whisper-tiny.en"] = (
        "CUDA failed with error the provided PTX was compiled with an unsupported toolchain"
    )
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (err.value.code, err.value.kind) == ("503", "gpu_unusable") and "unsupported toolchain" in err.value.message
    assert [e.cause for e in bus.events if isinstance(e, ServerFailed)] == ["gpu"]
    assert runtime.stopped == ["whisper-tiny.en"] and gpu.allocations == {}
    # Allocated a GPU, but the engine says it runs on the CPU: the CPU is what /api/ps shows.
    servers.device["whisper-base"] = "cpu"
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert runtime.launched[-1].device == "cuda:0" and (status.device, status.compute_type) == ("cpu", "int8")
    listed = await bus.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    assert [(s.model, s.device) for s in listed.servers] == [("whisper-base", "cpu")]


async def test_accounting_only_shows_the_cpu_the_servers_run_on() -> None:
    gpu = Gpu(free_mb=8192)
    bus, lifecycle, runtime, _ = await start(gpu, ASRPRO_GPU__ACCOUNTING_ONLY="true", **GPU_ENV)
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    assert (
        runtime.launched[-1].device == "cpu" and status.device == "cpu" and gpu.allocations == {"whisper-tiny.en": 2048}
    )


def test_the_docker_runtime_runs_the_cuda_image_on_a_gpu_and_the_cpu_image_otherwise() -> None:
    from actors.lifecycle.runtimes.base import LaunchSpec
    from actors.lifecycle.runtimes.docker import DockerRuntime

    model = catalogue_of(config())["whisper-base"]
    assert DockerRuntime.image_for(LaunchSpec(model=model, device="cuda:1")) == "asrpro/whisper-base:0.1.0-cuda"
    assert DockerRuntime.image_for(LaunchSpec(model=model, device="cpu")) == "asrpro/whisper-base:0.1.0"


async def test_a_pull_reports_progress_as_partials_and_refuses_what_it_cannot_pull() -> None:
    bus, _, _, _ = await start()
    done = await bus.request(endpoints.LIFECYCLE_PULL, PullModel(model="whisper-1"))  # the default: installed
    assert (done.model, done.pulled, done.installed.installed) == ("whisper-tiny.en", False, True)
    first = codec.decode(bus.partials[0][1], PullProgress)
    assert (first.model, first.status) == ("whisper-tiny.en", "pulling")
    with pytest.raises(AsrError) as unknown:
        await bus.request(endpoints.LIFECYCLE_PULL, PullModel(model="whisper-huge"))
    assert unknown.value.code == "404"
    with pytest.raises(AsrError) as no_source:  # configured without a source: nothing to pull from
        await bus.request(endpoints.LIFECYCLE_PULL, PullModel(model="whisper-large-v3"))
    assert no_source.value.code == "409" and "no source to pull from" in no_source.value.message


async def test_a_start_that_compiles_its_kernels_is_given_the_first_gpu_start_timeout() -> None:
    gpu = Gpu(free_mb=8192)
    bus, lifecycle, runtime, _ = await start(gpu, **GPU_ENV)
    waited: list[float | None] = []
    probe = lifecycle.starter.probe
    wait_healthy = probe.wait_healthy

    async def recording(handle: ServerHandle, timeout: float | None = None) -> object:
        waited.append(timeout)
        return await wait_healthy(handle, timeout)

    probe.wait_healthy = recording  # type: ignore[method-assign,assignment]
    launch = runtime.launch

    async def compiling(spec: LaunchSpec) -> ServerHandle:
        handle = await launch(spec)
        handle.compiles_kernels = spec.model.id == "whisper-tiny.en"
        return handle

    runtime.launch = compiling  # type: ignore[method-assign]
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
    await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-base"))
    assert waited == [900.0, None]
