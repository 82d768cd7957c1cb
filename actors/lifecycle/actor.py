"""Lifecycle actor: starts model servers on demand (`starter`), admits them to GPU memory (`placement`, through
`gpu_client`), watches them (`health`), stops them when idle (`idle`), and records them (`records`) so that a
restarted lifecycle actor re-adopts the servers that outlived it and resumes their idle clocks (`adoption`). Starts
are refused while the model's weights are missing (`installed`) or its circuit breaker is open (`breakers`).

This module holds the handlers, set-up and tear-down and the timers; each job lives in the module named for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from actors.lifecycle.adoption import adopt
from actors.lifecycle.breakers import BreakerGate
from actors.lifecycle.gpu_client import GpuClient
from actors.lifecycle.health import HealthProbe
from actors.lifecycle.idle import IdleClocks
from actors.lifecycle.installed import INSTALLED_CHECK_EVERY_S, InstalledReports
from actors.lifecycle.janitor import NodeJanitor
from actors.lifecycle.node import NodeBeacon
from actors.lifecycle.pulling import Puller
from actors.lifecycle.records import KvServerRecords, ServerRecords
from actors.lifecycle.runtimes import Runtime, choose_runtime
from actors.lifecycle.server import Fleet, Server
from actors.lifecycle.starter import Starter
from framework import kv_view
from framework.actor import Actor, endpoint, on_event
from framework.catalogue import Catalogue
from framework.collaborators import collaborator
from framework.config import Config, start_budget
from framework.kv_view import KvView
from framework.model_server import ModelServerClient
from schemas import endpoints, errors
from schemas import kv as kv_records
from schemas.errors import AsrError
from schemas.events import (
    BreakerChanged,
    ServerStopped,
    ServerUnhealthy,
    TranscriptionCompleted,
    TranscriptionFailed,
    TranscriptionStarted,
)
from schemas.lifecycle import (
    EnsureServer,
    LifecycleStatus,
    LifecycleStatusRequest,
    PullModel,
    PullResult,
    ServerStatus,
    StopReply,
    StopServer,
)
from schemas.nodes import NodeRecord

EXIT_NOTICE_S = 1.0


async def every(seconds: float, tick: Callable[[], Awaitable[object]]) -> None:
    """`tick()` every `seconds`, for ever: one of the actor's timers (run with `Actor.loop`)."""
    while True:
        await asyncio.sleep(seconds)
        await tick()


