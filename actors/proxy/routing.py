"""Which node serves a request: the proxies' cluster-wide decision, a plain function of what they watch (the
nodes' heartbeats in ASR_NODES, the servers' records in ASR_SERVERS).

A model ready on this node is served here (no hop); ready elsewhere, on one of those nodes (chosen at random, so
load spreads); starting somewhere, there (its lifecycle actor holds the start, a second node would start another
copy); running nowhere, on the node with room for it: GPU memory free on one of its devices without evicting
anything, then a free container slot; this node first among equals, then the one with the most free memory. When
no node has room, this node — its lifecycle actor evicts, falls back to the CPU or answers 503 as on one host."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Final

from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord
from schemas.registry import ModelInfo


def best_free_mb(node: NodeRecord) -> int:
    return max((d.free_mb for d in node.devices), default=0)


def has_room(node: NodeRecord, model: ModelInfo) -> bool:
    """Room without stopping anything: a container slot, and GPU memory on one device (or the CPU, where the model
    may fall back to it and the node has no GPU)."""
    if node.max_containers and len(node.servers) >= node.max_containers:
        return False
    if model.gpu_memory_mb <= 0:
        return True
    if not node.devices:
        return model.cpu_fallback
    return best_free_mb(node) >= model.gpu_memory_mb


PLACING: Final = "placing"  # the state of a placement claim (schemas.kv.PLACEMENT_CLAIM)


def choose_node(
    model: ModelInfo,
    me: str,
    nodes: dict[str, NodeRecord],
    servers: Iterable[ServerStatus],
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
    claim_valid_s: float = 90.0,
    now: float | None = None,
) -> tuple[str, bool]:
    """The node that should serve `model` now (see the module's doc), and whether that is a new placement (the
    model runs, starts or is claimed nowhere). `nodes` are the live ones."""
    now = time.time() if now is None else now
    usable = {name for name in nodes if name not in exclude} | ({me} - exclude)
    # A server's record is its node's word that it runs there (a lost node's records are cleared by the janitors):
    # it counts even while our view of the heartbeats lags, unless that node just failed us.
    mine = [s for s in servers if s.model == model.id and s.node and s.node not in exclude]
    ready = [s.node for s in mine if s.state == "ready" and s.url]
    if me in ready:
        return me, False
    if ready:
        return random.choice(sorted(set(ready))), False
    claimed = [s for s in mine if s.state == PLACING and now - (s.started_at or 0.0) < claim_valid_s]
    starting = sorted({s.node for s in mine if s.state == "starting"} | {s.node for s in claimed})
    if starting:
        return (me if me in starting else starting[0]), False
    candidates = [n for name, n in nodes.items() if name in usable]
    # Weights are per host: a node that has the model, where any has it.
    candidates = [n for n in candidates if model.id in n.installed] or candidates
    roomy = [n for n in candidates if has_room(n, model)]
    if me in usable and any(n.name == me for n in roomy):
        return me, True
    if roomy:
        return max(roomy, key=lambda n: (best_free_mb(n), n.name)).name, True
    # No room anywhere: a node that has the model evicts or waits (this one first).
    having = [n.name for n in candidates]
    if me in usable and (me in having or not any(model.id in n.installed for n in nodes.values())):
        return me, True
    return (sorted(having)[0] if having else (me if me not in exclude else (sorted(usable) or [me])[0])), True
