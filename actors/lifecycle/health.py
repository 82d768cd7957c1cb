"""Health probing of model servers: waiting for a new one to become healthy, and checking running ones."""

from __future__ import annotations

import asyncio
import time

from actors.lifecycle.runtimes import ServerHandle
from framework.model_server import ModelServerClient
from schemas import errors
from schemas.errors import AsrError, ErrorCode
from schemas.model_server import Health


class HealthProbe:
    def __init__(self, client: ModelServerClient, startup_timeout: float) -> None:
        self.client = client
        self.startup_timeout = startup_timeout

    async def problem(self, handle: ServerHandle) -> str:
        """'' when /health answers ok, else what is wrong."""
        return await self.client.problem(handle.url)

    async def wait_healthy(self, handle: ServerHandle, timeout: float | None = None) -> Health | None:
        """Until /health says ok, returning its report (what the engine runs on); 503 with the last thing it said
        when the server exits, reports a failed load (gpu_unusable when the GPU could not run it), or is not
        healthy within the start-up timeout."""
        startup_timeout = timeout or self.startup_timeout
        deadline = time.monotonic() + startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if handle.exited.done():
                raise AsrError(
                    errors.UNAVAILABLE,
                    f"model server for {handle.model} {handle.exited.result()} during start-up (last health: {last})",
                )
            status, last, report = await self.client.reading(handle.url, timeout=2.0)
            if status == "ok":
                return report
            if status == "gpu":
                message = f"model server for {handle.model} cannot run on this GPU: {last}"
                raise AsrError(errors.UNAVAILABLE, message, kind=ErrorCode.GPU_UNUSABLE)
            if status == "error":
                raise AsrError(errors.UNAVAILABLE, f"model server for {handle.model} failed: {last}")
            await asyncio.sleep(0.1)
        raise AsrError(
            errors.UNAVAILABLE,
            f"model server for {handle.model} not healthy after {startup_timeout:g} s (last health: {last})",
        )
