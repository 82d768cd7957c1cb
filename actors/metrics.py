"""Metrics actor: counts what the events say and answers snapshots (also as Prometheus text)."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from framework.actor import Actor, endpoint, on_event
from framework.config import Config
from schemas import endpoints, errors
from schemas.events import (
    EVENT_TYPES,
    BreakerChanged,
    Event,
    LiveSessionClosed,
    LiveSessionOpened,
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
from schemas.metrics import LATENCY_BUCKETS, MetricsSnapshot, ModelCounters, SnapshotRequest

# Client mistakes are not errors of the service: a request ends ok, as the client's fault, as ours, or cancelled.
Outcome = Literal["ok", "client_error", "server_error", "cancelled"]
UNKNOWN = "unknown"  # the label of every model name that is not in the catalogue (no series per made-up name)
RTF_BUCKETS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)


def outcome_of(code: str) -> Outcome:
    """A failed request's outcome from its HTTP status: 499 cancelled, 4xx the client's, the rest ours."""
    if code == errors.CLIENT_CLOSED:
        return "cancelled"
    return "client_error" if code.startswith("4") else "server_error"


class Metrics(Actor):
    """Counters and histograms of requests and model server lifecycles."""

    name = "metrics"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.known = set(config.models)  # label values come from the catalogue only
        self.models: dict[str, ModelCounters] = {}
        self.events_seen = 0
        self.registry = r = CollectorRegistry()
        ProcessCollector(namespace="asrpro_metrics", registry=r)  # this actor's own CPU and memory
        self.requests = Counter(
            "asrpro_requests",
            "Transcription requests, each counted once: outcome ok | client_error | server_error | cancelled, "
            "code the HTTP status",
            ["model", "outcome", "code"],
            registry=r,
        )
        self.server_events = Counter(
            "asrpro_server_events", "Model server lifecycle events", ["model", "type"], registry=r
        )
        self.audio = Counter("asrpro_audio_seconds", "Seconds of audio transcribed", ["model"], registry=r)
        self.latency = Histogram(
            "asrpro_request_duration_seconds",
            "Time in the model proxy per request, cold starts included",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "asrpro_real_time_factor",
            "Processing time / audio duration per request (below 1: faster than real time)",
            ["model"],
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.first_text = Histogram(
            "asrpro_time_to_first_text_seconds",
            "From a streamed request's arrival at the proxy to its first text sent back",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "asrpro_cold_starts", "Requests that waited for their model server to start", ["model"], registry=r
        )
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
        self.live_sessions = Gauge(
            "asrpro_live_sessions",
            "Live transcription sessions open (WS /v1/realtime, asr.live.*)",
            ["model"],
            registry=r,
        )
        self.live_audio = Counter(
            "asrpro_live_audio_seconds", "Seconds of audio live sessions sent", ["model"], registry=r
        )
        self.live_delta_latency = Histogram(
            "asrpro_live_delta_latency_seconds",
            "From the end of the audio a live delta was decoded from to the delta (counted when its session ends)",
            ["model"],
            buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=r,
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
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )

    def label(self, model: str) -> str:
        """A model's label value: its id when the catalogue has it, else one shared `unknown` (any application
        may ask for a made-up model, and each name would otherwise become series kept for ever)."""
        return model if model in self.known else UNKNOWN

    # Counting from the stream rather than from live messages: a restarted metrics actor counts everything
    # the stream still holds (nats.events_max_age) instead of starting from zero.
    @on_event(*EVENT_TYPES, replay="all")
    async def count(self, event: Event) -> None:
        self.events_seen += 1
        model = self.label(event.model)
        c = self.models.setdefault(model, ModelCounters())
        if isinstance(event, TranscriptionCompleted):
            c.requests += 1
            c.audio_seconds += event.audio_s
            c.processing_seconds += event.total_s
            self.requests.labels(model, "ok", "200").inc()
            self.audio.labels(model).inc(event.audio_s)
            self.latency.labels(model).observe(event.total_s)
            if event.audio_s > 0:
                self.rtf.labels(model).observe(event.total_s / event.audio_s)
            if event.first_text_s is not None:
                self.first_text.labels(model).observe(event.first_text_s)
            if event.cold_start:
                self.cold_starts.labels(model).inc()
            self.queue_wait.labels(model).observe(event.queue_s)
            self.queue_depth.labels(model).set(event.waiting)
        elif isinstance(event, TranscriptionFailed):
            c.requests += 1
            outcome = outcome_of(event.code)
            if outcome == "server_error":
                c.errors += 1
            elif outcome == "client_error":
                c.client_errors += 1
            else:
                c.cancelled += 1
            self.requests.labels(model, outcome, event.code if event.code.isdigit() else "500").inc()
        elif isinstance(event, TranscriptionStarted):
            self.queue_depth.labels(model).set(event.waiting)
        elif isinstance(event, RestartScheduled):
            self.restarts.labels(model).inc()
        elif isinstance(event, BreakerChanged):
            self.breaker.labels(model).set(0 if event.state == "closed" else 1)
        elif isinstance(event, LiveSessionOpened):
            c.live_sessions += 1
            self.live_sessions.labels(model).inc()
        elif isinstance(event, LiveSessionClosed):
            c.live_sessions = max(0, c.live_sessions - 1)
            self.live_sessions.labels(model).dec()
            self.live_audio.labels(model).inc(event.audio_s)
            for seconds in event.delta_latency_s:
                self.live_delta_latency.labels(model).observe(seconds)
        else:
            if isinstance(event, ServerStarting):
                c.starts += 1
            elif isinstance(event, ServerReady):
                c.ready += 1
                self.running.labels(model).set(1)
                self.ready_since.labels(model).set(event.at)
                if not event.adopted:
                    self.load_time.labels(model, event.runtime).observe(event.startup_s)
            elif isinstance(event, ServerStopped):
                c.stops += 1
                self.running.labels(model).set(0)
                self.stops.labels(model, event.reason).inc()
            elif isinstance(event, ServerFailed):
                c.failures += 1
            elif isinstance(event, ServerCrashed):
                c.crashes += 1
                self.running.labels(model).set(0)
                self.stops.labels(model, "crashed").inc()
            self.server_events.labels(model, kind(event)).inc()

    @endpoint(endpoints.METRICS_SNAPSHOT)
    async def snapshot(self, _: SnapshotRequest) -> MetricsSnapshot:
        return MetricsSnapshot(
            models=self.models, events_seen=self.events_seen, prometheus=generate_latest(self.registry).decode()
        )
