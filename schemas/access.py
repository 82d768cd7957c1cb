"""Who may publish and subscribe where, derived from the declarations beside the types.

An event type declares its `owner`, an `Rpc` its `server` and `callers`, a `Topic` (below) its publishers and
subscribers. nats.conf's actor permissions and every application's permissions are rendered from these
(asrpro/nats_users.py), so a new subject is declared once and its rights follow; the event-ownership and isolation
tests derive their tables from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import endpoints, subjects
from schemas.endpoints import ADMIN_APPS, APPS, Rpc
from schemas.events import EVENT_TYPES, subject_of
from schemas.jobs import PublicJob
from schemas.transcribe import CancelTranscription, TranscriptionProgress

# The actors' NATS users (nats.conf defines them); "admin" is the operator's, allowed everything.
ACTORS = ("registry", "lifecycle", "gpu", "proxy", "recovery", "metrics", "gateway", "jobs", "live")
# Applications with scope events or admin (asrpro/nats_users.py) also follow events and progress live.
EVENT_READERS = "event-reading-applications"


@dataclass(frozen=True)
class Topic:
    """A core subject for plain messages (not requests, not history): who publishes, who subscribes."""

    subject: str
    message: type
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]


# A requester that gave up (asr.cancel.<request id>): the proxy serving it stops. Only the request's cancel token
# makes a cancellation count, so anyone who may request may cancel.
CANCEL = Topic(
    subjects.CANCEL_ALL, CancelTranscription, publishers=("gateway", "jobs", "live", APPS), subscribers=("proxy",)
)
# Progress of a transcription (asr.progress.<model>), live only.
PROGRESS = Topic(
    subjects.PROGRESS_ALL, TranscriptionProgress, publishers=("proxy",), subscribers=("gateway", EVENT_READERS)
)
# A job's state changes (asr.jobs.state.<owner>.<job id>): each application reads only its own owner's (granted per
# application in asrpro/nats_users.py), admin applications all.
JOB_STATE = Topic(subjects.JOBS_STATE_ALL, PublicJob, publishers=("jobs",), subscribers=(ADMIN_APPS,))
# A live session's client events (schemas/live.py): the gateway's sessions on asr.live.in.<session>; an
# application's own on asr.live.app.<user>.in.<session>, granted to each application for its own user only.
LIVE_IN = Topic(subjects.LIVE_IN_ALL, dict, publishers=("gateway",), subscribers=("live",))
LIVE_APP_IN = Topic(subjects.LIVE_APP_IN_ALL, dict, publishers=(), subscribers=("live",))
TOPICS = (CANCEL, PROGRESS, JOB_STATE, LIVE_IN, LIVE_APP_IN)


def own_jobs_rights(user: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) an application needs for its own jobs and live sessions over NATS: its requests and
    its sessions' events, its jobs' states."""
    publish = [subjects.jobs_app(user, ">"), subjects.live_app(user, ">")]
    return publish, [subjects.job_state(subjects.nats_owner(user), ">")]


def _rpc_subjects(rpc: Rpc[Any, Any]) -> list[str]:
    """The subjects `rpc` travels on: its plain one, and every node's copy of a per-node one."""
    found = [rpc.subject] if rpc.plain else []
    if rpc.per_node:
        found.append(subjects.on_node(rpc.subject, "*"))
    return found


def publish_rights(*roles: str) -> list[str]:
    """The asr.* subjects these roles may publish on: events they own, requests they may make, topics they feed."""
    found: list[str] = []
    for role in roles:
        found += [subject_of(t) for t in EVENT_TYPES if t.owner == role]
    for rpc in endpoints.ALL:
        if set(rpc.callers) & set(roles):
            found += _rpc_subjects(rpc)
    found += [t.subject for t in TOPICS if set(t.publishers) & set(roles)]
    return list(dict.fromkeys(found))


def serve_rights(*roles: str) -> list[str]:
    """The asr.* subjects these roles may subscribe to: the requests they serve and the topics they follow."""
    found: list[str] = []
    for rpc in endpoints.ALL:
        if rpc.server in roles:
            found += _rpc_subjects(rpc)
    found += [t.subject for t in TOPICS if set(t.subscribers) & set(roles)]
    return list(dict.fromkeys(found))


def application_roles(scope: str) -> tuple[str, ...]:
    """The roles of an application of this scope (transcribe < events < admin)."""
    return {
        "transcribe": (APPS,),
        "events": (APPS, EVENT_READERS),
        "admin": (APPS, EVENT_READERS, ADMIN_APPS),
    }[scope]


def application_subscriptions(scope: str) -> list[str]:
    """What an application of this scope may subscribe to besides its own inbox: events and progress, live."""
    roles = application_roles(scope)
    return [subjects.EVENTS_ALL, *serve_rights(*roles)] if EVENT_READERS in roles else []


def object_bucket_rights(bucket: str, *, write: bool) -> list[str]:
    """What a user needs to use object store bucket `bucket`: the owner puts and deletes (write), the proxy reads
    and deletes. The owner may not create consumers on it: nats-server does not check a push consumer's delivery
    subject against its creator's permissions, so a consumer would let it publish its bytes anywhere."""
    stream = f"OBJ_{bucket}"
    common = [
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.PURGE.{stream}",
        f"$O.{bucket}.M.>",
    ]
    if write:
        return [*common, f"$O.{bucket}.C.>"]
    consume = [
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]
    return [*common, *consume]
