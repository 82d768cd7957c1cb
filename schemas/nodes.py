"""Nodes: one host's share of the work (its model servers, its GPUs), announced by its lifecycle actor."""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec

from schemas.gpu import GpuDevice


class NodeRecord(msgspec.Struct, kw_only=True):
    """The heartbeat a node's lifecycle actor keeps in the KV bucket ASR_NODES (key: the node's name). The bucket's
    TTL removes the record of a node that stopped beating; a clean stop deletes it."""

    name: str
    host: str  # the machine it runs on: a node name alive on another host is refused
    instance: str
    started_at: float
    heartbeat_at: float
    runtime: str
    devices: list[GpuDevice] = []
    servers: list[str] = []  # models it runs
    max_containers: int = 0  # lifecycle.max_concurrent_containers there (0: no limit)
    installed: list[str] = []  # models whose weights (or image) this host has: weights are per host


def alive(nodes: Iterable[NodeRecord], dead_after: float, now: float | None = None) -> dict[str, NodeRecord]:
    """Nodes whose last heartbeat is younger than dead_after (a KV TTL drops no watched value: we look) — younger
    than the newest heartbeat seen, not than the clock: a watch that fell behind for a moment (its server lost,
    its consumer re-made) shows every node equally old, and must not make them all look dead."""
    nodes = list(nodes)
    now = time.time() if now is None else now
    newest = max((n.heartbeat_at for n in nodes), default=now)
    return {n.name: n for n in nodes if min(now, newest) - n.heartbeat_at < dead_after}
