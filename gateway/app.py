"""The HTTP front door: OpenAI-compatible transcription API over NATS request/reply, plus the
operations API (/health, /metrics, /api/ps) and the event stream (/v1/events, /ws)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser
from starlette.types import ASGIApp

from framework.config import Config
from gateway import event_routes, job_routes, openai_routes, ops_routes, options_routes, pull_routes, realtime_routes
from gateway.auth import ApiKeys, KeyRing
from gateway.browsers import BrowserGuard
from gateway.connection import GatewayConnection
from gateway.errors import asr_error_handler, validation_error_handler
from gateway.http_metrics import HttpMetrics
from gateway.limits import UploadLimit
from gateway.request_id import RequestId
from schemas.errors import AsrError

# Uploads up to this size are parsed in memory; Starlette's default (1 MB) writes every larger file to disk and
# reads it back, which costs a request of a minute of audio more than the rest of the gateway's work.
MultiPartParser.spool_max_size = 16 * 2**20
CONSOLE = Path(__file__).resolve().parent / "console"


def create_app(config: Config) -> ASGIApp:
    connection = GatewayConnection(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await connection.start()
        yield
        await connection.stop()

    # A text field up to 2 MiB: a known speaker's sample (1 MiB of audio) as a base64 data URL.
    app = FastAPI(title="ASR Pro", version="0.1.0", lifespan=lifespan, form_limits={"max_part_size": 2 * 2**20})
    app.state.connection = connection
    app.state.config = config
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(config.gateway.cors_origins),
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-Id", "Retry-After"],
    )
    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        """The operator's console (the API's own documentation stays at /docs)."""
        return FileResponse(CONSOLE / "index.html")

    app.add_exception_handler(AsrError, asr_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    routes = (openai_routes, job_routes, ops_routes, event_routes, options_routes, pull_routes, realtime_routes)
    for module in routes:
        app.include_router(module.router)
    # The limit is on the file; multipart framing and form fields get a little slack on top.
    # A job's audio may be far larger than a synchronous request's: it streams to the store either way.
    jobs_limit = (int(config.jobs.max_upload_mb * 2**20), "jobs.max_upload_mb")
    limited = UploadLimit(
        app, int(config.gateway.max_upload_mb * 2**20), slack=64 * 1024, paths={"/v1/audio/jobs": jobs_limit}
    )
    gw = config.gateway
    keyed = ApiKeys(limited, KeyRing(config.gateway))
    guarded = BrowserGuard(
        keyed, allowed_hosts=list(gw.allowed_hosts), cors_origins=list(gw.cors_origins), bound_host=gw.host
    )
    return HttpMetrics(RequestId(guarded))
