"""Lifecycle with the local runtime: real model server processes (faster-whisper tiny.en), real events."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from actors.gpu import GpuAllocator
from actors.lifecycle import Lifecycle
from actors.recovery import Recovery
from actors.registry import Registry
from framework import bus
from schemas import encode, endpoints, subjects
from schemas.errors import AsrError
from schemas.events import ServerCrashed, ServerFailed, ServerReady, ServerStopped, TranscriptionCompleted
from schemas.lifecycle import LifecycleStatusRequest, StopServer
from tests.conftest import ensure

MODEL = "whisper-tiny.en"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state letter says it is gone.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
async def lifecycle_actors(start_actor):
    async def start(**env: str):
        await start_actor(Registry, **env)
        await start_actor(GpuAllocator, **env)
        return await start_actor(Lifecycle, **env)

    return start


async def test_server_starts_on_first_request_and_stops_when_idle(lifecycle_actors, proxy_nc, events) -> None:
    log = await events(MODEL)
    await lifecycle_actors(ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="2")
    status = await ensure(proxy_nc, "whisper-1")  # the alias resolves to the default model
    assert (status.model, status.state, status.runtime, status.cold_start) == (MODEL, "ready", "local", True)
    assert status.url.startswith("http://127.0.0.1:") and status.pid and alive(status.pid)
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{status.url}/health")).json()
    assert health["status"] == "ok" and health["model"] == MODEL

    again = await ensure(proxy_nc)
    assert (again.pid, again.cold_start) == (status.pid, False)

    stopped = await log.wait_for("stopped", timeout=15)
    assert isinstance(stopped, ServerStopped) and stopped.reason == "idle"
    assert log.types() == ["starting", "ready", "stopped"]
    ready = log.events[1]
    assert isinstance(ready, ServerReady) and ready.pid == status.pid and ready.startup_s > 0
    await asyncio.sleep(0.2)
    assert not alive(status.pid)


async def test_requests_in_flight_hold_off_the_idle_stop(lifecycle_actors, proxy_nc, events) -> None:
    log = await events(MODEL)
    await lifecycle_actors(ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="1")
    status = await ensure(proxy_nc, request_id="busy-1")
    assert status.pid is not None
    await asyncio.sleep(2.5)  # well past the timeout, but the request never reported back
    assert "stopped" not in log.types() and alive(status.pid)
    done = TranscriptionCompleted(model=MODEL, request_id="busy-1", audio_s=1, total_s=1)
    await proxy_nc.publish(subjects.event("transcribed", MODEL), encode(done))
    await log.wait_for("stopped", timeout=10)


async def test_a_model_without_weights_is_not_installed_rather_than_failed(
    lifecycle_actors, proxy_nc, events, tmp_path: Path
) -> None:
    log = await events("whisper-base")
    nowhere = tmp_path / "nowhere"
    await lifecycle_actors(ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(nowhere))
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "whisper-base")
    assert (err.value.code, err.value.kind) == ("404", "model_not_installed")
    assert "asrpro models pull whisper-base" in err.value.message and str(nowhere) in err.value.message
    failed = await log.wait_for("failed")
    assert isinstance(failed, ServerFailed) and failed.cause == "not_installed"
    assert log.types() == ["failed"]  # nothing was started


async def test_weights_that_do_not_load_fail_the_start_with_the_reason(
    lifecycle_actors, proxy_nc, events, tmp_path: Path
) -> None:
    log = await events("whisper-base")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.bin").write_bytes(b"not a model")
    await lifecycle_actors(ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(broken))
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "whisper-base")
    assert err.value.code == "503" and "model server for whisper-base failed" in err.value.message
    failed = await log.wait_for("failed")
    assert isinstance(failed, ServerFailed) and failed.cause == "start"
    assert log.types() == ["starting", "failed"]


async def test_stop_and_status(lifecycle_actors, proxy_nc, jetstream, events) -> None:
    log = await events(MODEL)
    await lifecycle_actors()
    status = await ensure(proxy_nc)
    gateway = await jetstream.connect("gateway")
    try:
        listing = await bus.request(gateway, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
        assert listing.runtime == "local" and [s.model for s in listing.servers] == [MODEL]
        assert listing.servers[0].expires_at and listing.servers[0].pid == status.pid
        reply = await bus.request(gateway, endpoints.LIFECYCLE_STOP, StopServer(model=MODEL), timeout=30)
        assert reply.stopped
        assert (await log.wait_for("stopped")).reason == "requested"
        reply = await bus.request(gateway, endpoints.LIFECYCLE_STOP, StopServer(model=MODEL), timeout=30)
        assert not reply.stopped
    finally:
        await gateway.close()


async def test_killed_server_is_reported_and_restarted_by_recovery(
    lifecycle_actors, start_actor, proxy_nc, events
) -> None:
    log = await events(MODEL)
    await lifecycle_actors()
    await start_actor(Recovery, ASRPRO_RECOVERY__BACKOFF="[0.2]")
    first = await ensure(proxy_nc)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    crashed = await log.wait_for("crashed")
    assert isinstance(crashed, ServerCrashed)
    assert crashed.exit_code == -9 and "SIGKILL" in crashed.reason
    ready = await log.wait_for("ready", count=2, timeout=60)
    assert isinstance(ready, ServerReady) and ready.pid != first.pid
    assert log.types() == ["starting", "ready", "crashed", "restart_scheduled", "starting", "ready"]
    scheduled = log.events[3]
    assert (scheduled.attempt, scheduled.delay_s) == (1, 0.2)
    assert log.events[4].reason == "restart"
    second = await ensure(proxy_nc)
    assert second.pid == ready.pid and not second.cold_start


async def test_shutdown_stops_the_servers_it_started(lifecycle_actors, proxy_nc, events) -> None:
    log = await events(MODEL)
    lifecycle = await lifecycle_actors()
    status = await ensure(proxy_nc)
    assert status.pid is not None
    await lifecycle.stop()
    assert not alive(status.pid)
    assert (await log.wait_for("stopped")).reason == "shutdown"
