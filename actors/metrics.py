"""Metrics actor: counts what the events say and answers snapshots (also as Prometheus text)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from framework.actor import Actor, endpoint, on_event
from framework.config import Config
from schemas import endpoints
from schemas.events import (
    EVENT_TYPES,
    Event,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
    kind,
)
from schemas.metrics import MetricsSnapshot, ModelCounters, SnapshotRequest


class Metrics(Actor):
    """Counters and histograms of requests and model server lifecycles."""

    name = "metrics"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.models: dict[str, ModelCounters] = {}
        self.events_seen = 0
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "asrpro_requests", "Transcription requests", ["model", "outcome"], registry=self.registry
        )
        self.server_events = Counter(
            "asrpro_server_events", "Model server lifecycle events", ["model", "type"], registry=self.registry
        )
        self.audio = Counter("asrpro_audio_seconds", "Seconds of audio transcribed", ["model"], registry=self.registry)
        self.latency = Histogram(
            "asrpro_request_duration_seconds",
            "Time in the model proxy per request, cold starts included",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )

    # Counting from the stream rather than from live messages: a restarted metrics actor counts everything
    # the stream still holds (nats.events_max_age) instead of starting from zero.
    @on_event(*EVENT_TYPES, replay="all")
    async def count(self, event: Event) -> None:
        self.events_seen += 1
        c = self.models.setdefault(event.model, ModelCounters())
        if isinstance(event, TranscriptionCompleted):
            c.requests += 1
            c.audio_seconds += event.audio_s
            c.processing_seconds += event.total_s
            self.requests.labels(event.model, "ok").inc()
            self.audio.labels(event.model).inc(event.audio_s)
            self.latency.labels(event.model).observe(event.total_s)
        elif isinstance(event, TranscriptionFailed):
            c.requests += 1
            c.errors += 1
            self.requests.labels(event.model, "error").inc()
        else:
            if isinstance(event, ServerStarting):
                c.starts += 1
            elif isinstance(event, ServerReady):
                c.ready += 1
            elif isinstance(event, ServerStopped):
                c.stops += 1
            elif isinstance(event, ServerFailed):
                c.failures += 1
            elif isinstance(event, ServerCrashed):
                c.crashes += 1
            self.server_events.labels(event.model, kind(event)).inc()

    @endpoint(endpoints.METRICS_SNAPSHOT)
    async def snapshot(self, _: SnapshotRequest) -> MetricsSnapshot:
        return MetricsSnapshot(
            models=self.models, events_seen=self.events_seen, prometheus=generate_latest(self.registry).decode()
        )
