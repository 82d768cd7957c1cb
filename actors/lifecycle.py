"""Lifecycle actor: starts model servers on demand, watches them, stops them when idle."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from actors.base import Actor, endpoint, on_event
from actors.config import Config
from actors.runtimes import LaunchSpec, Runtime, ServerHandle, choose_runtime
from schemas import errors, subjects
from schemas.errors import AsrError
from schemas.events import (
    Event,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
)
from schemas.gpu import Allocate, Allocation, Release, Released
from schemas.lifecycle import (
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.registry import GetModel, ModelInfo


@dataclass
class Server:
    model: ModelInfo
    handle: ServerHandle
    allocation: Allocation
    state: str = "starting"
    last_activity: float = field(default_factory=time.time)
    inflight: dict[str, float] = field(default_factory=dict)  # request id -> when it was ensured
    stopping: bool = False


class Lifecycle(Actor):
    """Ensure/stop/status of model servers; idle timeout; lifecycle events."""

    name = "lifecycle"

    def __init__(self, config: Config, runtime: Runtime | None = None, runtime_reason: str = "") -> None:
        super().__init__(config)
        if runtime is None:
            runtime, runtime_reason = choose_runtime(config)
        self.runtime, self.runtime_reason = runtime, runtime_reason
        self.servers: dict[str, Server] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.http = httpx.AsyncClient(timeout=5.0)
        self.cfg = config.lifecycle

    async def setup(self) -> None:
        self.log.info("runtime %s: %s", self.runtime.name, self.runtime_reason)
        self.startup_timeout = self.runtime.startup_timeout or self.cfg.startup_timeout
        await self._adopt()
        self.loop(self._reap_idle())

    async def teardown(self) -> None:
        for server in list(self.servers.values()):
            await self._stop(server, "shutdown")
        await self.runtime.close()
        await self.http.aclose()

    # -- endpoints -----------------------------------------------------------
    @endpoint(subjects.LIFECYCLE_ENSURE, EnsureServer)
    async def ensure(self, msg: EnsureServer) -> ServerStatus:
        model = await self.request(subjects.REGISTRY_GET, GetModel(id=msg.model), ModelInfo, timeout=5.0)
        async with self.locks[model.id]:
            server = self.servers.get(model.id)
            if server is not None and msg.restart and not server.handle.exited.done():
                problem = await self._health_problem(server.handle)
                if problem:
                    self.log.warning("replacing unhealthy server of %s: %s", model.id, problem)
                    await self._stop(server, "replaced")
                    server = None
            if server is not None and server.handle.exited.done():
                server = None  # its watcher reports the crash; start a fresh one
            cold = server is None
            if server is None:
                server = await self._start(model, reason="restart" if msg.restart else "request")
            server.last_activity = time.time()
            if msg.request_id:
                server.inflight[msg.request_id] = server.last_activity
            status = self._status(server)
            status.cold_start = cold
            return status

    @endpoint(subjects.LIFECYCLE_STOP, StopServer)
    async def stop_server(self, msg: StopServer) -> StopReply:
        model = await self.request(subjects.REGISTRY_GET, GetModel(id=msg.model), ModelInfo, timeout=5.0)
        async with self.locks[model.id]:
            server = self.servers.get(model.id)
            if server is None:
                return StopReply(model=model.id, stopped=False)
            await self._stop(server, msg.reason or "requested")
            return StopReply(model=model.id, stopped=True)

    @endpoint(subjects.LIFECYCLE_STATUS, LifecycleStatusRequest)
    async def status(self, msg: LifecycleStatusRequest) -> LifecycleStatus:
        servers = [self._status(s) for s in self.servers.values() if msg.model in (None, s.model.id)]
        return LifecycleStatus(runtime=self.runtime.name, runtime_reason=self.runtime_reason, servers=servers)

    @on_event(subjects.EVENTS_PREFIX + "transcribed.>")
    async def on_completed(self, event: Event) -> None:
        self._done(event)

    @on_event(subjects.EVENTS_PREFIX + "transcription_failed.>")
    async def on_failed(self, event: Event) -> None:
        self._done(event)

    def _done(self, event: Event) -> None:
        # The idle clock runs from the end of the last request, not from its start.
        if isinstance(event, TranscriptionCompleted | TranscriptionFailed):
            server = self.servers.get(event.model)
            if server is not None:
                server.inflight.pop(event.request_id, None)
                server.last_activity = time.time()

    async def _adopt(self) -> None:
        """Take over servers of this deployment that outlived a previous lifecycle actor."""
        for handle in await self.runtime.adopt():
            try:
                model = await self._model_when_ready(handle.model)
            except AsrError as exc:
                self.log.warning("stopping %s: cannot adopt it (%s)", handle.model, exc.message)
                await self.runtime.stop(handle)
                continue
            problem = await self._health_problem(handle)
            if problem:
                self.log.warning("stopping unhealthy %s instead of adopting it: %s", handle.model, problem)
                await self.runtime.stop(handle)
                continue
            allocation = await self._allocate(model)
            server = Server(model=model, handle=handle, allocation=allocation, state="ready")
            self.servers[model.id] = server
            self.loop(self._watch(server))
            self.log.info("adopted %s at %s", model.id, handle.url, extra={"model": model.id})
            await self.publish(
                ServerReady(
                    model=model.id,
                    runtime=self.runtime.name,
                    url=handle.url,
                    pid=handle.pid,
                    container_id=handle.container_id,
                    device=allocation.device,
                    adopted=True,
                )
            )

    async def _model_when_ready(self, model_id: str, wait: float = 30.0) -> ModelInfo:
        """The registry may start after us (e.g. both restarted at once): wait a little for it."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return await self.request(subjects.REGISTRY_GET, GetModel(id=model_id), ModelInfo)
            except AsrError as exc:
                if exc.code == errors.NOT_FOUND or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    # -- starting and stopping -------------------------------------------------
    async def _start(self, model: ModelInfo, reason: str) -> Server:
        await self.publish(ServerStarting(model=model.id, runtime=self.runtime.name, reason=reason))
        t0 = time.monotonic()
        allocation = await self._allocate(model)
        try:
            handle = await self.runtime.launch(LaunchSpec(model=model, device=allocation.device))
        except Exception as exc:
            await self._release(model.id)
            message = f"could not start model server for {model.id} ({self.runtime.name}): {exc}"
            await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=message))
            raise AsrError(errors.UNAVAILABLE, message) from exc
        server = Server(model=model, handle=handle, allocation=allocation)
        self.servers[model.id] = server
        try:
            await self._wait_healthy(handle)
        except AsrError as exc:
            if handle.note:
                exc.message = f"{exc.message} [{handle.note}]"
            await self._stop(server, "failed", publish=False)
            await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=exc.message))
            raise
        server.state = "ready"
        self.loop(self._watch(server))
        await self.publish(
            ServerReady(
                model=model.id,
                runtime=self.runtime.name,
                url=handle.url,
                pid=handle.pid,
                container_id=handle.container_id,
                device=allocation.device,
                startup_s=round(time.monotonic() - t0, 3),
            )
        )
        self.log.info("%s ready at %s", model.id, handle.url, extra={"model": model.id, "pid": handle.pid})
        return server

    async def _allocate(self, model: ModelInfo) -> Allocation:
        try:
            return await self.request(
                subjects.GPU_ALLOCATE, Allocate(model=model.id, memory_mb=model.gpu_memory_mb), Allocation
            )
        except AsrError as exc:
            # Without the gpu actor the safe choice is the CPU: it can never overcommit GPU memory.
            self.log.warning("gpu allocation for %s failed (%s): using the CPU", model.id, exc.message)
            return Allocation(model=model.id, device="cpu")

    async def _release(self, model_id: str) -> None:
        try:
            await self.request(subjects.GPU_RELEASE, Release(model=model_id), Released)
        except AsrError as exc:
            self.log.warning("gpu release for %s failed: %s", model_id, exc.message)

    async def _health_problem(self, handle: ServerHandle) -> str:
        """'' when /health answers ok, else what is wrong."""
        try:
            response = await self.http.get(f"{handle.url}/health")
        except httpx.HTTPError as exc:
            return f"/health unreachable: {exc!r}"
        if response.status_code == 200:
            return ""
        try:
            body = response.json()
            return str(body.get("error") or body.get("status") or response.text)
        except ValueError:
            return f"/health answered {response.status_code}"

    async def _wait_healthy(self, handle: ServerHandle) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if handle.exited.done():
                raise AsrError(
                    errors.UNAVAILABLE,
                    f"model server for {handle.model} {handle.exited.result()} during start-up (last health: {last})",
                )
            try:
                response = await self.http.get(f"{handle.url}/health", timeout=2.0)
                if response.status_code == 200:
                    return
                body = response.json()
                if body.get("status") == "error":
                    raise AsrError(errors.UNAVAILABLE, f"model server for {handle.model} failed: {body.get('error')}")
                last = str(body.get("status"))
            except (httpx.HTTPError, ValueError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.1)
        raise AsrError(
            errors.UNAVAILABLE,
            f"model server for {handle.model} not healthy after {self.startup_timeout:g} s (last health: {last})",
        )

    async def _watch(self, server: Server) -> None:
        reason = await server.handle.exited
        if server.stopping:
            return
        if self.servers.get(server.model.id) is server:
            del self.servers[server.model.id]
        await self._release(server.model.id)
        code = server.handle.exit_code
        self.log.warning("%s crashed: %s", server.model.id, reason, extra={"model": server.model.id})
        await self.publish(
            ServerCrashed(model=server.model.id, runtime=self.runtime.name, reason=reason, exit_code=code)
        )

    async def _stop(self, server: Server, reason: str, *, publish: bool = True) -> None:
        server.stopping = True
        server.state = "stopping"
        try:
            await self.runtime.stop(server.handle)
        finally:
            if self.servers.get(server.model.id) is server:
                del self.servers[server.model.id]
            server.state = "stopped"
            await self._release(server.model.id)
        if publish:
            await self.publish(ServerStopped(model=server.model.id, runtime=self.runtime.name, reason=reason))
        self.log.info("%s stopped (%s)", server.model.id, reason, extra={"model": server.model.id})

    async def _reap_idle(self) -> None:
        tick = min(1.0, self.cfg.inactivity_timeout / 5)
        stale_after = self.config.gateway.request_timeout + 30
        while True:
            await asyncio.sleep(tick)
            now = time.time()
            for model_id, server in list(self.servers.items()):
                # A proxy that died mid-request never reports back: forget such requests eventually.
                for request_id, since in list(server.inflight.items()):
                    if now - since > stale_after:
                        server.inflight.pop(request_id, None)
                if server.state != "ready" or server.inflight:
                    continue
                if now - server.last_activity >= self.cfg.inactivity_timeout:
                    async with self.locks[model_id]:
                        if self.servers.get(model_id) is server and not server.inflight:
                            await self._stop(server, "idle")

    def _status(self, server: Server) -> ServerStatus:
        expires = None if server.inflight else server.last_activity + self.cfg.inactivity_timeout
        return ServerStatus(
            model=server.model.id,
            state=server.state,
            runtime=self.runtime.name,
            url=server.handle.url,
            pid=server.handle.pid,
            container_id=server.handle.container_id,
            device=server.allocation.device,
            started_at=server.handle.started_at,
            last_activity=server.last_activity,
            expires_at=expires,
        )
