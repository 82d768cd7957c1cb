"""Health probing of model servers: waiting for a new one to become healthy, and checking running ones."""

from __future__ import annotations

import asyncio
import time

from actors.lifecycle.runtimes import ServerHandle
from framework.model_server import ModelServerClient
from schemas import errors
from schemas.errors import AsrError


class HealthProbe:
    def __init__(self, client: ModelServerClient, startup_timeout: float) -> None:
        self.client = client
        self.startup_timeout = startup_timeout

    async def problem(self, handle: ServerHandle) -> str:
        """'' when /health answers ok, else what is wrong."""
        return await self.client.problem(handle.url)

    async def wait_healthy(self, handle: ServerHandle) -> None:
        """Until /health says ok; 503 with the last thing it said when the server exits, reports a failed load,
        or is not healthy within the start-up timeout."""
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if handle.exited.done():
                raise AsrError(
                    errors.UNAVAILABLE,
                    f"model server for {handle.model} {handle.exited.result()} during start-up (last health: {last})",
                )
            status, last = await self.client.health(handle.url, timeout=2.0)
            if status == "ok":
                return
            if status == "error":
                raise AsrError(errors.UNAVAILABLE, f"model server for {handle.model} failed: {last}")
            await asyncio.sleep(0.1)
        raise AsrError(
            errors.UNAVAILABLE,
            f"model server for {handle.model} not healthy after {self.startup_timeout:g} s (last health: {last})",
        )
