"""Metrics actor: counts what the events say and answers snapshots (also as Prometheus text)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from framework.actor import Actor, endpoint, on_event
from framework.config import Config
from schemas import endpoints
from schemas.events import (
    EVENT_TYPES,
    BreakerChanged,
    Event,
    RestartScheduled,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionStarted,
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
        r = self.registry
        self.load_time = Histogram(
            "asrpro_model_load_seconds",
            "From a server's start to its first healthy answer (model load included)",
            ["model", "runtime"],
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        self.running = Gauge("asrpro_servers_running", "Model servers running now", ["model"], registry=r)
        self.ready_since = Gauge(
            "asrpro_server_ready_timestamp_seconds",
            "When the running server became ready (uptime = now - this)",
            ["model"],
            registry=r,
        )
        self.stops = Counter("asrpro_server_stops", "Servers stopped, by reason", ["model", "reason"], registry=r)
        self.restarts = Counter("asrpro_server_restarts", "Restarts scheduled by recovery", ["model"], registry=r)
        self.breaker = Gauge(
            "asrpro_breaker_open", "1 while the model's circuit breaker is open or half-open", ["model"], registry=r
        )
        self.rejected = Counter(
            "asrpro_requests_rejected", "Requests refused, by HTTP status and kind", ["model", "code"], registry=r
        )
        self.queue_depth = Gauge(
            "asrpro_queue_depth",
            "Requests waiting for a slot of the model, as a proxy last reported",
            ["model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "asrpro_queue_wait_seconds",
            "Time a request waited for a slot of its model",
            ["model"],
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
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
            self.queue_wait.labels(event.model).observe(event.queue_s)
            self.queue_depth.labels(event.model).set(event.waiting)
        elif isinstance(event, TranscriptionFailed):
            c.requests += 1
            c.errors += 1
            self.requests.labels(event.model, "error").inc()
            if event.code.startswith("4"):
                self.rejected.labels(event.model, event.code).inc()
        elif isinstance(event, TranscriptionStarted):
            self.queue_depth.labels(event.model).set(event.waiting)
        elif isinstance(event, RestartScheduled):
            self.restarts.labels(event.model).inc()
        elif isinstance(event, BreakerChanged):
            self.breaker.labels(event.model).set(0 if event.state == "closed" else 1)
        else:
            if isinstance(event, ServerStarting):
                c.starts += 1
            elif isinstance(event, ServerReady):
                c.ready += 1
                self.running.labels(event.model).set(1)
                self.ready_since.labels(event.model).set(event.at)
                if not event.adopted:
                    self.load_time.labels(event.model, event.runtime).observe(event.startup_s)
            elif isinstance(event, ServerStopped):
                c.stops += 1
                self.running.labels(event.model).set(0)
                self.stops.labels(event.model, event.reason).inc()
            elif isinstance(event, ServerFailed):
                c.failures += 1
            elif isinstance(event, ServerCrashed):
                c.crashes += 1
                self.running.labels(event.model).set(0)
                self.stops.labels(event.model, "crashed").inc()
            self.server_events.labels(event.model, kind(event)).inc()

    @endpoint(endpoints.METRICS_SNAPSHOT)
    async def snapshot(self, _: SnapshotRequest) -> MetricsSnapshot:
        return MetricsSnapshot(
            models=self.models, events_seen=self.events_seen, prometheus=generate_latest(self.registry).decode()
        )
