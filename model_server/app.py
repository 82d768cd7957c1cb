"""The HTTP surface: ``GET /health`` and ``POST /transcribe`` (OpenAI-style multipart form)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext

import anyio
import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import FormData, QueryParams, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from framework import logs
from model_server import pipeline
from model_server.audio import AudioDecodeError
from model_server.batcher import BatchingEngine
from model_server.engines import Engine
from model_server.engines.base import BadOption
from model_server.settings import EngineSettings
from model_server.state import Loader, ModelState, load_from_settings
from schemas import codec, errors
from schemas.model_server import (
    FILE_FIELD,
    FILENAME_PARAM,
    HEALTH_PATH,
    MODEL_HEADER,
    STREAM_MEDIA_TYPE,
    STREAM_PARAM,
    TRANSCRIBE_PATH,
    ErrorBody,
    ErrorDetail,
    ErrorFrame,
    Frame,
    ResultFrame,
    TranscribeOptions,
)
from schemas.transcribe import TranscriptionResult

log = logging.getLogger("model_server")

JSON = "application/json"
# Clients may retry a 503 once the model has had a moment to load.
LOADING_RETRY_S = 1.0
MAX_FIELD_BYTES = 8 * 2**20  # a form field: four known speakers' samples, base64


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON, headers=headers)


def _error_response(exc: errors.AsrError) -> Response:
    detail = ErrorDetail(
        code=exc.code, message=exc.message, retry_after=exc.retry_after, kind=exc.kind, param=exc.param
    )
    body = ErrorBody(error=detail)
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return _json(body, int(exc.code), headers)


def create_app(engine_settings: EngineSettings, loader: Loader = load_from_settings) -> FastAPI:
    """``loader`` builds the engine from the settings; tests replace it to hold the server in its loading state."""
    state = ModelState(engine_settings, loader)
    limiter: anyio.CapacityLimiter | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal limiter
        # Created here because anyio limiters belong to the running event loop. Requests beyond it wait their
        # turn instead of piling decoded audio and model work onto the CPU at once.
        # With batching, as many as a batch holds: they wait in the batcher, not here.
        limiter = anyio.CapacityLimiter(max(1, engine_settings.concurrency, engine_settings.max_batch))
        log.info("loading model", extra={**vars(engine_settings), "weights": engine_settings.weights_spec})
        state.start_loading()
        yield
        log.info("model server stopped", extra={"model": engine_settings.model_id})

    app = FastAPI(title="ASR model server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.model = state

    @app.exception_handler(errors.AsrError)
    async def asr_error(_: Request, exc: errors.AsrError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(errors.AsrError(str(exc.status_code), str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _error_response(errors.AsrError(errors.BAD_REQUEST, str(exc)))

    @app.exception_handler(Exception)
    async def unexpected_error(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return _error_response(errors.AsrError(errors.INTERNAL, f"{type(exc).__name__}: {exc}"))

    @app.get(HEALTH_PATH)
    async def health() -> Response:
        report = state.health()
        return _json(report, 200 if report.status == "ok" else 503)

    @app.post(TRANSCRIBE_PATH)
    async def transcribe(request: Request) -> Response:
        received_at = time.perf_counter()
        logs.request_id.set(logs.clean_request_id(request.headers.get(codec.REQUEST_ID_HEADER)))
        wanted = request.headers.get(MODEL_HEADER)
        if wanted and wanted != engine_settings.model_id:
            raise errors.AsrError(
                errors.ErrorCode.WRONG_MODEL, f"this server runs {engine_settings.model_id}, not {wanted}"
            )
        engine = state.engine
        if engine is None:
            if state.status == "loading":
                raise errors.AsrError(errors.UNAVAILABLE, "model is still loading", retry_after=LOADING_RETRY_S)
            raise errors.AsrError(errors.UNAVAILABLE, f"model failed to load: {state.error}")
        if request.headers.get("content-type", "").startswith(
            ("multipart/form-data", "application/x-www-form-urlencoded")
        ):
            # Known speakers' samples travel as form fields (base64): room for them beyond Starlette's 1 MB.
            async with request.form(max_part_size=MAX_FIELD_BYTES) as form:
                upload = form.get(FILE_FIELD)
                if not isinstance(upload, UploadFile):
                    raise errors.AsrError(errors.BAD_REQUEST, "missing form field 'file' (the audio to transcribe)")
                options = _options(form)
                data = await upload.read()
                filename = upload.filename or "audio"
        else:
            # The raw form (what the model proxy sends): no multipart to build and parse for every upload.
            options = _options(request.query_params)
            data = await request.body()
            filename = request.query_params.get(FILENAME_PARAM) or "audio"
        if not data:
            raise errors.AsrError(errors.BAD_REQUEST, f"file {filename!r} is empty")
        if request.query_params.get(STREAM_PARAM, "").lower() == "true":
            assert limiter is not None
            return StreamingResponse(
                _streamed(engine, data, filename, options, engine_settings.model_id, received_at, limiter),
                media_type=STREAM_MEDIA_TYPE,
            )

        def work() -> TranscriptionResult:
            with _inside(engine):
                return pipeline.transcribe(
                    engine, data, filename, options, model_id=engine_settings.model_id, received_at=received_at
                )

        try:
            result = await anyio.to_thread.run_sync(work, limiter=limiter)
        except AudioDecodeError as exc:
            raise errors.AsrError(errors.ErrorCode.UNSUPPORTED_AUDIO, str(exc), param="file") from exc
        except BadOption as exc:
            raise errors.AsrError(errors.BAD_REQUEST, str(exc), param=exc.param) from exc
        log.info(
            "transcribed",
            extra={"file": filename, "duration": result.duration, "server_s": result.timing.server_s},
        )
        return _json(result)

    return app


async def _streamed(
    engine: Engine,
    data: bytes,
    filename: str,
    options: TranscribeOptions,
    model_id: str,
    received_at: float,
    limiter: anyio.CapacityLimiter,
) -> AsyncIterator[bytes]:
    """NDJSON frames as the worker thread decodes; a client that goes away stops the decode at the next segment."""
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[Frame | None] = asyncio.Queue()
    gone = threading.Event()

    def work() -> None:
        try:
            with _inside(engine):
                for frame in pipeline.stream(
                    engine, data, filename, options, model_id=model_id, received_at=received_at
                ):
                    if gone.is_set():
                        log.info("client gone: decoding stopped", extra={"file": filename})
                        return
                    loop.call_soon_threadsafe(frames.put_nowait, frame)
        except AudioDecodeError as exc:
            loop.call_soon_threadsafe(
                frames.put_nowait, _error_frame(errors.ErrorCode.UNSUPPORTED_AUDIO, str(exc), param="file")
            )
        except BadOption as exc:
            loop.call_soon_threadsafe(frames.put_nowait, _error_frame(errors.BAD_REQUEST, str(exc), param=exc.param))
        except Exception as exc:
            log.exception("streamed decoding failed")
            loop.call_soon_threadsafe(frames.put_nowait, _error_frame(errors.INTERNAL, f"{type(exc).__name__}: {exc}"))
        finally:
            loop.call_soon_threadsafe(frames.put_nowait, None)

    worker = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    try:
        while (frame := await frames.get()) is not None:
            if isinstance(frame, ResultFrame):
                result = frame.result
                log.info(
                    "transcribed",
                    extra={"file": filename, "duration": result.duration, "server_s": result.timing.server_s},
                )
            yield msgspec.json.encode(frame) + b"\n"
    finally:
        gone.set()  # a finished decode ignores it; one under way stops at its next segment
        if not worker.done():
            worker.add_done_callback(lambda task: task.exception())  # retrieved: nothing left to report


def _inside(engine: Engine) -> AbstractContextManager[None]:
    """A batching engine counts the requests it works on (model_server/batcher.py); others need nothing."""
    return engine.inside() if isinstance(engine, BatchingEngine) else nullcontext()


def _error_frame(code: str | errors.ErrorCode, message: str, param: str | None = None) -> ErrorFrame:
    exc = errors.AsrError(code, message, param=param)
    return ErrorFrame(error=ErrorDetail(code=exc.code, message=message, kind=exc.kind, param=param))


def _options(form: FormData | QueryParams) -> TranscribeOptions:
    return TranscribeOptions.from_form({name: _text_field(form, name) for name in TranscribeOptions.__struct_fields__})


def _text_field(form: FormData | QueryParams, name: str) -> str:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise errors.AsrError(errors.BAD_REQUEST, f"form field {name!r} must be text, not a file")
    return (value or "").strip()
