"""The cluster as one: the node records (ASR_NODES) and every live node's lifecycle status merged, so that any
gateway shows the same servers and breakers. On one host this is that host's node."""

from __future__ import annotations

import asyncio
import time

from gateway.connection import GatewayConnection
from schemas import endpoints
from schemas.errors import AsrError
from schemas.gpu import GpuStatusRequest
from schemas.lifecycle import BreakerState, LifecycleStatus, LifecycleStatusRequest
from schemas.nodes import NodeRecord

# A node silent this long is no longer listed (a lost one is listed as not alive until then).
FORGET_AFTER_S = 3600.0


async def node_records(conn: GatewayConnection) -> list[NodeRecord]:
    """The nodes as the gateway's watch of ASR_NODES saw them beat (a record whose TTL ran out stays in a watch:
    `alive` comes from the heartbeat's age)."""
    conn.client  # noqa: B018 -- 503 while the bus is down, as every route
    now = time.time()
    records = [r for r in conn.nodes.values.values() if now - r.heartbeat_at < FORGET_AFTER_S]
    return sorted(records, key=lambda r: r.name)


async def live_nodes(conn: GatewayConnection) -> list[str]:
    now, dead_after = time.time(), conn.config.node.dead_after
    return [r.name for r in await node_records(conn) if now - r.heartbeat_at < dead_after]


async def measured_mb(conn: GatewayConnection, nodes: list[str]) -> dict[tuple[str, str], int]:
    """(node, model) -> GPU memory the node's gpu actor measured for the model's server (NVML, per process)."""

    async def of(node: str) -> dict[tuple[str, str], int]:
        rpc = endpoints.GPU_STATUS.on(node) if node else endpoints.GPU_STATUS
        try:
            reply = await conn.request(rpc, GpuStatusRequest(), timeout=2.0)
        except AsrError:
            return {}  # its gpu actor does not answer: figures left out rather than made up
        return {(node, model): mb for model, mb in reply.measured_mb.items()}

    found: dict[tuple[str, str], int] = {}
    for part in await asyncio.gather(*(of(n) for n in nodes)):
        found.update(part)
    return found


async def lifecycle_status(conn: GatewayConnection, *, timeout: float = 5.0) -> LifecycleStatus:
    """Every live node's servers and the breakers, as one LifecycleStatus; a node that does not answer is left out
    (it is lost, or restarting); none answering is the error of the nearest lifecycle actor."""
    nodes = await live_nodes(conn)
    if len(nodes) <= 1:
        return await conn.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest(), timeout=timeout)
    asked = [conn.request(endpoints.LIFECYCLE_STATUS.on(n), LifecycleStatusRequest(), timeout=timeout) for n in nodes]
    replies = await asyncio.gather(*asked, return_exceptions=True)
    answered = [r for r in replies if isinstance(r, LifecycleStatus)]
    if not answered:
        return await conn.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest(), timeout=timeout)
    breakers: dict[str, BreakerState] = {}
    for reply in answered:
        breakers.update({b.model: b for b in reply.breakers})
    runtimes = sorted({r.runtime for r in answered})
    return LifecycleStatus(
        runtime=runtimes[0] if len(runtimes) == 1 else "mixed",
        runtime_reason="; ".join(sorted({r.runtime_reason for r in answered})),
        servers=sorted((s for r in answered for s in r.servers), key=lambda s: (s.model, s.node)),
        breakers=list(breakers.values()),
    )
