"""The metrics actor counts what the events say, in a Prometheus exposition that parses."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from actors.metrics import Metrics
from framework.memory_bus import MemoryBus
from schemas import codec, endpoints
from schemas.events import (
    BreakerChanged,
    RestartScheduled,
    ServerCrashed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionStarted,
    subject_of,
)
from schemas.metrics import SnapshotRequest
from tests.unit.fakes import config

M = "whisper-tiny.en"


async def test_the_exposition_has_what_operators_expect() -> None:
    bus = MemoryBus()
    await bus.start(Metrics(config()))
    for event in (
        ServerStarting(model=M, runtime="local"),
        ServerReady(model=M, runtime="local", url="u", startup_s=1.7),
        TranscriptionStarted(model=M, request_id="a", waiting=3),
        TranscriptionCompleted(model=M, request_id="a", audio_s=11.0, total_s=0.4, queue_s=0.02, waiting=2),
        TranscriptionFailed(model=M, request_id="b", code="415", reason="could not decode audio"),
        TranscriptionFailed(model=M, request_id="c", code="503", reason="breaker"),
        ServerStopped(model=M, runtime="local", reason="idle"),
        ServerCrashed(model=M, runtime="local", reason="SIGKILL"),
        RestartScheduled(model=M, attempt=1, delay_s=30, reason="crash"),
        BreakerChanged(model=M, state="open", reason="5 crashes"),
    ):
        await bus.publish(subject_of(type(event), event.model), codec.encode(event))
    snapshot = await bus.request(endpoints.METRICS_SNAPSHOT, SnapshotRequest())
    families = {f.name: f for f in text_string_to_metric_families(snapshot.prometheus)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("asrpro_requests_total", (("model", M), ("outcome", "ok")))] == 1
    assert samples[("asrpro_requests_rejected_total", (("code", "415"), ("model", M)))] == 1
    assert ("asrpro_requests_rejected_total", (("code", "503"), ("model", M))) not in samples  # not a rejection
    assert samples[("asrpro_model_load_seconds_sum", (("model", M), ("runtime", "local")))] == 1.7
    assert samples[("asrpro_server_stops_total", (("model", M), ("reason", "idle")))] == 1
    assert samples[("asrpro_server_stops_total", (("model", M), ("reason", "crashed")))] == 1
    assert samples[("asrpro_servers_running", (("model", M),))] == 0
    assert samples[("asrpro_server_restarts_total", (("model", M),))] == 1
    assert samples[("asrpro_breaker_open", (("model", M),))] == 1
    assert samples[("asrpro_queue_wait_seconds_count", (("model", M),))] == 1
    assert samples[("asrpro_queue_depth", (("model", M),))] == 2
    assert snapshot.models[M].crashes == 1 and snapshot.events_seen == 10
