"""The HTTP front door: OpenAI-compatible transcription API over NATS request/reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from nats.aio.client import Client
from starlette.types import ASGIApp

from actors import bus
from actors.config import Config
from gateway.errors import asr_error_handler, error_response
from gateway.limits import UploadLimit
from schemas import errors, subjects
from schemas.errors import AsrError
from schemas.lifecycle import LifecycleStatus, LifecycleStatusRequest
from schemas.metrics import MetricsSnapshot, SnapshotRequest
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel
from schemas.transcribe import RESPONSE_FORMATS, TranscribeRequest, TranscriptionResult

log = logging.getLogger("asrpro.gateway")
_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


class Bus:
    """The gateway's NATS connection; it keeps trying in the background when the bus is down at start."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.nc: Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self._connect()
        except Exception as exc:
            log.warning("NATS not reachable at start (%s): retrying in the background", exc)
            self._task = asyncio.create_task(self._keep_trying())

    async def _connect(self) -> None:
        cfg = self.config.nats
        self.nc = await bus.connect(
            cfg.url, name="asrpro-gateway", user=cfg.user, password=cfg.password, connect_timeout=cfg.connect_timeout
        )

    async def _keep_trying(self) -> None:
        while self.nc is None:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self._connect()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    @property
    def client(self) -> Client:
        if self.nc is None or not self.nc.is_connected:
            raise AsrError(errors.UNAVAILABLE, "message bus (NATS) is not connected")
        return self.nc

    async def request(self, subject: str, message: Any, reply_type: type[Any], timeout: float = 5.0) -> Any:
        return await bus.request(self.client, subject, message, reply_type, timeout=timeout)


def create_app(config: Config) -> ASGIApp:
    nats_bus = Bus(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await nats_bus.start()
        yield
        await nats_bus.stop()

    app = FastAPI(title="ASR Pro", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(AsrError, asr_error_handler)
    app.state.bus = nats_bus

    async def resolve(model: str) -> ModelInfo:
        result: ModelInfo = await nats_bus.request(subjects.REGISTRY_GET, GetModel(id=model), ModelInfo)
        return result

    @app.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(
        file: Annotated[UploadFile | None, File()] = None,
        model: Annotated[str | None, Form()] = None,
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str | None, Form()] = None,
        temperature: Annotated[float, Form()] = 0.0,
        model_q: Annotated[str | None, Query(alias="model")] = None,
        response_format_q: Annotated[str | None, Query(alias="response_format")] = None,
    ) -> Response:
        # asrpro's older clients send model and response_format as query parameters.
        fmt = response_format or response_format_q or "json"
        if fmt not in RESPONSE_FORMATS:
            return error_response(400, f"response_format '{fmt}' is not one of {', '.join(RESPONSE_FORMATS)}")
        if file is None:
            return error_response(400, "no file: send the audio as the multipart field 'file'")
        info = await resolve(model or model_q or "whisper-1")
        audio = await file.read()
        if not audio:
            return error_response(400, f"the file '{file.filename}' is empty")
        message = TranscribeRequest(
            audio=audio,
            filename=file.filename or "audio",
            language=language or None,
            prompt=prompt or None,
            response_format=fmt,
            temperature=temperature,
            request_id=uuid.uuid4().hex,
        )
        result = await bus.transcribe(nats_bus.client, info.id, message, timeout=config.gateway.request_timeout)
        return render(result, fmt)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        listing: ModelList = await nats_bus.request(subjects.REGISTRY_LIST, ListModels(), ModelList)
        return {"object": "list", "data": [openai_model(m, listing.default_model) for m in listing.models]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        listing: ModelList = await nats_bus.request(subjects.REGISTRY_LIST, ListModels(), ModelList)
        return openai_model(await resolve(model_id), listing.default_model)

    @app.post("/v1/settings/model")
    async def set_default(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
            model_id = body["model_id"]
            if not isinstance(model_id, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise AsrError(errors.BAD_REQUEST, 'expected a JSON body {"model_id": "<model>"}') from None
        info: ModelInfo = await nats_bus.request(
            subjects.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id=model_id), ModelInfo
        )
        return {"default_model": info.id}

    @app.get("/health")
    async def health() -> JSONResponse:
        if nats_bus.nc is None or not nats_bus.nc.is_connected:
            return JSONResponse({"status": "unavailable", "nats": "disconnected"}, status_code=503)
        body: dict[str, Any] = {"status": "ok", "nats": "connected"}
        try:
            status: LifecycleStatus = await nats_bus.request(
                subjects.LIFECYCLE_STATUS, LifecycleStatusRequest(), LifecycleStatus, timeout=2.0
            )
            body["runtime"] = {"name": status.runtime, "reason": status.runtime_reason}
            body["servers"] = [msgspec.to_builtins(s) for s in status.servers]
        except AsrError as exc:
            body.update(status="degraded", reason=exc.message)
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        snap: MetricsSnapshot = await nats_bus.request(subjects.METRICS_SNAPSHOT, SnapshotRequest(), MetricsSnapshot)
        return PlainTextResponse(snap.prometheus, media_type="text/plain; version=0.0.4")

    # The limit is on the file; multipart framing and form fields get a little slack on top.
    return UploadLimit(app, int(config.gateway.max_upload_mb * 2**20), slack=64 * 1024)


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
