"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.types import Scope, Send

from schemas.errors import AsrError, is_generic

log = logging.getLogger("asrpro.gateway")
# What this gateway process refused itself (bad form, unknown model, too large, ...), for /metrics.
GATEWAY_METRICS = CollectorRegistry()
REJECTED = Counter(
    "asrpro_gateway_rejected",
    "Requests the gateway answered with a 4xx, by status and code",
    ["status", "code"],
    registry=GATEWAY_METRICS,
)

_STATUS = {"400", "404", "409", "413", "415", "429", "500", "503", "504"}  # what HTTP shows as is; others are 502


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    retry_after: float | None = None,
    param: str | None = None,
) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    if status < 500:
        REJECTED.labels(str(status), code or str(status)).inc()
    return JSONResponse({"error": error_object(status, message, code, param)}, status_code=status, headers=headers)


def error_object(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"message": message, "type": kind, "param": param, "code": code or str(status)}


def status_and_code(exc: AsrError) -> tuple[int, str | None]:
    status = int(exc.code) if exc.code in _STATUS else 502
    # A kind more precise than the status (model_not_installed, breaker_open, ...) is the error's code.
    return status, (None if is_generic(exc.kind) else exc.kind)


def from_asr_error(exc: AsrError) -> JSONResponse:
    status, code = status_and_code(exc)
    return error_response(status, exc.message, code=code, retry_after=exc.retry_after)


async def asr_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AsrError)
    log.warning("%s %s: %s %s", request.method, request.url.path, exc.code, exc.message, extra={"code": exc.code})
    return from_asr_error(exc)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own checks (a field of the wrong type) answer in OpenAI's shape too, as 400, naming the field."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    param = None
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        param = param or where or None
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    log.warning("%s %s: 400 %s", request.method, request.url.path, "; ".join(problems))
    return error_response(400, "; ".join(problems) or "invalid request", param=param)


async def refuse(
    scope: Scope,
    send: Send,
    status: int,
    message: str,
    *,
    code: str,
    kind: str = "invalid_request_error",
    headers: list[tuple[bytes, bytes]] | None = None,
    counted_as: str = "",
) -> None:
    """A refusal from ASGI middleware, before any route: OpenAI's error shape over HTTP, close code 1008 on a
    WebSocket; counted like the routes' own 4xx answers."""
    REJECTED.labels(str(status), counted_as or code).inc()
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    sent = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": sent})
    await send({"type": "http.response.body", "body": body})
