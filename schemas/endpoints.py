"""Every request/reply subject with its request and reply types, declared once.

An actor serves one with ``@endpoint(endpoints.REGISTRY_GET)``; a caller sends one with
``bus.request(nc, endpoints.REGISTRY_GET, GetModel(id=...))`` and gets a ``ModelInfo`` back, typed.
A misspelled name is an AttributeError at import, never a subscription to nothing.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from schemas import subjects
from schemas.gpu import Allocate, Allocation, Bind, GpuStatus, GpuStatusRequest, Release, Released
from schemas.jobs import (
    AppJobQuery,
    AppListJobs,
    AppSubmit,
    JobPage,
    JobQuery,
    JobRecord,
    JobResult,
    ListJobs,
    PublicJob,
    PublicPage,
    PublicResult,
    SecretQuery,
    SubmitJob,
    UploadAck,
    UploadChunk,
    UploadDone,
    UploadTicket,
    WebhookSecret,
)
from schemas.lifecycle import (
    BreakerClosed,
    CloseBreaker,
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    PullModel,
    PullResult,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.live import LiveClosed, LiveOpen
from schemas.metrics import MetricsSnapshot, SnapshotRequest
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel
from schemas.transcribe import TranscribeRequest, TranscriptionResult

Req = TypeVar("Req")
Rep = TypeVar("Rep")


class Rpc(Generic[Req, Rep]):
    """A request/reply subject and what travels on it."""

    __slots__ = ("callers", "per_node", "plain", "reply", "request", "server", "subject")

    def __init__(
        self,
        subject: str,
        request: type[Req],
        reply: type[Rep],
        *,
        server: str = "",
        callers: tuple[str, ...] = (),
        per_node: bool = False,
        plain: bool = True,
    ) -> None:
        self.subject = subject
        self.request = request
        self.reply = reply
        # Who serves it (an actor's NATS user) and who may call it (users, or `schemas.access` roles such as
        # APPS): nats.conf's permissions are rendered from these (schemas/access.py).
        self.server = server
        self.callers = callers
        # Served by each node's actor on `<subject>.<node>` as well: a caller that must reach one node's actor (its
        # lifecycle, its GPUs) uses `on(node)`; the plain subject reaches any, the nearest first.
        self.per_node = per_node
        self.plain = plain  # also served on the plain subject (False: only on each node's own copy)

    def on(self, node: str) -> Rpc[Req, Rep]:
        """This node's copy of a per-node subject: ``LIFECYCLE_ENSURE.on("gpu-box-2")``."""
        if not self.per_node:
            raise ValueError(f"{self.subject} is not served per node")
        return Rpc(subjects.on_node(self.subject, node), self.request, self.reply, server=self.server)

    def at(self, token: str) -> Rpc[Req, Rep]:
        """The concrete subject of a wildcard one: ``TRANSCRIBE.at("whisper-tiny.en")``."""
        if not self.subject.endswith(".>"):
            raise ValueError(f"{self.subject} has no wildcard to fill")
        return Rpc(self.subject[:-1] + token, self.request, self.reply, server=self.server)

    def on_subject(self, subject: str) -> Rpc[Req, Rep]:
        """This request on a concrete subject its own matches (asr.jobs.app.<user>.submit for asr.jobs.app.*.submit,
        a node's copy of a per-node one): a subject it does not match is a ValueError."""
        allowed = [self.subject] + ([subjects.on_node(self.subject, "*")] if self.per_node else [])
        if not any(subjects.matches(pattern, subject) for pattern in allowed):
            raise ValueError(f"{subject!r} is not a subject of {self.subject}")
        return Rpc(subject, self.request, self.reply, server=self.server)

    def __repr__(self) -> str:
        return f"Rpc({self.subject!r}, {self.request.__name__} -> {self.reply.__name__})"


# Callers that are not actors: every application (any scope), and applications of scope admin.
APPS = "applications"
ADMIN_APPS = "admin-applications"
# Each application on subjects that carry its own user name (asr.jobs.app.<user>.>): granted per application
# (schemas.access.own_jobs_rights), never the wildcard to all of them.
OWN_APP = "each-application-itself"
_FRONT = ("gateway", APPS)  # what every application may do, through the gateway or over NATS itself
_OPERATE = ("gateway", ADMIN_APPS)  # what an operator does: the gateway's admin routes, admin applications

