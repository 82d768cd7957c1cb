"""The service's state in the original asrpro app's words — `healthy` (a model is loaded), `ready` (nothing loaded,
all in place), `initializing`, `degraded`, `unhealthy` — with the reasons, for /health, /ws and /v1/options."""

from __future__ import annotations

from typing import Any

import msgspec
import nats.errors

from gateway.cluster_view import lifecycle_status
from gateway.connection import GatewayConnection
from schemas.errors import AsrError
from schemas.lifecycle import LifecycleStatus

OK = ("healthy", "ready")  # the states in which requests are served


def device_name(runtime: str, on_gpu: bool) -> str:
    where = "Docker container" if runtime == "docker" else "Local process"
    return f"{where} ({'GPU' if on_gpu else 'CPU'})"


async def system_status(conn: GatewayConnection) -> dict[str, Any]:
    if not conn.connected:
        return {"status": "unhealthy", "nats": "disconnected", "reason": "message bus (NATS) is not connected"}
    body: dict[str, Any] = {
        "status": "ready",
        "nats": "connected",
        "current_model": conn.catalogue.default_model or None,
    }
    lifecycle: LifecycleStatus | None = None
    try:
        lifecycle = await lifecycle_status(conn, timeout=2.0)
    except AsrError as exc:
        body.update(status="degraded", reason=exc.message)
    if lifecycle is not None:
        on_gpu = any(s.device.startswith("cuda") for s in lifecycle.servers)
        body["device"] = device_name(lifecycle.runtime, on_gpu)
        body["runtime"] = {"name": lifecycle.runtime, "reason": lifecycle.runtime_reason}
        body["servers"] = [msgspec.to_builtins(s) for s in lifecycle.servers]
        if lifecycle.servers:
            body["status"] = "healthy"
        if lifecycle.breakers:
            body["breakers"] = [msgspec.to_builtins(b) for b in lifecycle.breakers]
            reasons = "; ".join(f"{b.model}: circuit breaker {b.state} ({b.reason})" for b in lifecycle.breakers)
            body.update(status="degraded", reason=reasons)
    if body["status"] in OK and conn.catalogue.listing is None:
        body.update(status="initializing", reason=conn.catalogue.unknown_reason())
    if body["status"] in OK and not await proxy_answers(conn):
        body.update(status="degraded", reason="no model proxy answers: transcription requests would fail")
    return body


async def proxy_answers(conn: GatewayConnection) -> bool:
    """Is at least one model proxy serving? (nats.micro discovery: PING to the service by name)"""
    try:
        await conn.client.request("$SRV.PING.asrpro-proxy", b"", timeout=1.0)
    except (AsrError, nats.errors.Error):
        return False
    return True
