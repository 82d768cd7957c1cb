"""Every request/reply subject with its request and reply types, declared once.

An actor serves one with ``@endpoint(endpoints.REGISTRY_GET)``; a caller sends one with
``bus.request(nc, endpoints.REGISTRY_GET, GetModel(id=...))`` and gets a ``ModelInfo`` back, typed.
A misspelled name is an AttributeError at import, never a subscription to nothing.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from schemas import subjects
from schemas.gpu import Allocate, Allocation, Bind, GpuStatus, GpuStatusRequest, Release, Released
from schemas.lifecycle import (
    BreakerClosed,
    CloseBreaker,
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.metrics import MetricsSnapshot, SnapshotRequest
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel
from schemas.transcribe import TranscribeRequest, TranscriptionResult

Req = TypeVar("Req")
Rep = TypeVar("Rep")


class Rpc(Generic[Req, Rep]):
    """A request/reply subject and what travels on it."""

    __slots__ = ("reply", "request", "subject")

    def __init__(self, subject: str, request: type[Req], reply: type[Rep]) -> None:
        self.subject = subject
        self.request = request
        self.reply = reply

    def at(self, token: str) -> Rpc[Req, Rep]:
        """The concrete subject of a wildcard one: ``TRANSCRIBE.at("whisper-tiny.en")``."""
        if not self.subject.endswith(".>"):
            raise ValueError(f"{self.subject} has no wildcard to fill")
        return Rpc(self.subject[:-1] + token, self.request, self.reply)

    def __repr__(self) -> str:
        return f"Rpc({self.subject!r}, {self.request.__name__} -> {self.reply.__name__})"


REGISTRY_LIST = Rpc(subjects.REGISTRY_LIST, ListModels, ModelList)
REGISTRY_GET = Rpc(subjects.REGISTRY_GET, GetModel, ModelInfo)
REGISTRY_SET_DEFAULT = Rpc(subjects.REGISTRY_SET_DEFAULT, SetDefaultModel, ModelInfo)

LIFECYCLE_ENSURE = Rpc(subjects.LIFECYCLE_ENSURE, EnsureServer, ServerStatus)
LIFECYCLE_STOP = Rpc(subjects.LIFECYCLE_STOP, StopServer, StopReply)
LIFECYCLE_STATUS = Rpc(subjects.LIFECYCLE_STATUS, LifecycleStatusRequest, LifecycleStatus)

GPU_ALLOCATE = Rpc(subjects.GPU_ALLOCATE, Allocate, Allocation)
GPU_RELEASE = Rpc(subjects.GPU_RELEASE, Release, Released)
GPU_BIND = Rpc(subjects.GPU_BIND, Bind, Allocation)
GPU_STATUS = Rpc(subjects.GPU_STATUS, GpuStatusRequest, GpuStatus)

METRICS_SNAPSHOT = Rpc(subjects.METRICS_SNAPSHOT, SnapshotRequest, MetricsSnapshot)

RECOVERY_CLOSE_BREAKER = Rpc(subjects.RECOVERY_CLOSE_BREAKER, CloseBreaker, BreakerClosed)

# One endpoint for every model: the model is the subject's last part (ids may contain dots).
TRANSCRIBE = Rpc(subjects.TRANSCRIBE_ALL, TranscribeRequest, TranscriptionResult)

ALL = (
    REGISTRY_LIST,
    REGISTRY_GET,
    REGISTRY_SET_DEFAULT,
    LIFECYCLE_ENSURE,
    LIFECYCLE_STOP,
    LIFECYCLE_STATUS,
    GPU_ALLOCATE,
    GPU_RELEASE,
    GPU_BIND,
    GPU_STATUS,
    METRICS_SNAPSHOT,
    RECOVERY_CLOSE_BREAKER,
    TRANSCRIBE,
)
