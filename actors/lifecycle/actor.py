"""Lifecycle actor: starts model servers on demand, admits them to GPU memory (`placement`), watches them
(`health`), stops them when idle, and records them (`records`) so that a restarted lifecycle actor re-adopts
the servers that outlived it and resumes their idle clocks."""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
from nats.js.kv import KeyValue

from actors.lifecycle.health import HealthProbe
from actors.lifecycle.janitor import NodeJanitor
from actors.lifecycle.node import NodeBeacon
from actors.lifecycle.placement import Placement, idle_timeout
from actors.lifecycle.records import KvServerRecords, ServerRecords
from actors.lifecycle.runtimes import LaunchSpec, Runtime, choose_runtime
from actors.lifecycle.server import Fleet, Server
from framework.actor import Actor, endpoint, on_event
from framework.catalogue import Catalogue
from framework.config import Config, start_budget
from framework.kv_view import KvView, heartbeats
from framework.model_server import ModelServerClient
from schemas import endpoints, errors, subjects
from schemas.durations import NEVER
from schemas.errors import GPU_UNUSABLE_KIND, AsrError
from schemas.events import (
    BreakerChanged,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    ServerUnhealthy,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionStarted,
)
from schemas.gpu import Allocate, Allocation, Bind, GpuDevice, GpuStatusRequest, Release
from schemas.lifecycle import (
    BreakerState,
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.nodes import NodeRecord, alive
from schemas.registry import InstalledModels, InstalledState, ModelInfo, installed_key, not_installed

# Activity is recorded (for idle clocks after a restart) at most this often per server: a burst of requests
# costs one KV write, not one each.
RECORD_ACTIVITY_EVERY_S = 2.0
INSTALLED_CHECK_EVERY_S = 10.0
EXIT_NOTICE_S = 1.0
# Between withdrawing an idle server from the proxies' view and stopping it: far longer than an event takes.
RETIRE_GRACE_S = 0.3


class Lifecycle(Actor):
    """Ensure/stop/status of model servers; GPU admission and eviction; idle timeout; lifecycle events."""

    name = "lifecycle"

    def __init__(
        self,
        config: Config,
        runtime: Runtime | None = None,
        runtime_reason: str = "",
        *,
        catalogue: Catalogue | None = None,
        records: ServerRecords | None = None,
        model_server: ModelServerClient | None = None,
    ) -> None:
        super().__init__(config)
        if runtime is None:
            runtime, runtime_reason = choose_runtime(config)
        self.runtime, self.runtime_reason = runtime, runtime_reason
        self.cfg = config.lifecycle
        self.fleet = Fleet()
        self.catalogue = catalogue or Catalogue()
        self.records = records
        self.model_server = model_server or ModelServerClient(timeout=10.0)
        self.probe = HealthProbe(self.model_server, runtime.startup_timeout or self.cfg.startup_timeout)
        self.placement = Placement(self.fleet, self.cfg.max_concurrent_containers, self._allocate, self._retire)
        self.breakers: dict[str, BreakerChanged] = {}  # as the recovery actor announced them
        self._recording: set[str] = set()  # models with an activity record pending
        self.installed = InstalledModels()  # what this host has, as last reported
        self._settings: KeyValue | None = None
        self.node = NodeBeacon(
            config, self.instance, self.runtime.name, lambda: list(self.servers), self._devices, self._installed_here
        )
        self.janitor: NodeJanitor | None = None
        self.heartbeats: KvView[NodeRecord] = heartbeats()

    @property
    def servers(self) -> dict[str, Server]:
        return self.fleet.servers

    async def setup(self) -> None:
        self.log.info("runtime %s: %s", self.runtime.name, self.runtime_reason)
        if self.nc is not None:
            await self.catalogue.follow(self.connection, wait=30.0)
            js = self.connection.jetstream()
            if self.records is None:
                self.records = await KvServerRecords.open(self.connection, self.node_name)
            self._settings = await js.key_value(subjects.SETTINGS_BUCKET)
            nodes = await js.key_value(subjects.NODES_BUCKET)
            await self.node.claim(nodes)
            self.loop(self.node.run())
            await self.heartbeats.follow(self.connection, wait=5.0)
            self.janitor = NodeJanitor(
                self.node_name,
                self.config.node.dead_after,
                self.heartbeats,
                nodes,
                await js.key_value(subjects.SERVERS_BUCKET),
                await js.key_value(subjects.GPU_BUCKET),
                self._settings,
                self._announce_lost,
            )
            self.loop(self._sweep_lost_nodes())
        self.records = self.records or ServerRecords()
        await self._adopt()
        await self.report_installed()
        self.loop(self._reap_idle())
        self.loop(self._monitor_health())
        self.loop(self._watch_installed())
        for model_id in self.cfg.preload:
            self.spawn(self._preload(model_id))

    async def teardown(self) -> None:
        for server in list(self.servers.values()):
            await self._stop(server, "shutdown")
        await self.node.leave()
        await self.heartbeats.stop()
        await self.runtime.close()
        await self.catalogue.stop()
        await self.model_server.aclose()

    # -- endpoints -----------------------------------------------------------
    @endpoint(endpoints.LIFECYCLE_ENSURE)
    async def ensure(self, msg: EnsureServer) -> ServerStatus:
        deadline = time.monotonic() + (msg.timeout if msg.timeout is not None else start_budget(self.config))
        model = self.catalogue.resolve(msg.model)
        async with self.fleet.locks[model.id]:
            server = self.servers.get(model.id)
            if server is not None and msg.restart and not server.handle.exited.done():
                problem = await self.probe.problem(server.handle)
                if problem:
                    # One that does not answer may just have died: give its exit a moment to be noticed, so that
                    # its watcher reports the crash it is instead of this replacing a corpse.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(server.handle.exited), EXIT_NOTICE_S)
                if problem and not server.handle.exited.done():
                    self.log.warning("replacing unhealthy server of %s: %s", model.id, problem)
                    await self._stop(server, "replaced")
                    server = None
            if server is not None and server.handle.exited.done():
                server = None  # its watcher reports the crash; start a fresh one
            cold = server is None
            if server is None:
                await self._check_installed(model)
                self._check_breaker(model.id, probe=msg.probe)
                try:
                    server = await self._start(model, "restart" if msg.restart else "request", deadline)
                except BaseException:
                    if self.records is not None and model.id not in self.servers:
                        await self.records.forget(model.id)  # its `starting` record
                    raise
            server.begin(msg.request_id, msg.keep_alive)
            status = self._status(server)
            status.cold_start = cold
            return status

    @endpoint(endpoints.LIFECYCLE_STOP)
    async def stop_server(self, msg: StopServer) -> StopReply:
        model = self.catalogue.resolve(msg.model)
        async with self.fleet.locks[model.id]:
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

    @endpoint(endpoints.LIFECYCLE_STATUS)
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

    # -- events ----------------------------------------------------------------
    @on_event(BreakerChanged, replay="last")
    async def on_breaker(self, event: BreakerChanged) -> None:
        if event.state == "closed":
            self.breakers.pop(event.model, None)
        else:
            self.breakers[event.model] = event

    def _mine(self, event: TranscriptionStarted | TranscriptionCompleted | TranscriptionFailed) -> Server | None:
        """The server of ours an event is about: a proxy's events name the node whose server it used."""
        if event.node and event.node != self.node_name:
            return None
        return self.servers.get(event.model)

    @on_event(ServerStopped)
    async def on_taken_for_lost(self, event: ServerStopped) -> None:
        """Another node's janitor took this node for lost (a partition, our bus away longer than the lease) while
        its server still runs here: record it and hold its GPU memory again."""
        server = self.servers.get(event.model)
        if event.reason != "node_lost" or event.node != self.node_name or server is None or server.stopping:
            return
        self.log.warning("taken for lost while alive: recording %s again", event.model, extra={"model": event.model})
        if server.allocation.memory_mb:
            with contextlib.suppress(AsrError):
                server.allocation = await self._allocate(server.model)
        await self._save(server)
        self.installed = InstalledModels()  # written again at the next check (the janitor removed our report)

    @on_event(TranscriptionStarted)
    async def on_started(self, event: TranscriptionStarted) -> None:
        """A proxy forwards a request to a ready server without asking us: its event is the activity."""
        server = self._mine(event)
        if server is None or server.stopping:
            return
        server.begin(event.request_id, event.keep_alive)
        self._record_soon(server)  # a long request is recorded busy: a restarted lifecycle actor must not stop it

    @on_event(TranscriptionCompleted, TranscriptionFailed)
    async def on_done(self, event: TranscriptionCompleted | TranscriptionFailed) -> None:
        # The idle clock runs from the end of the last request, not from its start.
        server = self._mine(event)
        if server is None:
            return
        server.inflight.pop(event.request_id, None)
        server.last_activity = time.time()
        if not server.inflight and self._idle_timeout(server) == 0:
            self.spawn(self._stop_if_idle(server, "keep_alive"))
        else:
            self._record_soon(server)

    def _record_soon(self, server: Server) -> None:
        if server.model_id not in self._recording:
            self._recording.add(server.model_id)
            self.spawn(self._record_activity(server))

    async def _record_activity(self, server: Server) -> None:
        try:
            await asyncio.sleep(RECORD_ACTIVITY_EVERY_S)
            if self.servers.get(server.model_id) is server and not server.stopping:
                await self._save(server)
        finally:
            self._recording.discard(server.model_id)

    # -- installed weights --------------------------------------------------------------
    async def _check_installed(self, model: ModelInfo) -> None:
        """No weights here is not a failure of the model: 404 with the hint, never a breaker's business."""
        state = await asyncio.to_thread(self.runtime.installed, model)
        if state.installed:
            return
        missing = f"{state.where}, missing {state.missing}" if state.where else state.missing
        error = not_installed(msgspec.structs.replace(model, installed=False, installed_where=missing))
        await self.publish(
            ServerFailed(model=model.id, runtime=self.runtime.name, reason=error.message, cause="not_installed")
        )
        self.spawn(self.report_installed())
        raise error

    async def report_installed(self) -> None:
        """What this host has, for the registry to show (KV ASR_SETTINGS key `installed`), when it changed."""
        listing = self.catalogue.listing
        if listing is None:
            return
        states = await asyncio.to_thread(lambda: [self.runtime.installed(m) for m in listing.models])
        found = InstalledModels(
            models={
                s.model: InstalledState(
                    installed=s.installed, where=s.where, missing=s.missing, size_bytes=s.size_bytes
                )
                for s in states
            }
        )
        if found == self.installed:
            return
        self.installed = found
        if self._settings is not None:
            try:
                await self._settings.put(installed_key(self.node_name), msgspec.msgpack.encode(found))
            except Exception as exc:  # reported again at the next check
                self.log.warning("could not report installed models: %s", exc)
                self.installed = InstalledModels()

    async def _watch_installed(self) -> None:
        # `asrpro models pull` runs beside us: look again now and then.
        while True:
            await asyncio.sleep(INSTALLED_CHECK_EVERY_S)
            await self.report_installed()

    def _opened_by_a_lost_node(self, breaker: BreakerChanged) -> bool:
        opener = breaker.node
        if not opener or opener == self.node_name or self.janitor is None:
            return False
        return opener not in alive(self.heartbeats.values.values(), self.config.node.dead_after)

    def _check_breaker(self, model_id: str, *, probe: bool) -> None:
        """An open (or half-open) circuit lets only the recovery actor's probe start the model."""
        breaker = self.breakers.get(model_id)
        if breaker is None or probe:
            return
        if self._opened_by_a_lost_node(breaker):
            return  # nobody would ever probe it
        wait = max(1.0, (breaker.retry_at or time.time()) - time.time())
        raise AsrError(
            errors.UNAVAILABLE,
            f"{model_id} is unavailable: its circuit breaker is {breaker.state.replace('_', '-')} after repeated "
            f"failures ({breaker.reason}); next try in {wait:.0f} s",
            retry_after=wait,
            kind="breaker_open",
        )

    # -- adoption and records ----------------------------------------------------
    async def _adopt(self) -> None:
        """Take over servers of this deployment that outlived a previous lifecycle actor."""
        assert self.records is not None
        handles = await self.runtime.adopt()
        if handles and self.catalogue.listing is None:
            # Without the catalogue we cannot tell an orphan from a server to keep: fail, the supervisor retries.
            raise RuntimeError("the model catalogue is not known (is the registry running?): cannot adopt servers")
        records = await self.records.load()
        for handle in handles:
            model = self.catalogue.find(handle.model)
            problem = f"{handle.model} is not in the catalogue" if model is None else ""
            problem = problem or await self.probe.problem(handle)
            if problem or model is None:
                self.log.warning("stopping %s instead of adopting it: %s", handle.model, problem)
                await self.runtime.stop(handle)
                continue
            record = records.pop(model.id, None)
            allocation = await self.placement.admit(model, time.monotonic())
            server = Server(model=model, handle=handle, allocation=allocation, state="ready")
            if record is not None:  # resume its idle clock rather than restart it
                server.keep_alive = record.keep_alive
                # Serving when recorded: requests may still run (the proxies do not need us for warm requests),
                # and their end was reported to the actor that died: the clock starts now.
                if not record.inflight:
                    server.last_activity = record.last_activity or server.last_activity
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

    async def _preload(self, model_id: str) -> None:
        try:
            await self.ensure(EnsureServer(model=model_id))
        except AsrError as exc:
            self.log.warning("preload of %s failed: %s", model_id, exc.message)

    # -- the gpu actor -------------------------------------------------------------
    async def _allocate(self, model: ModelInfo) -> Allocation:
        need = Allocate(model=model.id, memory_mb=model.gpu_memory_mb)
        return await self.request(endpoints.GPU_ALLOCATE.on(self.node_name), need)

    async def _release(self, model_id: str) -> None:
        try:
            await self.request(endpoints.GPU_RELEASE.on(self.node_name), Release(model=model_id))
        except AsrError as exc:
            self.log.warning("gpu release for %s failed: %s", model_id, exc.message)

    async def _gpu_usable(self, model: ModelInfo, allocation: Allocation, run_on: str) -> tuple[Allocation, str]:
        """The GPU placement when this runtime can run the model there; else the CPU (cpu_fallback, with the reason
        in a `starting` event) or a clear 503 naming the fix — not a start that fails once per retry."""
        try:
            problem = await self.runtime.gpu_problem(model)
        except Exception as exc:  # the runtime could not tell (its daemon is down, say): not the GPU's fault
            problem = f"the {self.runtime.name} runtime could not check: {exc}"
        if not problem:
            return allocation, run_on
        await self._release(model.id)
        if model.cpu_fallback:
            self.log.warning("%s on the CPU: %s", model.id, problem, extra={"model": model.id})
            reason = f"on the CPU instead of {run_on}: {problem}"
            await self.publish(ServerStarting(model=model.id, runtime=self.runtime.name, reason=reason))
            return Allocation(model=model.id, device="cpu"), "cpu"
        message = f"{model.id} was placed on {run_on} but cannot run there: {problem}"
        await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=message, cause="gpu"))
        raise AsrError(errors.UNAVAILABLE, message, kind=GPU_UNUSABLE_KIND)

    # -- starting and stopping -------------------------------------------------
    async def _start(self, model: ModelInfo, reason: str, deadline: float) -> Server:
        await self.publish(ServerStarting(model=model.id, runtime=self.runtime.name, reason=reason))
        if self.records is not None:
            # Proxies of other nodes see it starting here and send its requests here rather than start another.
            starting = ServerStatus(model=model.id, state="starting", runtime=self.runtime.name, node=self.node_name)
            await self.records.save(starting)
        t0 = time.monotonic()
        try:
            allocation = await self.placement.admit(model, deadline)
        except AsrError as exc:
            await self.publish(
                ServerFailed(model=model.id, runtime=self.runtime.name, reason=exc.message, cause="no_room")
            )
            raise
        run_on = "cpu" if self.config.gpu.accounting_only else allocation.device
        try:
            if run_on.startswith("cuda"):
                allocation, run_on = await self._gpu_usable(model, allocation, run_on)
            visible = allocation.visible if run_on.startswith("cuda") else ""
            handle = await self.runtime.launch(LaunchSpec(model=model, device=run_on, visible=visible))
        except AsrError as exc:
            if exc.kind == GPU_UNUSABLE_KIND:
                raise  # released and announced already
            await self._release(model.id)
            message = f"could not start model server for {model.id} ({self.runtime.name}): {exc.message}"
            await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=message))
            raise AsrError(errors.UNAVAILABLE, message) from exc
        except Exception as exc:
            await self._release(model.id)
            message = f"could not start model server for {model.id} ({self.runtime.name}): {exc}"
            await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=message))
            raise AsrError(errors.UNAVAILABLE, message) from exc
        server = Server(model=model, handle=handle, allocation=allocation)
        self.servers[model.id] = server
        # Measured from the start: memory a loading server holds is its own, not "used outside asrpro".
        await self._bind(server)
        try:
            await self.probe.wait_healthy(handle)
        except AsrError as exc:
            if handle.note:
                exc.message = f"{exc.message} [{handle.note}]"
            await self._stop(server, "failed", publish=False)
            await self.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=exc.message))
            raise
        await self._ready(server, startup_s=round(time.monotonic() - t0, 3))
        return server

    async def _bind(self, server: Server) -> None:
        """Tell the gpu actor the pid of a server holding GPU memory (NVML measures processes)."""
        if server.allocation.device_index is not None and server.handle.pid:
            with contextlib.suppress(AsrError):
                bind = Bind(model=server.model_id, pid=server.handle.pid)
                await self.request(endpoints.GPU_BIND.on(self.node_name), bind)

    async def _ready(self, server: Server, *, startup_s: float = 0.0, adopted: bool = False) -> None:
        """A healthy server: watch it, tell the gpu actor its pid (for measuring), record it, announce it."""
        server.state = "ready"
        handle, allocation = server.handle, server.allocation
        self.loop(self._watch(server))
        if adopted:
            await self._bind(server)
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

    async def _watch(self, server: Server) -> None:
        reason = await server.handle.exited
        if server.stopping:
            return
        self.fleet.remove(server)
        await self._forget(server.model.id)
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
            self.fleet.remove(server)
            server.state = "stopped"
            await self._forget(server.model.id)
        if publish:
            await self.publish(ServerStopped(model=server.model.id, runtime=self.runtime.name, reason=reason))
        self.log.info("%s stopped (%s)", server.model.id, reason, extra={"model": server.model.id})

    async def _stop_if_idle(self, server: Server, reason: str) -> bool:
        async with self.fleet.locks[server.model.id]:
            return await self._retire(server, reason)

    async def _retire(self, server: Server, reason: str) -> bool:
        """Stop an idle server (idle, keep_alive, evicted) without racing a request that found it ready in the
        proxies' view: first withdraw it from the view (its record says stopping), then give a request already on
        its way the time to announce itself (its `transcribing` event), and keep the server if one did."""
        if self.servers.get(server.model_id) is not server or server.inflight or server.stopping:
            return False
        server.state = "stopping"
        await self._save(server)
        await asyncio.sleep(RETIRE_GRACE_S)
        if server.inflight or self.servers.get(server.model_id) is not server:
            server.state = "ready"
            await self._save(server)
            return False
        await self._stop(server, reason)
        return True

    # -- timers --------------------------------------------------------------------
    async def _monitor_health(self) -> None:
        """Ask every ready server's /health each health_check_interval; a failure is announced once
        (`unhealthy`, with what /health said) and the recovery actor decides what to do."""
        while True:
            await asyncio.sleep(self.cfg.health_check_interval)
            await self.check_health()

    async def check_health(self) -> None:
        for server in list(self.servers.values()):
            if server.state != "ready" or server.stopping or self.fleet.locks[server.model_id].locked():
                continue
            problem = await self.probe.problem(server.handle)
            if problem and not server.unhealthy:
                self.log.warning("%s is unhealthy: %s", server.model_id, problem)
                await self.publish(ServerUnhealthy(model=server.model_id, runtime=self.runtime.name, reason=problem))
            server.unhealthy = problem

    def _idle_timeout(self, server: Server) -> float:
        return idle_timeout(server.keep_alive, server.model.inactivity_timeout, self.cfg.inactivity_timeout)

    async def _reap_idle(self) -> None:
        tick = min(1.0, self.cfg.inactivity_timeout / 5)
        while True:
            await asyncio.sleep(tick)
            await self.reap_idle()

    async def reap_idle(self, now: float | None = None) -> None:
        """Stop the servers idle past their timeout; forget requests whose proxy never reported back."""
        now = time.time() if now is None else now
        stale_after = self.config.gateway.request_timeout + 30
        for server in list(self.servers.values()):
            for request_id, since in list(server.inflight.items()):
                if now - since > stale_after:
                    server.inflight.pop(request_id, None)
            if server.state != "ready" or server.inflight:
                continue
            timeout = self._idle_timeout(server)
            if timeout != NEVER and now - server.last_activity >= timeout:
                await self._stop_if_idle(server, "idle" if server.keep_alive is None else "keep_alive")

    async def _sweep_lost_nodes(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.node.dead_after / 4))
            if self.janitor is not None:
                try:
                    await self.janitor.sweep()
                except Exception as exc:  # the bus is down for a moment: the next sweep tries again
                    self.log.warning("sweeping lost nodes failed: %s", exc)

    async def _announce_lost(self, status: ServerStatus) -> None:
        await self.publish(
            ServerStopped(model=status.model, runtime=status.runtime, reason="node_lost", node=status.node)
        )

    def _status(self, server: Server) -> ServerStatus:
        status = server.status(self.runtime.name, self._idle_timeout(server))
        status.node = self.node.name
        return status

    def _installed_here(self) -> list[str]:
        return sorted(m for m, state in self.installed.models.items() if state.installed)

    async def _devices(self) -> list[GpuDevice]:
        """This node's GPUs, as the gpu actor sees them (for the node's heartbeat)."""
        try:
            status = await self.request(endpoints.GPU_STATUS.on(self.node_name), GpuStatusRequest(), timeout=2.0)
            return status.devices
        except AsrError:
            return []