class Lifecycle(Actor):
    """Ensure/stop/status of model servers; GPU admission and eviction; idle timeout; lifecycle events."""

    name = "lifecycle"

    # -- collaborators: a test replaces any of them with `worker_factory(Lifecycle, config, catalogue=...)` ------
    @collaborator
    def runtime_choice(self) -> tuple[Runtime, str]:
        """The runtime that runs the model servers, and why it was chosen (logged at start, shown by /health)."""
        return choose_runtime(self.config)

    @collaborator
    def catalogue(self) -> Catalogue:
        return Catalogue()

    @collaborator
    def records(self) -> ServerRecords:
        """This node's records of its servers: in KV ASR_SERVERS once connected (see `setup`)."""
        return KvServerRecords(self.node_name)

    @collaborator
    def model_server(self) -> ModelServerClient:
        return ModelServerClient(timeout=10.0)

    @collaborator
    def gpu(self) -> GpuClient:
        return GpuClient(self)

    @collaborator
    def heartbeats(self) -> KvView[NodeRecord]:
        return kv_view.heartbeats()

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.runtime, self.runtime_reason = self.runtime_choice
        self.cfg = config.lifecycle
        self.fleet = Fleet()
        self.probe = HealthProbe(self.model_server, self.runtime.startup_timeout or self.cfg.startup_timeout)
        self.starter = Starter(self, self.runtime, self.fleet, self.probe, self.records, self.gpu)
        self.idle = IdleClocks(self, self.starter)
        self.breakers = BreakerGate(self.node_name, config.node.dead_after, self.heartbeats)
        self.installed = InstalledReports(self, self.runtime, self.catalogue)
        self.puller = Puller(self, self.catalogue, self.installed)
        self.node = NodeBeacon(
            config, self.instance, self.runtime.name, lambda: list(self.servers), self.gpu.devices, self.installed.here
        )
        self.janitor: NodeJanitor | None = None

    @property
    def servers(self) -> dict[str, Server]:
        return self.fleet.servers

    async def setup(self) -> None:
        self.log.info("runtime %s: %s", self.runtime.name, self.runtime_reason)
        await self.catalogue.follow(self.transport, wait=30.0)
        await self.records.connect(self.transport)
        settings = self.installed.settings = await self.transport.kv(kv_records.INSTALLED.bucket)
        nodes = await self.transport.kv(kv_records.NODE.bucket)
        await self.node.claim(nodes)
        self.loop(self.node.run())
        await self.heartbeats.follow(self.transport, wait=5.0)
        self.janitor = NodeJanitor(
            self.node_name,
            self.config.node.dead_after,
            self.heartbeats,
            nodes,
            await self.transport.kv(kv_records.SERVER.bucket),
            await self.transport.kv(kv_records.GPU_TABLE.bucket),
            settings,
            self._announce_lost,
        )
        self.breakers.nodes_known = True
        self.loop(every(max(1.0, self.config.node.dead_after / 4), self._sweep_lost_nodes))
        await adopt(self.starter, self.catalogue)
        await self.installed.report()
        self.loop(every(min(1.0, self.cfg.inactivity_timeout / 5), self.idle.reap))
        self.loop(every(self.cfg.health_check_interval, self.check_health))
        self.loop(every(INSTALLED_CHECK_EVERY_S, self.installed.report))
        for model_id in self.cfg.preload:
            self.spawn(self._preload(model_id))

    async def teardown(self) -> None:
        for server in list(self.servers.values()):
            await self.starter.stop(server, "shutdown")
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
                    await self.starter.stop(server, "replaced")
                    server = None
            if server is not None and server.handle.exited.done():
                server = None  # its watcher reports the crash; start a fresh one
            cold = server is None
            if server is None:
                await self.installed.check(model)
                self.breakers.check(model.id, probe=msg.probe)
                server = await self.starter.start(model, "restart" if msg.restart else "request", deadline)
            server.begin(msg.request_id, msg.keep_alive)
            status = self.starter.status(server)
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
            await self.starter.stop(server, msg.reason or "requested")
            return StopReply(model=model.id, stopped=True)

    @endpoint(endpoints.LIFECYCLE_PULL)
    async def pull(self, msg: PullModel) -> PullResult:
        """This node's copy of a model's weights, progress as partial replies (actors.lifecycle.pulling)."""
        return await self.puller.pull(msg.model)

    @endpoint(endpoints.LIFECYCLE_STATUS)
    async def status(self, msg: LifecycleStatusRequest) -> LifecycleStatus:
        servers = [self.starter.status(s) for s in self.servers.values() if msg.model in (None, s.model.id)]
        return LifecycleStatus(
            runtime=self.runtime.name,
            runtime_reason=self.runtime_reason,
            servers=servers,
            breakers=self.breakers.states(msg.model),
        )

    # -- events ----------------------------------------------------------------
    @on_event(BreakerChanged, replay="last")
    async def on_breaker(self, event: BreakerChanged) -> None:
        self.breakers.changed(event)

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
                server.allocation = await self.gpu.allocate(server.model)
        await self.starter.save(server)
        self.installed.forget()

    @on_event(TranscriptionStarted)
    async def on_started(self, event: TranscriptionStarted) -> None:
        """A proxy forwards a request to a ready server without asking us: its event is the activity."""
        server = self._mine(event)
        if server is None or server.stopping:
            return
        self.idle.began(server, event.request_id, event.keep_alive)

    @on_event(TranscriptionCompleted, TranscriptionFailed)
    async def on_done(self, event: TranscriptionCompleted | TranscriptionFailed) -> None:
        server = self._mine(event)
        if server is not None:
            self.idle.ended(server, event.request_id)

    # -- timers and short helpers -------------------------------------------------
    async def check_health(self) -> None:
        """Ask every ready server's /health (each health_check_interval); a failure is announced once
        (`unhealthy`, with what /health said) and the recovery actor decides what to do."""
        for server in list(self.servers.values()):
            if server.state != "ready" or server.stopping or self.fleet.locks[server.model_id].locked():
                continue
            problem = await self.probe.problem(server.handle)
            if problem and not server.unhealthy:
                self.log.warning("%s is unhealthy: %s", server.model_id, problem)
                await self.publish(ServerUnhealthy(model=server.model_id, runtime=self.runtime.name, reason=problem))
            server.unhealthy = problem

    async def _sweep_lost_nodes(self) -> None:
        if self.janitor is not None:
            try:
                await self.janitor.sweep()
            except Exception as exc:  # the bus is down for a moment: the next sweep tries again
                self.log.warning("sweeping lost nodes failed: %s", exc)

    async def _announce_lost(self, status: ServerStatus) -> None:
        await self.publish(
            ServerStopped(model=status.model, runtime=status.runtime, reason="node_lost", node=status.node)
        )

    async def _preload(self, model_id: str) -> None:
        try:
            await self.ensure(EnsureServer(model=model_id))
        except AsrError as exc:
            self.log.warning("preload of %s failed: %s", model_id, exc.message)
