"""The one client of the model-server HTTP contract (`schemas.model_server`), used by the model proxy
(transcribe) and the lifecycle actor (health)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec

from framework import logs
from schemas import codec, errors
from schemas.errors import AsrError
from schemas.model_server import (
    FILE_FIELD,
    FILENAME_PARAM,
    HEALTH_PATH,
    MAX_QUERY_BYTES,
    MODEL_HEADER,
    STREAM_PARAM,
    TRANSCRIBE_PATH,
    ErrorBody,
    ErrorDetail,
    ErrorFrame,
    Frame,
    Health,
    ResultFrame,
    TranscribeOptions,
)
from schemas.transcribe import TranscriptionResult

# Errors that mean "the server is gone", not "the audio is bad": worth one retry on a fresh server.
_GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_decode_health = msgspec.json.Decoder(Health).decode
_decode_result = msgspec.json.Decoder(TranscriptionResult).decode
_decode_error = msgspec.json.Decoder(ErrorBody).decode
_decode_frame = msgspec.json.Decoder(Frame).decode


class ServerGone(Exception):
    """The model server did not take the request (refused, reset, closed): the caller may retry elsewhere."""


class ModelServerClient:
    def __init__(self, *, timeout: float = 300.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        # One pooled client: a warm request reuses its keep-alive connection to the server.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=5.0), transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def health(self, url: str, timeout: float = 5.0) -> tuple[str, str]:
        """(status, detail): ok, loading, error (detail: what failed), gpu (a load the GPU cannot run), or
        unreachable (detail: why)."""
        status, detail, _ = await self.reading(url, timeout)
        return status, detail

    async def reading(self, url: str, timeout: float = 5.0) -> tuple[str, str, Health | None]:
        """health(), with the server's own report where it gave one (the device and compute type it runs on)."""
        try:
            response = await self.http.get(url + HEALTH_PATH, timeout=timeout)
        except httpx.TimeoutException:  # alive (a port open) but silent: stopped, or stuck
            return "unreachable", f"/health unreachable: no answer within {timeout:g} s", None
        except httpx.HTTPError as exc:
            return "unreachable", f"/health unreachable: {exc!r}", None
        try:
            report = _decode_health(response.content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return (
                ("ok", "", None)
                if response.status_code == 200
                else ("error", f"/health answered {response.status_code}", None)
            )
        if response.status_code == 200:
            return "ok", "", report
        status = "gpu" if report.status == "error" and report.cause == "gpu" else report.status
        return status, report.error or report.status, report

    async def problem(self, url: str) -> str:
        """'' when /health answers ok, else what is wrong."""
        status, detail = await self.health(url)
        return "" if status == "ok" else detail

    async def transcribe(
        self, url: str, model: str, audio: bytes, filename: str, options: TranscribeOptions, deadline: float
    ) -> TranscriptionResult:
        """POST /transcribe until `deadline` (monotonic). ServerGone when the server is not there; AsrError
        with the server's own code and message when it refuses the request."""
        async for frame in self.stream(url, model, audio, filename, options, deadline, stream=False):
            if isinstance(frame, ResultFrame):
                return frame.result
        raise AsrError(errors.INTERNAL, f"model server of {model} ended without a result")

    async def stream(
        self,
        url: str,
        model: str,
        audio: bytes,
        filename: str,
        options: TranscribeOptions,
        deadline: float,
        *,
        stream: bool = True,
    ) -> AsyncIterator[Frame]:
        """The frames of the transcription as the server decodes (with stream, else only the result). A caller
        that stops iterating closes the connection, and the server stops decoding."""
        headers = {codec.REQUEST_ID_HEADER: logs.request_id.get(), MODEL_HEADER: model}
        fields = options.form()
        params = {STREAM_PARAM: "true"} if stream else {}
        if len(urlencode(fields)) <= MAX_QUERY_BYTES:
            # The raw form: no multipart to build here and parse there for every upload.
            request: dict[str, Any] = {"content": audio}
            params.update(fields, **{FILENAME_PARAM: filename or "audio"})
            headers["Content-Type"] = "application/octet-stream"
        else:  # a long prompt does not fit a request line
            request = {"files": {FILE_FIELD: (filename or "audio", audio)}, "data": fields}
        timeout = httpx.Timeout(max(0.1, deadline - time.monotonic()), connect=5.0)
        try:
            async with self.http.stream(
                "POST", url + TRANSCRIBE_PATH, params=params, headers=headers, timeout=timeout, **request
            ) as response:
                if response.status_code == 409:  # the address now belongs to another model's server (a stale record)
                    await response.aread()
                    raise ServerGone(f"the server at {url} is not {model}'s: {_error_message(response)}")
                if response.status_code != 200:
                    await response.aread()
                    raise _error(response)
                if not stream:
                    await response.aread()
                    yield ResultFrame(result=_decode_result(response.content))
                    return
                async for frame in _frames(response):
                    if isinstance(frame, ErrorFrame):
                        raise _asr_error(frame.error)
                    yield frame
        except httpx.TimeoutException as exc:
            raise AsrError(errors.TIMEOUT, f"model server of {model} did not answer in time") from exc
        except _GONE as exc:
            raise ServerGone(f"model server of {model} at {url} is gone: {exc!r}") from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise AsrError(errors.INTERNAL, f"model server of {model} sent a malformed result: {exc}") from exc


async def _frames(response: httpx.Response) -> AsyncIterator[Frame]:
    async for line in response.aiter_lines():
        if line.strip():
            yield _decode_frame(line)


def _error_message(response: httpx.Response) -> str:
    try:
        return _decode_error(response.content).error.message
    except (msgspec.DecodeError, msgspec.ValidationError):
        return response.text[:500] or f"model server answered HTTP {response.status_code}"


def _error(response: httpx.Response) -> AsrError:
    """The model server's error answer as ours: its status, message, symbolic code and field."""
    try:
        detail = _decode_error(response.content).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        return AsrError(str(response.status_code), _error_message(response))
    return _asr_error(detail, str(response.status_code))


def _asr_error(detail: ErrorDetail, status: str = "") -> AsrError:
    try:
        kind = errors.ErrorCode(detail.kind) if detail.kind else None
    except ValueError:
        kind = None  # a newer server's code: its status says enough
    return AsrError(status or detail.code, detail.message, detail.retry_after, kind, detail.param)
