"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}.

`code` is a symbolic code (schemas.errors.ErrorCode: `model_not_found`, `unsupported_audio`, ...) or null where
nothing more specific than the status is known, as OpenAI's API does; never the status as a string. `param` names
the request field at fault where there is one."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from starlette.types import Scope, Send

from schemas.errors import STATUS, AsrError, ErrorCode, is_generic

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
    counted: bool = True,
) -> JSONResponse:
    """`counted`: a refusal of the gateway's own (asrpro_gateway_rejected); an error relayed from the proxy was
    counted there already (asrpro_requests), and is not counted twice."""
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    if status < 500 and counted:
        REJECTED.labels(str(status), code or "none").inc()
    return JSONResponse({"error": error_object(status, message, code, param)}, status_code=status, headers=headers)


def error_object(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": error_type(status), "param": param, "code": code}


def error_type(status: int) -> str:
    """OpenAI's error `type` for a status."""
    if status in (401, 403):
        return "authentication_error" if status == 401 else "permission_error"
    return "invalid_request_error" if status < 500 else "server_error"


def status_and_code(exc: AsrError) -> tuple[int, str | None]:
    status = int(exc.code) if exc.code in _STATUS else 502
    # A kind more precise than the status (model_not_installed, breaker_open, ...) is the error's code.
    return status, (None if is_generic(exc.kind) else exc.kind)


def from_asr_error(exc: AsrError) -> JSONResponse:
    status, code = status_and_code(exc)
    return error_response(
        status, exc.message, code=code, retry_after=exc.retry_after, param=exc.param, counted=not exc.relayed
    )


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
    code: ErrorCode,
    message: str,
    *,
    param: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    counted_as: str = "",
) -> None:
    """A refusal from ASGI middleware, before any route: OpenAI's error shape, with the code's status; counted like
    the routes' own 4xx answers. A WebSocket handshake gets the same HTTP answer through the ASGI WebSocket
    denial response (a close before accepting would make the server answer 403 whatever the reason); a server
    without that extension closes with 1008."""
    status = int(STATUS[code])
    REJECTED.labels(str(status), counted_as or code).inc()
    body = json.dumps({"error": error_object(status, message, code, param)}).encode()
    sent = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    if scope["type"] == "websocket":
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        await send({"type": "websocket.http.response.start", "status": status, "headers": sent})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": sent})
    await send({"type": "http.response.body", "body": body})
