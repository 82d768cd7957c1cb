"""Operating the service: health, metrics, and what runs now (/api/ps: list, load, unload)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from framework.config import node_name
from gateway.cluster_view import lifecycle_status, live_nodes, measured_mb, node_records
from gateway.connection import Connection, GatewayConnection, Settings
from gateway.errors import GATEWAY_METRICS
from gateway.http_metrics import actor_processes, server_processes
from gateway.status import system_status
from schemas import endpoints, errors
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.gpu import GpuStatusRequest
from schemas.lifecycle import CloseBreaker, EnsureServer, ServerStatus, StopServer
from schemas.metrics import SnapshotRequest

router = APIRouter()
MB = 2**20  # the actors count MB; Prometheus wants base units


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def ps_entry(s: ServerStatus) -> dict[str, Any]:
    entry: dict[str, Any] = msgspec.to_builtins(s)
    entry.update(expires_at=_iso(s.expires_at), started_at=_iso(s.started_at), last_activity=_iso(s.last_activity))
    entry.pop("cold_start", None)
    return entry


@router.get("/health")
async def health(conn: Connection) -> JSONResponse:
    """`healthy` (a model loaded) or `ready` (none loaded): 200; `initializing` or `degraded` (with a reason):
    200, requests may fail; `unhealthy` (the bus is down): 503. Plus `current_model` (the default model) and
    `device`, as the original asrpro app reads them."""
    body = await system_status(conn)
    return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


@router.get("/metrics")
async def metrics(conn: Connection, config: Settings) -> PlainTextResponse:
    """The metrics actor's counters (kept from the event stream), what is true now (GPU memory per device and per
    model, requests in flight, the queue limits, the model servers' processes here) and the gateway's own."""
    snap = await conn.request(endpoints.METRICS_SNAPSHOT, SnapshotRequest())
    now = CollectorRegistry()
    allocated = Gauge("asrpro_gpu_memory_allocated_bytes", "GPU memory allocated to models", ["device"], registry=now)
    total = Gauge("asrpro_gpu_memory_total_bytes", "GPU memory of the device", ["device"], registry=now)
    busy = Gauge("asrpro_gpu_utilization_percent", "GPU utilisation (NVML), where measured", ["device"], registry=now)
    per_model = Gauge(
        "asrpro_model_gpu_memory_bytes",
        "GPU memory of a model's server: allocated (declared or measured before) and measured (NVML, per process)",
        ["model", "node", "kind"],
        registry=now,
    )
    inflight = Gauge("asrpro_requests_inflight", "Requests being served per model", ["model"], registry=now)
    uptime = Gauge("asrpro_server_uptime_seconds", "Seconds since the running server started", ["model"], registry=now)
    limits = Gauge(
        "asrpro_queue_limit",
        "Per proxy and model: max_parallel requests forwarded at once, max_queue waiting (saturation = depth / this)",
        ["model", "limit"],
        registry=now,
    )
    me = node_name(config)
    try:
        gpu = await conn.request(endpoints.GPU_STATUS, GpuStatusRequest(), timeout=2.0)
        for device in gpu.devices:
            allocated.labels(f"cuda:{device.index}").set(device.allocated_mb * MB)
            total.labels(f"cuda:{device.index}").set(device.total_mb * MB)
            if device.utilization_pct is not None:
                busy.labels(f"cuda:{device.index}").set(device.utilization_pct)
        for allocation in gpu.allocations:
            per_model.labels(allocation.model, me, "allocated").set(allocation.memory_mb * MB)
    except AsrError:
        pass  # the gpu actor does not answer: its figures are left out rather than made up
    here: dict[str, int] = {}
    try:
        status = await lifecycle_status(conn, timeout=2.0)
        for server in status.servers:
            inflight.labels(server.model).inc(server.inflight)
            if server.started_at:
                uptime.labels(server.model).set(max(0.0, time.time() - server.started_at))
            if server.pid and server.node in ("", me):
                here[server.model] = server.pid
        for (node, model), mb in (await measured_mb(conn, sorted({s.node for s in status.servers}))).items():
            per_model.labels(model, node, "measured").set(mb * MB)
    except AsrError:
        pass
    listing = conn.catalogue.listing
    for info in listing.models if listing is not None else []:
        limits.labels(info.id, "max_parallel").set(info.parallel(config.lifecycle.max_parallel))
        limits.labels(info.id, "max_queue").set(info.max_queue or config.lifecycle.max_queue)
    server_processes(now, here)
    await actor_processes(now, conn.client, me)
    text = snap.prometheus + generate_latest(now).decode() + generate_latest(GATEWAY_METRICS).decode()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/api/ps")
async def ps(conn: Connection) -> dict[str, Any]:
    """What runs now, on every live node (each entry names its `node`)."""
    status = await lifecycle_status(conn)
    measured = await measured_mb(conn, sorted({s.node for s in status.servers}))
    entries = [ps_entry(s) | {"gpu_measured_mb": measured.get((s.node, s.model))} for s in status.servers]
    return {"runtime": status.runtime, "models": entries, "live_sessions": await live_sessions(conn)}


async def live_sessions(conn: GatewayConnection) -> dict[str, int] | None:
    """Live sessions open now, by model, as the metrics actor counts them; None while it does not answer."""
    try:
        snap = await conn.request(endpoints.METRICS_SNAPSHOT, SnapshotRequest(), timeout=2.0)
    except AsrError:
        return None
    return {model: c.live_sessions for model, c in snap.models.items() if c.live_sessions}


@router.get("/api/nodes")
async def nodes(conn: Connection, config: Settings) -> dict[str, Any]:
    """The nodes that beat within node.dead_after (an older record has expired from ASR_NODES): name, host, last
    heartbeat, GPUs, the models they run."""
    records = await node_records(conn)
    now = time.time()
    listed = [
        msgspec.to_builtins(r)
        | {
            "alive": now - r.heartbeat_at < config.node.dead_after,
            "heartbeat_at": _iso(r.heartbeat_at),
            "started_at": _iso(r.started_at),
        }
        for r in records
    ]
    return {"nodes": listed}


@router.get("/api/gpu")
async def gpu(conn: Connection) -> dict[str, Any]:
    status = await conn.request(endpoints.GPU_STATUS, GpuStatusRequest())
    body: dict[str, Any] = msgspec.to_builtins(status)
    return body


@router.post("/api/ps/{model:path}")
async def load(model: str, conn: Connection, keep_alive: str | None = None) -> dict[str, Any]:
    try:
        seconds = parse_duration(keep_alive)
    except ValueError as exc:
        raise AsrError("400", str(exc)) from None
    model_id = conn.catalogue.resolve(model).id
    status = await conn.request(
        endpoints.LIFECYCLE_ENSURE, EnsureServer(model=model_id, keep_alive=seconds), timeout=120
    )
    return ps_entry(status)


@router.delete("/api/ps/{model:path}")
async def unload(
    model: str, conn: Connection, force: Annotated[bool, Query()] = False, node: str | None = None
) -> dict[str, Any]:
    """Stop the model's servers: on every node that runs one, or only on `node`."""
    model_id = conn.catalogue.resolve(model).id
    stop = StopServer(model=model_id, reason="requested", force=force)
    nodes = await live_nodes(conn)
    if len(nodes) <= 1 and node is None:
        reply = await conn.request(endpoints.LIFECYCLE_STOP, stop, timeout=60)
        return {"model": reply.model, "stopped": reply.stopped}
    running = sorted({s.node for s in (await lifecycle_status(conn)).servers if s.model == model_id})
    if node is not None:
        if node not in nodes:
            raise AsrError(errors.NOT_FOUND, f"no live node named {node!r} (live: {', '.join(nodes) or 'none'})")
        running = [node] if node in running else []
    stopped = [n for n in running if (await conn.request(endpoints.LIFECYCLE_STOP.on(n), stop, timeout=60)).stopped]
    return {"model": model_id, "stopped": bool(stopped), "nodes": stopped}


@router.get("/api/breakers")
async def breakers(conn: Connection) -> dict[str, Any]:
    """Open and half-open circuit breakers: why they opened, and when the next probe runs."""
    status = await lifecycle_status(conn)
    return {"breakers": [msgspec.to_builtins(b) for b in status.breakers]}


@router.post("/api/breakers/{model:path}/close")
async def close_breaker(model: str, request: Request, conn: Connection) -> dict[str, Any]:
    """Close a model's breaker by hand (the model may start again at once); the `breaker` event says who."""
    model_id = conn.catalogue.resolve(model).id
    who = f"an operator at {request.client.host if request.client else 'unknown'}"
    reply = await conn.request(endpoints.RECOVERY_CLOSE_BREAKER, CloseBreaker(model=model_id, by=who))
    return {"model": reply.model, "was": reply.was, "state": "closed"}
