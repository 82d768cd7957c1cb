from __future__ import annotations

import msgspec

# Histogram buckets for request latencies, shared by the metrics actor and the gateway so that their figures
# compare: fine around the typical latencies (a 0.53-s median must not read as 0.75 s), coarse out to long files.
LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 2.5, 3,
                   4, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300, 600)  # fmt: skip


class SnapshotRequest(msgspec.Struct, kw_only=True):
    pass


class ModelCounters(msgspec.Struct, kw_only=True):
    requests: int = 0
    errors: int = 0  # failed through the service's fault (5xx)
    client_errors: int = 0  # refused as the client's mistake (4xx: bad audio, unknown model, full queue)
    cancelled: int = 0  # given up by their requesters
    starts: int = 0
    ready: int = 0
    stops: int = 0
    failures: int = 0
    crashes: int = 0
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0
    live_sessions: int = 0  # open now (WS /v1/realtime, asr.live.*), from the live actor's events


class MetricsSnapshot(msgspec.Struct, kw_only=True):
    models: dict[str, ModelCounters]
    events_seen: int
    prometheus: str  # the same numbers in the Prometheus text format
