from __future__ import annotations

import msgspec


class SnapshotRequest(msgspec.Struct, kw_only=True):
    pass


class ModelCounters(msgspec.Struct, kw_only=True):
    requests: int = 0
    errors: int = 0
    starts: int = 0
    ready: int = 0
    stops: int = 0
    failures: int = 0
    crashes: int = 0
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0


class MetricsSnapshot(msgspec.Struct, kw_only=True):
    models: dict[str, ModelCounters]
    events_seen: int
    prometheus: str  # the same numbers in the Prometheus text format
