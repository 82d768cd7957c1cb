"""The wire contract: msgspec structs and NATS subjects. Every actor imports this, none imports another."""

from schemas import subjects
from schemas.codec import JSON, MSGPACK, DecodeError, decode, encode
from schemas.errors import AsrError, ErrorReply
from schemas.events import (
    DefaultModelChanged,
    Event,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
)
from schemas.gpu import Allocate, Allocation, GpuDevice, GpuStatus, GpuStatusRequest, Release, Released
from schemas.lifecycle import (
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.metrics import MetricsSnapshot, ModelCounters, SnapshotRequest
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel
from schemas.transcribe import RESPONSE_FORMATS, Segment, Timing, TranscribeRequest, TranscriptionResult

__all__ = [
    "JSON",
    "MSGPACK",
    "RESPONSE_FORMATS",
    "Allocate",
    "Allocation",
    "AsrError",
    "DecodeError",
    "DefaultModelChanged",
    "EnsureServer",
    "ErrorReply",
    "Event",
    "GetModel",
    "GpuDevice",
    "GpuStatus",
    "GpuStatusRequest",
    "LifecycleStatus",
    "LifecycleStatusRequest",
    "ListModels",
    "MetricsSnapshot",
    "ModelCounters",
    "ModelInfo",
    "ModelList",
    "Release",
    "Released",
    "Segment",
    "ServerCrashed",
    "ServerFailed",
    "ServerReady",
    "ServerStarting",
    "ServerStatus",
    "ServerStopped",
    "SetDefaultModel",
    "SnapshotRequest",
    "StopReply",
    "StopServer",
    "Timing",
    "TranscribeRequest",
    "TranscriptionCompleted",
    "TranscriptionFailed",
    "TranscriptionResult",
    "decode",
    "encode",
    "subjects",
]
