"""The HTTP front door: OpenAI-compatible transcription API over NATS request/reply, plus the
operations API (/health, /metrics, /api/ps) and the event stream (/v1/events, /ws)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from framework.config import Config
from gateway import event_routes, openai_routes, ops_routes
from gateway.bus import GatewayBus
from gateway.errors import asr_error_handler
from gateway.limits import UploadLimit
from schemas.errors import AsrError


def create_app(config: Config) -> ASGIApp:
    nats_bus = GatewayBus(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await nats_bus.start()
        yield
        await nats_bus.stop()

    app = FastAPI(title="ASR Pro", version="0.1.0", lifespan=lifespan)
    app.state.bus = nats_bus
    app.state.config = config
    app.add_exception_handler(AsrError, asr_error_handler)
    for module in (openai_routes, ops_routes, event_routes):
        app.include_router(module.router)
    # The limit is on the file; multipart framing and form fields get a little slack on top.
    return UploadLimit(app, int(config.gateway.max_upload_mb * 2**20), slack=64 * 1024)