REGISTRY_LIST = Rpc(subjects.REGISTRY_LIST, ListModels, ModelList, server="registry", callers=_FRONT)
REGISTRY_GET = Rpc(subjects.REGISTRY_GET, GetModel, ModelInfo, server="registry", callers=(*_FRONT, "jobs", "live"))
REGISTRY_SET_DEFAULT = Rpc(
    subjects.REGISTRY_SET_DEFAULT, SetDefaultModel, ModelInfo, server="registry", callers=_OPERATE
)
LIFECYCLE_ENSURE = Rpc(
    subjects.LIFECYCLE_ENSURE,
    EnsureServer,
    ServerStatus,
    server="lifecycle",
    callers=(*_OPERATE, "proxy", "recovery"),
    per_node=True,
)
LIFECYCLE_STOP = Rpc(
    subjects.LIFECYCLE_STOP, StopServer, StopReply, server="lifecycle", callers=_OPERATE, per_node=True
)
LIFECYCLE_PULL = Rpc(
    subjects.LIFECYCLE_PULL, PullModel, PullResult, server="lifecycle", callers=_OPERATE, per_node=True
)
LIFECYCLE_STATUS = Rpc(
    subjects.LIFECYCLE_STATUS,
    LifecycleStatusRequest,
    LifecycleStatus,
    server="lifecycle",
    callers=_FRONT,
    per_node=True,
)
GPU_ALLOCATE = Rpc(subjects.GPU_ALLOCATE, Allocate, Allocation, server="gpu", callers=("lifecycle",), per_node=True)
GPU_RELEASE = Rpc(subjects.GPU_RELEASE, Release, Released, server="gpu", callers=("lifecycle",), per_node=True)
GPU_BIND = Rpc(subjects.GPU_BIND, Bind, Allocation, server="gpu", callers=("lifecycle",), per_node=True)
GPU_STATUS = Rpc(
    subjects.GPU_STATUS, GpuStatusRequest, GpuStatus, server="gpu", callers=(*_OPERATE, "lifecycle"), per_node=True
)
METRICS_SNAPSHOT = Rpc(subjects.METRICS_SNAPSHOT, SnapshotRequest, MetricsSnapshot, server="metrics", callers=_OPERATE)
RECOVERY_CLOSE_BREAKER = Rpc(
    subjects.RECOVERY_CLOSE_BREAKER, CloseBreaker, BreakerClosed, server="recovery", callers=_OPERATE
)
# One endpoint for every model: the model is the subject's last part (ids may contain dots).
# The jobs actor decodes durable jobs through the proxies like any front door.
TRANSCRIBE = Rpc(
    subjects.TRANSCRIBE_ALL, TranscribeRequest, TranscriptionResult, server="proxy", callers=(*_FRONT, "jobs", "live")
)
# Durable jobs: the gateway asks the jobs actor, naming the owner (the API key's) it checked.
JOBS_SUBMIT = Rpc(subjects.JOBS_SUBMIT, SubmitJob, JobRecord, server="jobs", callers=("gateway",))
JOBS_GET = Rpc(subjects.JOBS_GET, JobQuery, JobRecord, server="jobs", callers=("gateway",))
JOBS_RESULT = Rpc(subjects.JOBS_RESULT, JobQuery, JobResult, server="jobs", callers=("gateway",))
JOBS_LIST = Rpc(subjects.JOBS_LIST, ListJobs, JobPage, server="jobs", callers=("gateway",))
JOBS_CANCEL = Rpc(subjects.JOBS_CANCEL, JobQuery, JobRecord, server="jobs", callers=("gateway",))
JOBS_SECRET = Rpc(subjects.JOBS_SECRET, SecretQuery, WebhookSecret, server="jobs", callers=("gateway",))
# Applications' own jobs over NATS: each may publish only on asr.jobs.app.<its user>.> (asrpro/nats_users.py), so the
# subject names the owner. The upload and its completion go to the node that gave the ticket (it holds the chunks).


def _own(op: str, request: type[Req], reply: type[Rep], per_node: bool = False) -> Rpc[Req, Rep]:
    return Rpc(
        subjects.jobs_app_all(op),
        request,
        reply,
        server="jobs",
        callers=(OWN_APP,),
        per_node=per_node,
        plain=not per_node,
    )


JOBS_APP_SUBMIT = _own("submit", AppSubmit, UploadTicket)
JOBS_APP_UPLOAD = _own("upload", UploadChunk, UploadAck, per_node=True)
JOBS_APP_COMPLETE = _own("complete", UploadDone, PublicJob, per_node=True)
JOBS_APP_GET = _own("get", AppJobQuery, PublicJob)
JOBS_APP_RESULT = _own("result", AppJobQuery, PublicResult)
JOBS_APP_LIST = _own("list", AppListJobs, PublicPage)
JOBS_APP_CANCEL = _own("cancel", AppJobQuery, PublicJob)
# A request handed to the proxies of one node (asr.forward.<node>.<model>); only proxies send it.
FORWARD = Rpc(
    subjects.FORWARD_ALL,
    TranscribeRequest,
    TranscriptionResult,
    server="proxy",
    callers=("proxy",),
    per_node=True,
    plain=False,
)
# The gateway's requests, to its own node's proxies first (asr.via.<node>.<model>); routed as TRANSCRIBE.
VIA = Rpc(
    subjects.VIA_ALL,
    TranscribeRequest,
    TranscriptionResult,
    server="proxy",
    callers=("gateway", "live"),
    per_node=True,
    plain=False,
)
# A live session (schemas/live.py): one request answered by a stream of events, for as long as the session lasts.
LIVE_OPEN = Rpc(subjects.LIVE_OPEN, LiveOpen, LiveClosed, server="live", callers=("gateway",), per_node=True)
LIVE_APP_OPEN = Rpc(subjects.live_app("*", "open"), LiveOpen, LiveClosed, server="live", callers=(OWN_APP,))

ALL = (
    REGISTRY_LIST,
    REGISTRY_GET,
    REGISTRY_SET_DEFAULT,
    LIFECYCLE_ENSURE,
    LIFECYCLE_STOP,
    LIFECYCLE_STATUS,
    LIFECYCLE_PULL,
    GPU_ALLOCATE,
    GPU_RELEASE,
    GPU_BIND,
    GPU_STATUS,
    METRICS_SNAPSHOT,
    RECOVERY_CLOSE_BREAKER,
    TRANSCRIBE,
    FORWARD,
    VIA,
    JOBS_SUBMIT,
    JOBS_GET,
    JOBS_RESULT,
    JOBS_LIST,
    JOBS_CANCEL,
    JOBS_SECRET,
    JOBS_APP_SUBMIT,
    JOBS_APP_UPLOAD,
    JOBS_APP_COMPLETE,
    JOBS_APP_GET,
    JOBS_APP_RESULT,
    JOBS_APP_LIST,
    JOBS_APP_CANCEL,
    LIVE_OPEN,
    LIVE_APP_OPEN,
)
