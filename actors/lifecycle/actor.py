"""Lifecycle actor: starts model servers on demand, admits them to GPU memory (evicting idle ones,
least recently used first), watches them, and stops them when idle.

Its record of each running server is kept in the JetStream key-value bucket ASR_SERVERS so that a
restarted lifecycle actor resumes idle timers of the containers it re-adopts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from actors.lifecycle.placement import eviction_order, expires_at, idle_timeout
from actors.lifecycle.records import ServerRecords
from actors.lifecycle.runtimes import LaunchSpec, Runtime, ServerHandle, choose_runtime
from framework.actor import Actor, endpoint, on_event
from framework.config import Config, start_budget
from schemas import errors, subjects
from schemas.durations import NEVER
from schemas.errors import AsrError
from schemas.events import (
    BreakerChanged,
    Event,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    ServerUnhealthy,
    TranscriptionCompleted,
    TranscriptionFailed,
)
from schemas.gpu import Allocate, Allocation, Bind, Release, Released
from schemas.lifecycle import (
    BreakerState,
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.registry import GetModel, ModelInfo

RETRY_AFTER_S = 5.0


@dataclass
class Server:
    model: ModelInfo
    handle: ServerHandle
    allocation: Allocation
    state: str = "starting"
    last_activity: float = field(default_factory=time.time)
    inflight: dict[str, float] = field(default_factory=dict)  # request id -> when it was ensured
    keep_alive: float | None = None  # the last request's keep_alive, seconds
    stopping: bool = False
    unhealthy: str = ""  # what the last failed health check said ('' when healthy)

    @property
    def model_id(self) -> str:
        return self.model.id


class Lifecycle(Actor):
    """Ensure/stop/status of model servers; GPU admission and eviction; idle timeout; lifecycle events."""

    name = "lifecycle"

    def __init__(self, config: Config, runtime: Runtime | None = None, runtime_reason: str = "") -> None:
        super().__init__(config)
        if runtime is None:
            runtime, runtime_reason = choose_runtime(config)
        self.runtime, self.runtime_reason = runtime, runtime_reason
        self.servers: dict[str, Server] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.capacity_freed = asyncio.Event()
        self.http = httpx.AsyncClient(timeout=5.0)
        self.cfg = config.lifecycle
        self.startup_timeout = runtime.startup_timeout or self.cfg.startup_timeout
        self.records: ServerRecords | None = None
        self.breakers: dict[str, BreakerChanged] = {}  # as the recovery actor announced them
        self.known_models: dict[str, ModelInfo] = {}  # name -> the registry's last answer for it

    async def setup(self) -> None:
        self.log.info("runtime %s: %s", self.runtime.name, self.runtime_reason)
        self.records = await ServerRecords.open(self.bus)
        for event in await self.last_events(subjects.EVENTS_PREFIX + "breaker.>"):
            await self.on_breaker(event)
        await self._adopt()
        self.loop(self._reap_idle())
        self.loop(self._monitor_health())
        for model_id in self.cfg.preload:
            self.spawn(self._preload(model_id))

    async def teardown(self) -> None:
        for server in list(self.servers.values()):
            await self._stop(server, "shutdown")
        await self.runtime.close()
        await self.http.aclose()

    # -- endpoints -----------------------------------------------------------
    @endpoint(subjects.LIFECYCLE_ENSURE, EnsureServer)
    async def ensure(self, msg: EnsureServer) -> ServerStatus:
        deadline = time.monotonic() + (msg.timeout if msg.timeout is not None else start_budget(self.config))
        model = await self._model(msg.model)
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
                self._check_breaker(model.id, probe=msg.probe)
                server = await self._start(model, "restart" if msg.restart else "request", deadline)
            server.last_activity = time.time()
            if msg.keep_alive is not None:
                server.keep_alive = msg.keep_alive
            if msg.request_id:
                server.inflight[msg.request_id] = server.last_activity
            status = self._status(server)
            status.cold_start = cold
            return status

    @endpoint(subjects.LIFECYCLE_STOP, StopServer)
    async def stop_server(self, msg: StopServer) -> StopReply:
        model = await self._model(msg.model)
        async with self.locks[model.id]:
            server = self.servers.get(model.id)
            if server is None:
                return StopReply(model=model.id, stopped=False)
            if server.inflight and not msg.force:
                raise AsrError(
                    errors.CONFLICT,
                    f"{model.id} is serving {len(server.inflight)} request(s); stop it anyway with force",
                )
            await self._stop(server, msg.reason or "requested")
            return StopReply(model=model.id, stopped=True)

    @endpoint(subjects.LIFECYCLE_STATUS, LifecycleStatusRequest)
    async def status(self, msg: LifecycleStatusRequest) -> LifecycleStatus:
        servers = [self._status(s) for s in self.servers.values() if msg.model in (None, s.model.id)]
        breakers = [
            BreakerState(model=b.model, state=b.state, reason=b.reason, retry_at=b.retry_at)
            for b in self.breakers.values()
            if msg.model in (None, b.model)
        ]
        return LifecycleStatus(
            runtime=self.runtime.name, runtime_reason=self.runtime_reason, servers=servers, breakers=breakers
        )

    @on_event(subjects.EVENTS_PREFIX + "breaker.>")
    async def on_breaker(self, event: Event) -> None:
        if isinstance(event, BreakerChanged):
            if event.state == "closed":
                self.breakers.pop(event.model, None)
            else:
                self.breakers[event.model] = event

    def _check_breaker(self, model_id: str, *, probe: bool) -> None:
        """An open (or half-open) circuit lets only the recovery actor's probe start the model."""
        breaker = self.breakers.get(model_id)
        if breaker is None or probe:
            return
        wait = max(1.0, (breaker.retry_at or time.time()) - time.time())
        raise AsrError(
            errors.UNAVAILABLE,
            f"{model_id} is unavailable: its circuit breaker is {breaker.state.replace('_', '-')} after repeated "
            f"failures ({breaker.reason}); next try in {wait:.0f} s",
            retry_after=wait,
            kind="breaker_open",
        )

    @on_event(subjects.EVENTS_PREFIX + "transcribed.>")
    async def on_completed(self, event: Event) -> None:
        await self._done(event)

    @on_event(subjects.EVENTS_PREFIX + "transcription_failed.>")
    async def on_failed(self, event: Event) -> None:
        await self._done(event)

    async def _done(self, event: Event) -> None:
        # The idle clock runs from the end of the last request, not from its start.
        if not isinstance(event, TranscriptionCompleted | TranscriptionFailed):
            return
        server = self.servers.get(event.model)
        if server is None:
            return
        server.inflight.pop(event.request_id, None)
        server.last_activity = time.time()
        if not server.inflight and self._idle_timeout(server) == 0:
            self.spawn(self._stop_if_idle(server, "keep_alive"))
        else:
            await self._save(server)

    # -- admission -------------------------------------------------------------
    async def _admit(self, model: ModelInfo, deadline: float) -> Allocation:
        """GPU memory (and a container slot) for `model`: evict idle servers LRU first, then fall back to
        the CPU when the model allows it, else wait for room until the caller's deadline."""
        while True:
            limit = self.cfg.max_concurrent_containers
            if limit and len(self.servers) >= limit:
                if await self._evict_one(model.id, holding_gpu=False):
                    continue
                await self._wait_for_room(
                    model, deadline, f"max_concurrent_containers = {limit} servers run and all are busy"
                )
                continue
            try:
                return await self.request(
                    subjects.GPU_ALLOCATE, Allocate(model=model.id, memory_mb=model.gpu_memory_mb), Allocation
                )
            except AsrError as exc:
                if exc.code != errors.NO_ROOM:
                    # Without the gpu actor the safe choice is the CPU: it can never overcommit GPU memory.
                    self.log.warning("gpu allocation for %s failed (%s): using the CPU", model.id, exc.message)
                    return Allocation(model=model.id, device="cpu")
                if await self._evict_one(model.id, holding_gpu=True):
                    continue
                if model.cpu_fallback:
                    self.log.info("%s on the CPU: %s", model.id, exc.message, extra={"model": model.id})
                    return Allocation(model=model.id, device="cpu")
                await self._wait_for_room(model, deadline, exc.message)

    async def _evict_one(self, for_model: str, *, holding_gpu: bool) -> bool:
        """Stop the least recently used idle server; for GPU room only one that holds GPU memory."""
        locked = [m for m, lock in self.locks.items() if lock.locked()]
        servers = [s for s in self.servers.values() if s.allocation.memory_mb > 0 or not holding_gpu]
        for victim in eviction_order(servers, for_model, locked):
            async with self.locks[victim.model_id]:
                if self.servers.get(victim.model_id) is not victim or victim.inflight:
                    continue
                self.log.info("evicting %s to make room for %s", victim.model_id, for_model)
                await self._stop(victim, "evicted")
                return True
        return False

    async def _wait_for_room(self, model: ModelInfo, deadline: float, why: str) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AsrError(
                errors.UNAVAILABLE,
                f"no room for {model.id}: {why}; no idle server to evict and cpu_fallback is off",
                retry_after=RETRY_AFTER_S,
            )
        self.capacity_freed.clear()
        # Other lifecycle actors free memory too, without telling us: look again at least every second.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.capacity_freed.wait(), min(remaining, 1.0))

    # -- adoption and records ----------------------------------------------------
    async def _adopt(self) -> None:
        """Take over servers of this deployment that outlived a previous lifecycle actor."""
        assert self.records is not None
        records = await self.records.load()
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
            record = records.pop(model.id, None)
            allocation = await self._admit(model, time.monotonic())
            server = Server(model=model, handle=handle, allocation=allocation, state="ready")
            if record is not None:  # resume its idle clock rather than restart it
                server.last_activity = record.last_activity or server.last_activity
                server.keep_alive = record.keep_alive
            self.servers[model.id] = server
            await self._ready(server, adopted=True)
        for model_id in records:  # recorded, but gone (e.g. local processes die with their lifecycle actor)
            await self._forget(model_id)

    async def _save(self, server: Server) -> None:
        if self.records is not None:
            await self.records.save(self._status(server))

    async def _forget(self, model_id: str) -> None:
        if self.records is not None:
            await self.records.forget(model_id)
        await self._release(model_id)

    async def _model(self, name: str) -> ModelInfo:
        """The model a name means. While the registry restarts, the answer it last gave for that name
        serves, so that requests for models already known ride through its restart."""
        try:
            model = await self.request(subjects.REGISTRY_GET, GetModel(id=name), ModelInfo, timeout=5.0)
        except AsrError as exc:
            known = self.known_models.get(name)
            if known is None or exc.code not in (errors.UNAVAILABLE, errors.TIMEOUT):
                raise
            return known
        self.known_models[name] = model
        return model

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

    async def _preload(self, model_id: str) -> None:
        try:
            await self.ensure(EnsureServer(model=model_id))
        except AsrError as exc:
            self.log.warning("preload of %s failed: %s", model_id, exc.message)

    # -- starting and stopping -------------------------------------------------
    async def _start(self, model: ModelInfo, reason: str, deadline: float) -> Server:
        await self.publish(ServerStarting(model=model.id, runtime=self.runtime.name, reason=reason))
        t0 = time.monotonic()
        try:
            allocation = await self._admit(model, deadline)
        except AsrError as exc:
            await self.publish(
                ServerFailed(model=model.id, runtime=self.runtime.name, reason=exc.message, cause="no_room")
            )
            raise
        run_on = "cpu" if self.config.gpu.accounting_only else allocation.device
        try:
            handle = await self.runtime.launch(LaunchSpec(model=model, device=run_on))
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
        await self._ready(server, startup_s=round(time.monotonic() - t0, 3))
        return server

    async def _ready(self, server: Server, *, startup_s: float = 0.0, adopted: bool = False) -> None:
        """A healthy server: watch it, tell the gpu actor its pid (for measuring), record it, announce it."""
        server.state = "ready"
        handle, allocation = server.handle, server.allocation
        self.loop(self._watch(server))
        if allocation.device_index is not None and handle.pid:
            with contextlib.suppress(AsrError):
                await self.request(subjects.GPU_BIND, Bind(model=server.model_id, pid=handle.pid), Allocation)
        await self._save(server)
        await self.publish(
            ServerReady(
                model=server.model_id,
                runtime=self.runtime.name,
                url=handle.url,
                pid=handle.pid,
                container_id=handle.container_id,
                device=allocation.device,
                startup_s=startup_s,
                adopted=adopted,
            )
        )
        self.log.info(
            "%s %s at %s", server.model_id, "adopted" if adopted else "ready", handle.url, extra={"pid": handle.pid}
        )

    async def _release(self, model_id: str) -> None:
        try:
            await self.request(subjects.GPU_RELEASE, Release(model=model_id), Released)
        except AsrError as exc:
            self.log.warning("gpu release for %s failed: %s", model_id, exc.message)

    async def _health(self, handle: ServerHandle, timeout: float = 5.0) -> tuple[str, str]:
        """(status, detail) from the server's /health: ok, loading, error (detail: what failed), or
        unreachable (detail: why no answer came)."""
        try:
            response = await self.http.get(f"{handle.url}/health", timeout=timeout)
        except httpx.HTTPError as exc:
            return "unreachable", f"/health unreachable: {exc!r}"
        if response.status_code == 200:
            return "ok", ""
        try:
            body = response.json()
        except ValueError:
            return "error", f"/health answered {response.status_code}"
        status = str(body.get("status") or "error")
        return status, str(body.get("error") or status)

    async def _health_problem(self, handle: ServerHandle) -> str:
        """'' when /health answers ok, else what is wrong."""
        status, detail = await self._health(handle)
        return "" if status == "ok" else detail

    async def _wait_healthy(self, handle: ServerHandle) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if handle.exited.done():
                raise AsrError(
                    errors.UNAVAILABLE,
                    f"model server for {handle.model} {handle.exited.result()} during start-up (last health: {last})",
                )
            status, last = await self._health(handle, timeout=2.0)
            if status == "ok":
                return
            if status == "error":
                raise AsrError(errors.UNAVAILABLE, f"model server for {handle.model} failed: {last}")
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
        await self._forget(server.model.id)
        self.capacity_freed.set()
        self.log.warning("%s crashed: %s", server.model.id, reason, extra={"model": server.model.id})
        await self.publish(
            ServerCrashed(
                model=server.model.id, runtime=self.runtime.name, reason=reason, exit_code=server.handle.exit_code
            )
        )

    async def _stop(self, server: Server, reason: str, *, publish: bool = True) -> None:
        server.stopping = True
        server.state = "stopping"
        try:
            await self.runtime.stop(server.handle)
        except Exception as exc:
            # E.g. the Docker daemon is gone: the server is gone for us either way; a leftover container
            # is removed by name when the model starts again.
            self.log.warning("stopping %s failed: %s", server.model_id, exc)
        finally:
            if self.servers.get(server.model.id) is server:
                del self.servers[server.model.id]
            server.state = "stopped"
            await self._forget(server.model.id)
            self.capacity_freed.set()
        if publish:
            await self.publish(ServerStopped(model=server.model.id, runtime=self.runtime.name, reason=reason))
        self.log.info("%s stopped (%s)", server.model.id, reason, extra={"model": server.model.id})

    async def _stop_if_idle(self, server: Server, reason: str) -> None:
        async with self.locks[server.model.id]:
            if self.servers.get(server.model.id) is server and not server.inflight:
                await self._stop(server, reason)

    async def _monitor_health(self) -> None:
        """Ask every ready server's /health each health_check_interval; a failure is announced once
        (`unhealthy`, with what /health said) and the recovery actor decides what to do."""
        while True:
            await asyncio.sleep(self.cfg.health_check_interval)
            for server in list(self.servers.values()):
                if server.state != "ready" or server.stopping or self.locks[server.model_id].locked():
                    continue
                problem = await self._health_problem(server.handle)
                if problem and not server.unhealthy:
                    self.log.warning("%s is unhealthy: %s", server.model_id, problem)
                    await self.publish(
                        ServerUnhealthy(model=server.model_id, runtime=self.runtime.name, reason=problem)
                    )
                server.unhealthy = problem

    def _idle_timeout(self, server: Server) -> float:
        return idle_timeout(server.keep_alive, server.model.inactivity_timeout, self.cfg.inactivity_timeout)

    async def _reap_idle(self) -> None:
        tick = min(1.0, self.cfg.inactivity_timeout / 5)
        stale_after = self.config.gateway.request_timeout + 30
        while True:
            await asyncio.sleep(tick)
            now = time.time()
            for server in list(self.servers.values()):
                # A proxy that died mid-request never reports back: forget such requests eventually.
                for request_id, since in list(server.inflight.items()):
                    if now - since > stale_after:
                        server.inflight.pop(request_id, None)
                if server.state != "ready" or server.inflight:
                    continue
                timeout = self._idle_timeout(server)
                if timeout != NEVER and now - server.last_activity >= timeout:
                    await self._stop_if_idle(server, "idle" if server.keep_alive is None else "keep_alive")

    def _status(self, server: Server) -> ServerStatus:
        timeout = self._idle_timeout(server)
        return ServerStatus(
            model=server.model.id,
            state=server.state,
            runtime=self.runtime.name,
            url=server.handle.url,
            pid=server.handle.pid,
            container_id=server.handle.container_id,
            device=server.allocation.device,
            memory_mb=server.allocation.memory_mb,
            started_at=server.handle.started_at,
            last_activity=server.last_activity,
            expires_at=expires_at(server.last_activity, bool(server.inflight), timeout),
            inflight=len(server.inflight),
            keep_alive=timeout,
        )
