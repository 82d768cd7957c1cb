"""OpenAI-compatible routes: transcriptions, models; and the default-model setting."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from framework import bus, logs
from framework.config import Config
from gateway.connection import GatewayConnection, get_config, get_connection
from gateway.errors import error_response
from schemas import endpoints, errors
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.registry import ListModels, ModelInfo, SetDefaultModel
from schemas.transcribe import ResponseFormat, TranscribeRequest, TranscriptionResult
from schemas.transcribe import response_format as parse_response_format

router = APIRouter()
log = logging.getLogger("asrpro.gateway")
_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
Connection = Annotated[GatewayConnection, Depends(get_connection)]
Settings = Annotated[Config, Depends(get_config)]


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    conn: Connection,
    config: Settings,
    file: Annotated[UploadFile | None, File()] = None,
    model: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str | None, Form()] = None,
    temperature: Annotated[float, Form()] = 0.0,
    keep_alive: Annotated[str | None, Form()] = None,
    model_q: Annotated[str | None, Query(alias="model")] = None,
    response_format_q: Annotated[str | None, Query(alias="response_format")] = None,
) -> Response:
    # asrpro's older clients send model and response_format as query parameters.
    fmt = parse_response_format(response_format or response_format_q)
    if file is None:
        return error_response(400, "no file: send the audio as the multipart field 'file'")
    try:
        parse_duration(keep_alive)
    except ValueError as exc:
        return error_response(400, str(exc))
    nc = conn.client  # 503 at once while the bus is down, before anything else is said
    info = conn.catalogue.resolve(model or model_q or "whisper-1")
    audio = await file.read()
    if not audio:
        return error_response(400, f"the file '{file.filename}' is empty")
    timeout = config.gateway.request_timeout
    message = TranscribeRequest(
        audio=audio,
        filename=file.filename or "audio",
        language=language or None,
        prompt=prompt or None,
        response_format=fmt,
        temperature=temperature,
        request_id=logs.request_id.get() or logs.new_request_id(),
        keep_alive=keep_alive or None,
        timeout=timeout,
    )
    # The proxy answers 504 itself at `timeout`; the bus waits a little longer so that answer arrives.
    result = await bus.transcribe(nc, info.id, message, timeout=timeout + 5)
    log.info(
        "transcribed",
        extra={"model": info.id, "format": fmt, "audio_s": result.duration, "total_s": result.timing.total_s},
    )
    return render(result, fmt)


def render(result: TranscriptionResult, fmt: ResponseFormat) -> Response:
    if fmt in _MEDIA_TYPES:
        return PlainTextResponse(result.formatted or "", media_type=_MEDIA_TYPES[fmt])
    if fmt == "json":
        return JSONResponse({"text": result.text})
    body = msgspec.to_builtins(result)
    body.pop("formatted", None)
    body["task"] = "transcribe"
    return JSONResponse(body)


def openai_model(m: ModelInfo, default_model: str) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": "asrpro",
        "name": m.name,
        "family": m.family,
        "engine": m.engine,
        "languages": m.languages,
        "default": m.id == default_model,
    }


@router.get("/v1/models")
async def models(conn: Connection) -> dict[str, Any]:
    listing = conn.catalogue.listing
    if listing is None:
        listing = await conn.request(endpoints.REGISTRY_LIST, ListModels())
    return {"object": "list", "data": [openai_model(m, listing.default_model) for m in listing.models]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, conn: Connection) -> dict[str, Any]:
    return openai_model(conn.catalogue.resolve(model_id), conn.catalogue.default_model)


@router.post("/v1/settings/model")
async def set_default(request: Request, conn: Connection) -> dict[str, Any]:
    try:
        body = await request.json()
        model_id = body["model_id"]
        if not isinstance(model_id, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise AsrError(errors.BAD_REQUEST, 'expected a JSON body {"model_id": "<model>"}') from None
    info = await conn.request(endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id=model_id))
    # What whisper-1 means changed: the next request through this gateway must see it.
    await conn.catalogue.wait_for_default(info.id, timeout=2.0)
    return {"default_model": info.id}
