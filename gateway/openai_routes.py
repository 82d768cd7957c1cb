"""OpenAI-compatible routes: transcriptions, models; and the default-model setting."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from framework import bus
from framework.config import Config
from gateway.bus import GatewayBus, get_bus, get_config
from gateway.errors import error_response
from schemas import errors, subjects
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel
from schemas.transcribe import RESPONSE_FORMATS, TranscribeRequest, TranscriptionResult

router = APIRouter()
log = logging.getLogger("asrpro.gateway")
_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
Bus = Annotated[GatewayBus, Depends(get_bus)]
Settings = Annotated[Config, Depends(get_config)]


async def resolve(nats_bus: GatewayBus, model: str) -> ModelInfo:
    """The model a name means, from the registry; while the registry is down (restarting), from the last
    catalogue it gave, so that requests ride through its restart."""
    try:
        info = await nats_bus.request(subjects.REGISTRY_GET, GetModel(id=model), ModelInfo)
    except AsrError as exc:
        known = nats_bus.catalogue.lookup(model) if exc.code in (errors.UNAVAILABLE, errors.TIMEOUT) else None
        if known is None:
            raise
        log.warning("registry unavailable (%s): %s resolved from the last known catalogue", exc.message, model)
        return known
    if nats_bus.catalogue.stale():
        with contextlib.suppress(AsrError):
            nats_bus.catalogue.update(await nats_bus.request(subjects.REGISTRY_LIST, ListModels(), ModelList))
    return info


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    nats_bus: Bus,
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
    fmt = response_format or response_format_q or "json"
    if fmt not in RESPONSE_FORMATS:
        return error_response(400, f"response_format '{fmt}' is not one of {', '.join(RESPONSE_FORMATS)}")
    if file is None:
        return error_response(400, "no file: send the audio as the multipart field 'file'")
    try:
        parse_duration(keep_alive)
    except ValueError as exc:
        return error_response(400, str(exc))
    info = await resolve(nats_bus, model or model_q or "whisper-1")
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
        request_id=uuid.uuid4().hex,
        keep_alive=keep_alive or None,
        timeout=timeout,
    )
    # The proxy answers 504 itself at `timeout`; the bus waits a little longer so that answer arrives.
    result = await bus.transcribe(nats_bus.client, info.id, message, timeout=timeout + 5)
    return render(result, fmt)


def render(result: TranscriptionResult, fmt: str) -> Response:
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
async def models(nats_bus: Bus) -> dict[str, Any]:
    listing = await nats_bus.request(subjects.REGISTRY_LIST, ListModels(), ModelList)
    return {"object": "list", "data": [openai_model(m, listing.default_model) for m in listing.models]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, nats_bus: Bus) -> dict[str, Any]:
    listing = await nats_bus.request(subjects.REGISTRY_LIST, ListModels(), ModelList)
    return openai_model(await resolve(nats_bus, model_id), listing.default_model)


@router.post("/v1/settings/model")
async def set_default(request: Request, nats_bus: Bus) -> dict[str, Any]:
    try:
        body = await request.json()
        model_id = body["model_id"]
        if not isinstance(model_id, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise AsrError(errors.BAD_REQUEST, 'expected a JSON body {"model_id": "<model>"}') from None
    info = await nats_bus.request(subjects.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id=model_id), ModelInfo)
    nats_bus.catalogue.at = 0.0  # what whisper-1 means changed: refresh the fallback catalogue
    return {"default_model": info.id}
