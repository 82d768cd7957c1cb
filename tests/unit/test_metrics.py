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
    requests = {labels: value for (name, labels), value in samples.items() if name == "asrpro_requests_total"}
    # Each request once, with its outcome and status: a client's bad audio is not an error of the service.
    assert requests == {
        (("code", "200"), ("model", M), ("outcome", "ok")): 1,
        (("code", "415"), ("model", M), ("outcome", "client_error")): 1,
        (("code", "503"), ("model", M), ("outcome", "server_error")): 1,
    }
    assert "asrpro_requests_rejected_total" not in {name for name, _ in samples}
    assert samples[("asrpro_real_time_factor_sum", (("model", M),))] == 0.4 / 11.0
    assert samples[("asrpro_model_load_seconds_sum", (("model", M), ("runtime", "local")))] == 1.7
    assert samples[("asrpro_server_stops_total", (("model", M), ("reason", "idle")))] == 1
    assert samples[("asrpro_server_stops_total", (("model", M), ("reason", "crashed")))] == 1
    assert samples[("asrpro_servers_running", (("model", M),))] == 0
    assert samples[("asrpro_server_restarts_total", (("model", M),))] == 1
    assert samples[("asrpro_breaker_open", (("model", M),))] == 1
    assert samples[("asrpro_queue_wait_seconds_count", (("model", M),))] == 1
    assert samples[("asrpro_queue_depth", (("model", M),))] == 2
    assert snapshot.models[M].crashes == 1 and snapshot.events_seen == 10
    assert (snapshot.models[M].errors, snapshot.models[M].client_errors) == (1, 1)


async def test_made_up_model_names_share_one_label_and_cancels_are_their_own_outcome() -> None:
    bus = MemoryBus()
    await bus.start(Metrics(config()))
    for i in range(20):  # any application may ask for a model that does not exist
        name = f"no-such-model-{i}-" + "x" * 180
        failed = TranscriptionFailed(model=name, request_id=f"r{i}", code="404", reason="model not found")
        await bus.publish(subject_of(TranscriptionFailed, failed.model), codec.encode(failed))
    cancelled = TranscriptionFailed(model=M, request_id="c", code="499", reason="cancelled")
    await bus.publish(subject_of(TranscriptionFailed, M), codec.encode(cancelled))
    streamed = TranscriptionCompleted(model=M, request_id="s", audio_s=30.0, total_s=3.0, first_text_s=0.8)
    await bus.publish(subject_of(TranscriptionCompleted, M), codec.encode(streamed))
    snapshot = await bus.request(endpoints.METRICS_SNAPSHOT, SnapshotRequest())
    families = {f.name: f for f in text_string_to_metric_families(snapshot.prometheus)}
    models = {s.labels["model"] for f in families.values() for s in f.samples if "model" in s.labels}
    assert models == {M, "unknown"} and set(snapshot.models) == {M, "unknown"}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert (
        samples[("asrpro_requests_total", (("code", "404"), ("model", "unknown"), ("outcome", "client_error")))] == 20
    )
    assert samples[("asrpro_requests_total", (("code", "499"), ("model", M), ("outcome", "cancelled")))] == 1
    assert samples[("asrpro_time_to_first_text_seconds_sum", (("model", M),))] == 0.8
    assert snapshot.models[M].cancelled == 1 and snapshot.models[M].errors == 0
