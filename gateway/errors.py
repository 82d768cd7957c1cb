"""Errors in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from schemas.errors import AsrError

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


async def asr_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AsrError)
    return from_asr_error(exc)
