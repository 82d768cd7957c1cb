"""Operating the service: health, metrics, and what runs now (/api/ps: list, load, unload)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import nats.errors
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.connection import GatewayConnection, get_connection
from schemas import endpoints
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.gpu import GpuStatusRequest
from schemas.lifecycle import EnsureServer, LifecycleStatusRequest, ServerStatus, StopServer
from schemas.metrics import SnapshotRequest

router = APIRouter()
Connection = Annotated[GatewayConnection, Depends(get_connection)]


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def ps_entry(s: ServerStatus) -> dict[str, Any]:
    entry: dict[str, Any] = msgspec.to_builtins(s)
    entry.update(expires_at=_iso(s.expires_at), started_at=_iso(s.started_at), last_activity=_iso(s.last_activity))
    entry.pop("cold_start", None)
    return entry


@router.get("/health")
async def health(conn: Connection) -> JSONResponse:
    if not conn.connected:
        return JSONResponse({"status": "unavailable", "nats": "disconnected"}, status_code=503)
    body: dict[str, Any] = {"status": "ok", "nats": "connected"}
    try:
        status = await conn.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest(), timeout=2.0)
        body["runtime"] = {"name": status.runtime, "reason": status.runtime_reason}
        body["servers"] = [msgspec.to_builtins(s) for s in status.servers]
        if status.breakers:
            body["breakers"] = [msgspec.to_builtins(b) for b in status.breakers]
            body["status"] = "degraded"
            body["reason"] = "; ".join(f"{b.model}: circuit breaker {b.state} ({b.reason})" for b in status.breakers)
    except AsrError as exc:
        body.update(status="degraded", reason=exc.message)
    if body["status"] == "ok" and conn.catalogue.listing is None:
        body.update(status="degraded", reason=conn.catalogue.unknown_reason())
    if body["status"] == "ok" and not await _proxy_answers(conn):
        body.update(status="degraded", reason="no model proxy answers: transcription requests would fail")
    return JSONResponse(body)


async def _proxy_answers(conn: GatewayConnection) -> bool:
    """Is at least one model proxy serving? (nats.micro discovery: PING to the service by name)"""
    try:
        await conn.client.request("$SRV.PING.asrpro-proxy", b"", timeout=1.0)
    except (AsrError, nats.errors.Error):
        return False
    return True


@router.get("/metrics")
async def metrics(conn: Connection) -> PlainTextResponse:
    snap = await conn.request(endpoints.METRICS_SNAPSHOT, SnapshotRequest())
    return PlainTextResponse(snap.prometheus, media_type="text/plain; version=0.0.4")


@router.get("/api/ps")
async def ps(conn: Connection) -> dict[str, Any]:
    status = await conn.request(endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    return {"runtime": status.runtime, "models": [ps_entry(s) for s in status.servers]}


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
async def unload(model: str, conn: Connection, force: Annotated[bool, Query()] = False) -> dict[str, Any]:
    model_id = conn.catalogue.resolve(model).id
    reply = await conn.request(
        endpoints.LIFECYCLE_STOP, StopServer(model=model_id, reason="requested", force=force), timeout=60
    )
    return {"model": reply.model, "stopped": reply.stopped}
