"""The lifecycle actor's side of its node's gpu actor: GPU memory allocated and released per model, the pid of a
server that holds some (NVML measures processes), and the node's devices (for its heartbeat)."""

from __future__ import annotations

import contextlib

from actors.lifecycle.server import Server
from framework.actor import Actor
from schemas import endpoints
from schemas.errors import AsrError
from schemas.gpu import Allocate, Allocation, Bind, GpuDevice, GpuStatusRequest, Release
from schemas.registry import ModelInfo


class GpuClient:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor  # whose connection asks, and whose node's gpu actor answers

    async def allocate(self, model: ModelInfo) -> Allocation:
        need = Allocate(model=model.id, memory_mb=model.gpu_memory_mb)
        return await self.actor.request(endpoints.GPU_ALLOCATE.on(self.actor.node_name), need)

    async def release(self, model_id: str) -> None:
        try:
            await self.actor.request(endpoints.GPU_RELEASE.on(self.actor.node_name), Release(model=model_id))
        except AsrError as exc:
            self.actor.log.warning("gpu release for %s failed: %s", model_id, exc.message)

    async def bind(self, server: Server) -> None:
        """Tell the gpu actor the pid of a server holding GPU memory (NVML measures processes)."""
        if server.allocation.device_index is not None and server.handle.pid:
            with contextlib.suppress(AsrError):
                bind = Bind(model=server.model_id, pid=server.handle.pid)
                await self.actor.request(endpoints.GPU_BIND.on(self.actor.node_name), bind)

    async def devices(self) -> list[GpuDevice]:
        """This node's GPUs, as the gpu actor sees them (for the node's heartbeat)."""
        try:
            status = await self.actor.request(
                endpoints.GPU_STATUS.on(self.actor.node_name), GpuStatusRequest(), timeout=2.0
            )
            return status.devices
        except AsrError:
            return []
