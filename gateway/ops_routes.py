"""Operating the service: health, metrics, and what runs now (/api/ps: list, load, unload)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import nats.errors
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.bus import GatewayBus, get_bus
from schemas import subjects
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.gpu import GpuStatus, GpuStatusRequest
from schemas.lifecycle import EnsureServer, LifecycleStatus, LifecycleStatusRequest, ServerStatus, StopReply, StopServer
from schemas.metrics import MetricsSnapshot, SnapshotRequest

router = APIRouter()
Bus = Annotated[GatewayBus, Depends(get_bus)]


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def ps_entry(s: ServerStatus) -> dict[str, Any]:
    entry = msgspec.to_builtins(s)
    entry.update(expires_at=_iso(s.expires_at), started_at=_iso(s.started_at), last_activity=_iso(s.last_activity))
    entry.pop("cold_start", None)
    return entry


@router.get("/health")
async def health(nats_bus: Bus) -> JSONResponse:
    if not nats_bus.connected:
        return JSONResponse({"status": "unavailable", "nats": "disconnected"}, status_code=503)
    body: dict[str, Any] = {"status": "ok", "nats": "connected"}
    try:
        status = await nats_bus.request(
            subjects.LIFECYCLE_STATUS, LifecycleStatusRequest(), LifecycleStatus, timeout=2.0
        )
        body["runtime"] = {"name": status.runtime, "reason": status.runtime_reason}
        body["servers"] = [msgspec.to_builtins(s) for s in status.servers]
        if status.breakers:
            body["breakers"] = [msgspec.to_builtins(b) for b in status.breakers]
            body["status"] = "degraded"
            body["reason"] = "; ".join(f"{b.model}: circuit breaker {b.state} ({b.reason})" for b in status.breakers)
    except AsrError as exc:
        body.update(status="degraded", reason=exc.message)
    if body["status"] == "ok" and not await _proxy_answers(nats_bus):
        body.update(status="degraded", reason="no model proxy answers: transcription requests would fail")
    return JSONResponse(body)


async def _proxy_answers(nats_bus: GatewayBus) -> bool:
    """Is at least one model proxy serving? (nats.micro discovery: PING to the service by name)"""
    try:
        await nats_bus.client.request("$SRV.PING.asrpro-proxy", b"", timeout=1.0)
    except (AsrError, nats.errors.Error):
        return False
    return True


@router.get("/metrics")
async def metrics(nats_bus: Bus) -> PlainTextResponse:
    snap = await nats_bus.request(subjects.METRICS_SNAPSHOT, SnapshotRequest(), MetricsSnapshot)
    return PlainTextResponse(snap.prometheus, media_type="text/plain; version=0.0.4")


@router.get("/api/ps")
async def ps(nats_bus: Bus) -> dict[str, Any]:
    status = await nats_bus.request(subjects.LIFECYCLE_STATUS, LifecycleStatusRequest(), LifecycleStatus)
    return {"runtime": status.runtime, "models": [ps_entry(s) for s in status.servers]}


@router.get("/api/gpu")
async def gpu(nats_bus: Bus) -> dict[str, Any]:
    status = await nats_bus.request(subjects.GPU_STATUS, GpuStatusRequest(), GpuStatus)
    return msgspec.to_builtins(status)  # type: ignore[no-any-return]


@router.post("/api/ps/{model:path}")
async def load(model: str, nats_bus: Bus, keep_alive: str | None = None) -> dict[str, Any]:
    try:
        seconds = parse_duration(keep_alive)
    except ValueError as exc:
        raise AsrError("400", str(exc)) from None
    status = await nats_bus.request(
        subjects.LIFECYCLE_ENSURE, EnsureServer(model=model, keep_alive=seconds), ServerStatus, timeout=120
    )
    return ps_entry(status)


@router.delete("/api/ps/{model:path}")
async def unload(model: str, nats_bus: Bus, force: Annotated[bool, Query()] = False) -> dict[str, Any]:
    reply = await nats_bus.request(
        subjects.LIFECYCLE_STOP, StopServer(model=model, reason="requested", force=force), StopReply, timeout=60
    )
    return {"model": reply.model, "stopped": reply.stopped}
