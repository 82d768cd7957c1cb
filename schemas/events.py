"""Lifecycle and request events: one tagged union, published on
``asr.events.<type>.<model>`` and kept in the JetStream stream ``ASR_EVENTS``."""

from __future__ import annotations

import time
from typing import ClassVar, Literal, get_args

import msgspec

from schemas import codec, subjects


class _Event(msgspec.Struct, kw_only=True, tag_field="type"):
    # The only NATS user allowed to publish this type, declared by each type: nats.conf is rendered from it.
    owner: ClassVar[str]
    model: str
    at: float = msgspec.field(default_factory=time.time)
    source: str = ""
    node: str = ""  # the node whose actor published it (a server's events: the node it runs on)


class ServerStarting(_Event, tag="starting"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    reason: str = ""


class ServerReady(_Event, tag="ready"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    url: str
    pid: int | None = None
    container_id: str | None = None
    device: str = "cpu"
    startup_s: float = 0.0
    adopted: bool = False  # found already running after a lifecycle restart


# Why a server stopped: idle (default idle timeout), keep_alive (the request's keep_alive ran out), requested (an
# operator), evicted (its GPU memory was needed), shutdown (its lifecycle actor stopped), replaced (unhealthy, a new
# one starts), failed (it did not come up), node_lost (its host is gone; announced by another node's janitor).
StopReason = Literal["idle", "keep_alive", "requested", "evicted", "shutdown", "replaced", "failed", "node_lost"]
# Why a start failed: start (the server did not come up), no_room (no GPU memory), breaker (circuit open), gpu (placed
# on a GPU this runtime cannot use: no CUDA image, libraries or container toolkit), not_installed (no weights here).
FailureCause = Literal["start", "no_room", "breaker", "gpu", "not_installed"]
BreakerStateName = Literal["closed", "open", "half_open"]


class ServerStopped(_Event, tag="stopped"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    reason: StopReason


class ServerFailed(_Event, tag="failed"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    reason: str
    cause: FailureCause = "start"


class ServerCrashed(_Event, tag="crashed"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    reason: str
    exit_code: int | None = None


class ServerUnhealthy(_Event, tag="unhealthy"):
    owner: ClassVar[str] = "lifecycle"
    runtime: str
    reason: str  # what /health said, or why it did not answer


class RestartScheduled(_Event, tag="restart_scheduled"):
    owner: ClassVar[str] = "recovery"
    attempt: int  # 1 for the first restart since the model was last stable
    delay_s: float
    reason: str


class BreakerChanged(_Event, tag="breaker"):
    owner: ClassVar[str] = "recovery"
    state: BreakerStateName
    reason: str = ""
    retry_at: float | None = None  # when an open breaker will let a probe through
    failures: int = 0


class TranscriptionStarted(_Event, tag="transcribing"):
    owner: ClassVar[str] = "proxy"
    request_id: str
    audio_bytes: int = 0
    waiting: int = 0  # requests still waiting for a slot of the model at this proxy
    filename: str = ""
    keep_alive: float | None = None  # what the request asked for (seconds; -1 never): the lifecycle actor applies it


class TranscriptionCompleted(_Event, tag="transcribed"):
    owner: ClassVar[str] = "proxy"
    request_id: str
    audio_s: float
    total_s: float
    cold_start: bool = False
    filename: str = ""
    result_length: int = 0  # characters of text
    queue_s: float = 0.0  # waiting for a slot of the model
    waiting: int = 0  # requests waiting for a slot of the model at this proxy when this one finished
    first_text_s: float | None = None  # a streamed request: from its arrival to its first text sent back


class TranscriptionFailed(_Event, tag="transcription_failed"):
    owner: ClassVar[str] = "proxy"
    request_id: str
    code: str  # the HTTP status
    reason: str
    kind: str | None = None  # the symbolic code (schemas.errors.ErrorCode), as HTTP clients see it in `code`
    filename: str = ""


class LiveSessionOpened(_Event, tag="session_opened"):
    owner: ClassVar[str] = "live"
    session: str = ""


class LiveSessionClosed(_Event, tag="session_closed"):
    owner: ClassVar[str] = "live"
    session: str = ""
    reason: str = ""  # client gone, idle, too long, shutdown, slow client, lost
    audio_s: float = 0.0  # audio the client sent
    duration_s: float = 0.0
    utterances: int = 0
    # Seconds from the end of the audio a delta was decoded from to the delta's sending, each delta of the
    # session (at most the last 1000).
    delta_latency_s: list[float] = []


class DefaultModelChanged(_Event, tag="default_changed"):
    owner: ClassVar[str] = "registry"
    previous: str


Event = (
    ServerStarting
    | ServerReady
    | ServerStopped
    | ServerFailed
    | ServerCrashed
    | ServerUnhealthy
    | RestartScheduled
    | BreakerChanged
    | TranscriptionStarted
    | TranscriptionCompleted
    | TranscriptionFailed
    | LiveSessionOpened
    | LiveSessionClosed
    | DefaultModelChanged
)


EVENT_TYPES: tuple[type[Event], ...] = get_args(Event)


def owned_by(user: str) -> list[type[Event]]:
    return [t for t in EVENT_TYPES if t.owner == user]


def tag_of(event_type: type[Event]) -> str:
    tag = event_type.__struct_config__.tag
    assert isinstance(tag, str), f"{event_type.__name__} is not a tagged event"
    return tag


def kind(event: Event) -> str:
    return tag_of(type(event))


def subject_of(event_type: type[Event], model: str = ">") -> str:
    """Where events of this type are published (``asr.events.<type>.<model>``); every model by default."""
    return subjects.event(tag_of(event_type), model)


_msgpack_decoder = msgspec.msgpack.Decoder(Event)
_json_decoder = msgspec.json.Decoder(Event)


def decode_event(data: bytes, headers: dict[str, str] | None = None) -> Event:
    """An event as published (msgpack, or JSON when its Content-Type says so); msgspec errors on bad input."""
    if codec.content_type(headers) == codec.JSON:
        return _json_decoder.decode(data)
    return _msgpack_decoder.decode(data)
