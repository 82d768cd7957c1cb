from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from schemas.registry import Installed


class EnsureServer(msgspec.Struct, kw_only=True):
    """Make sure a model server runs and is healthy; counts as activity."""

    model: str
    request_id: str = ""
    restart: bool = False  # the caller saw the server fail: check it and replace it if dead
    # seconds after this request; 0 = stop right after; -1 = never (at most a week otherwise)
    keep_alive: Annotated[float, msgspec.Meta(ge=-1.0, le=7 * 24 * 3600.0)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0.0, le=86400.0)] | None = None  # the caller's wait, admission included
    probe: bool = False  # the recovery actor's half-open probe: allowed through an open circuit breaker


# A server record's state; `placing` is a proxy's placement claim (ASR_SERVERS key _placing.<model>), not a server.
ServerState = Literal["placing", "starting", "ready", "stopping", "stopped", "failed"]


class ServerStatus(msgspec.Struct, kw_only=True):
    model: str
    state: ServerState
    runtime: str
    url: str = ""
    pid: int | None = None
    container_id: str | None = None
    device: str = "cpu"  # where the engine runs, as its own /health says ("cuda:0", "cpu"); not the allocation
    compute_type: str = ""  # the engine's, as it reports it ("float16", "int8")
    started_at: float | None = None
    last_activity: float | None = None
    expires_at: float | None = None
    error: str = ""
    cold_start: bool = False  # this ensure had to start the server
    memory_mb: int = 0  # GPU memory allocated to it
    inflight: int = 0  # requests being served
    keep_alive: float | None = None  # seconds of idleness before it stops; -1 = never
    rss_mb: float | None = None  # resident memory of the server's process, where its pid is known
    node: str = ""  # the node (node.name) whose lifecycle actor runs it


class StopServer(msgspec.Struct, kw_only=True):
    model: str
    reason: Literal["requested"] = "requested"  # what an operator's stop is called in its `stopped` event
    force: bool = False  # stop even while requests are in flight (otherwise 409)


class StopReply(msgspec.Struct, kw_only=True):
    model: str
    stopped: bool


class LifecycleStatusRequest(msgspec.Struct, kw_only=True):
    model: str | None = None


class BreakerState(msgspec.Struct, kw_only=True):
    model: str
    state: Literal["open", "half_open"]  # closed breakers are not listed
    reason: str
    retry_at: float | None = None


class CloseBreaker(msgspec.Struct, kw_only=True):
    """An operator closes a model's circuit breaker (asr.recovery.close_breaker)."""

    model: str
    by: str  # who: shown in the `breaker` event


class BreakerClosed(msgspec.Struct, kw_only=True):
    model: str
    was: Literal["closed", "open", "half_open"]  # the state it had


class LifecycleStatus(msgspec.Struct, kw_only=True):
    runtime: str
    runtime_reason: str
    servers: list[ServerStatus]
    breakers: list[BreakerState] = []


class PullModel(msgspec.Struct, kw_only=True):
    """Pull a model's weights onto the node whose lifecycle actor is asked (asr.lifecycle.pull.<node>)."""

    model: str


class PullProgress(msgspec.Struct, kw_only=True):
    """A partial reply of a pull (Asr-Partial): what it does now and how far (`completed` of `total` steps or
    bytes, as the step counts them; 0 of 0 while it cannot tell)."""

    model: str
    status: str
    completed: int = 0
    total: int = 0


class PullResult(msgspec.Struct, kw_only=True):
    model: str
    pulled: bool  # False: it was installed already
    installed: Installed
