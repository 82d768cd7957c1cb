"""Scheduling decisions of the lifecycle actor, as plain functions of its state (unit-testable)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from schemas.durations import NEVER


class Running(Protocol):
    """What the policies need to know about a running model server."""

    model_id: str
    state: str
    last_activity: float
    inflight: dict[str, float]


S = TypeVar("S", bound=Running)


def idle_timeout(keep_alive: float | None, model_timeout: float | None, default: float) -> float:
    """Seconds of idleness before a stop (NEVER = -1: never). The last request's keep_alive wins, then the
    model's own inactivity_timeout, then lifecycle.inactivity_timeout."""
    for value in (keep_alive, model_timeout):
        if value is not None:
            return NEVER if value < 0 else value
    return default


def expires_at(last_activity: float, busy: bool, timeout: float) -> float | None:
    if busy or timeout == NEVER:
        return None
    return last_activity + timeout


def eviction_order(servers: Iterable[S], exclude: str, locked: Sequence[str] = ()) -> list[S]:
    """Servers that may be stopped to make room, least recently used first. One serving a request is never
    among them, nor one whose lock is held (being started, checked or stopped)."""
    idle = [s for s in servers if s.model_id != exclude and s.state == "ready" and not s.inflight]
    return sorted((s for s in idle if s.model_id not in locked), key=lambda s: s.last_activity)
