"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from schemas.errors import AsrError

log = logging.getLogger("asrpro.gateway")

_STATUS = {"400", "404", "409", "413", "415", "429", "500", "503", "504"}


def error_response(
    status: int, message: str, *, code: str | None = None, retry_after: float | None = None
) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    body = {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}
    return JSONResponse(body, status_code=status, headers=headers)


def from_asr_error(exc: AsrError) -> JSONResponse:
    status = int(exc.code) if exc.code in _STATUS else 502
    return error_response(status, exc.message, retry_after=exc.retry_after)


async def asr_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AsrError)
    log.warning("%s %s: %s %s", request.method, request.url.path, exc.code, exc.message, extra={"code": exc.code})
    return from_asr_error(exc)
