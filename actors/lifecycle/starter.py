"""The start/stop state machine of this node's model servers: starting (announced, recorded, placed, launched,
healthy), ready (watched for its exit, bound to its GPU memory, recorded, announced), stopping and stopped (its GPU
memory released, its record forgotten). A server stopped for idleness is first withdrawn from the proxies' view, so
that a request that found it ready is not cut off."""

from __future__ import annotations

import asyncio
import time

from actors.lifecycle.gpu_client import GpuClient
from actors.lifecycle.health import HealthProbe
from actors.lifecycle.placement import Placement, idle_timeout
from actors.lifecycle.records import ServerRecords
from actors.lifecycle.runtimes import GpuRefused, LaunchSpec, Runtime, ServerHandle
from actors.lifecycle.server import Fleet, Server
from framework.actor import Actor
from framework.cores import share, usable_cores
from schemas import errors
from schemas.errors import AsrError, ErrorCode
from schemas.events import (
    FailureCause,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    StopReason,
)
from schemas.gpu import Allocation
from schemas.lifecycle import ServerStatus
from schemas.registry import ModelInfo


def _on_cpu(server: Server) -> bool:
    return not (server.ran_on or server.allocation.device).startswith("cuda")


# Between withdrawing an idle server from the proxies' view and stopping it: far longer than an event takes.
RETIRE_GRACE_S = 0.3


class Starter:
    def __init__(
        self, actor: Actor, runtime: Runtime, fleet: Fleet, probe: HealthProbe, records: ServerRecords, gpu: GpuClient
    ) -> None:
        self.actor, self.runtime, self.fleet, self.probe = actor, runtime, fleet, probe
        self.records, self.gpu = records, gpu
        self.cfg = actor.config.lifecycle
        self.log = actor.log
        self.placement = Placement(fleet, self.cfg.max_concurrent_containers, gpu.allocate, self.retire)

    @property
    def servers(self) -> dict[str, Server]:
        return self.fleet.servers

    def idle_timeout(self, server: Server) -> float:
        return idle_timeout(server.keep_alive, server.model.inactivity_timeout, self.cfg.inactivity_timeout)

    def status(self, server: Server) -> ServerStatus:
        status = server.status(self.runtime.name, self.idle_timeout(server))
        status.node = self.actor.node_name
        return status

    async def save(self, server: Server) -> None:
        await self.records.save(self.status(server))

    async def forget(self, model_id: str) -> None:
        await self.records.forget(model_id)
        await self.gpu.release(model_id)

    # -- starting ---------------------------------------------------------------------
    async def start(self, model: ModelInfo, reason: str, deadline: float) -> Server:
        try:
            return await self._start(model, reason, deadline)
        except BaseException:
            if model.id not in self.servers:
                await self.records.forget(model.id)  # its `starting` record
            raise

    async def _start(self, model: ModelInfo, reason: str, deadline: float) -> Server:
        runtime = self.runtime.name
        await self.actor.publish(ServerStarting(model=model.id, runtime=runtime, reason=reason))
        # Proxies of other nodes see it starting here and send its requests here rather than start another.
        starting = ServerStatus(model=model.id, state="starting", runtime=runtime, node=self.actor.node_name)
        await self.records.save(starting)
        t0 = time.monotonic()
        try:
            allocation = await self.placement.admit(model, deadline)
        except AsrError as exc:
            await self.actor.publish(ServerFailed(model=model.id, runtime=runtime, reason=exc.message, cause="no_room"))
            raise
        run_on = "cpu" if self.actor.config.gpu.accounting_only else allocation.device
        try:
            if run_on.startswith("cuda"):
                allocation, run_on = await self._gpu_usable(model, allocation, run_on)
            handle, allocation = await self._launch(model, allocation, run_on)
        except Exception as exc:
            if isinstance(exc, AsrError) and exc.kind == ErrorCode.GPU_UNUSABLE:
                raise  # released and announced already
            await self.gpu.release(model.id)
            why = exc.message if isinstance(exc, AsrError) else str(exc)
            message = f"could not start model server for {model.id} ({runtime}): {why}"
            await self.actor.publish(ServerFailed(model=model.id, runtime=runtime, reason=message))
            raise AsrError(errors.UNAVAILABLE, message) from exc
        server = Server(model=model, handle=handle, allocation=allocation)
        self.servers[model.id] = server
        # Measured from the start: memory a loading server holds is its own, not "used outside asrpro".
        await self.gpu.bind(server)
        # A start that compiles the engine's kernels (no cache yet for this GPU and driver) is given longer.
        timeout = None
        if handle.compiles_kernels:
            timeout = max(self.cfg.first_gpu_startup_timeout, self.runtime.startup_timeout or self.cfg.startup_timeout)
        try:
            report = await self.probe.wait_healthy(handle, timeout)
        except AsrError as exc:
            if handle.note:
                exc.message = f"{exc.message} [{handle.note}]"
            await self.stop(server, "failed", publish=False)
            # A load the GPU cannot run (CUDA libraries, kernels the driver cannot compile) is not the model's
            # fault: `cause: gpu`, which no breaker counts.
            cause: FailureCause = "gpu" if exc.kind == ErrorCode.GPU_UNUSABLE else "start"
            await self.actor.publish(ServerFailed(model=model.id, runtime=runtime, reason=exc.message, cause=cause))
            raise
        if report is not None:  # what the engine itself runs on, not what was allocated
            server.ran_on = allocation.device if report.device == "cuda" else report.device
            server.compute_type = report.compute_type
        await self.ready(server, startup_s=round(time.monotonic() - t0, 3))
        return server

    async def _launch(self, model: ModelInfo, allocation: Allocation, run_on: str) -> tuple[ServerHandle, Allocation]:
        visible = allocation.visible if run_on.startswith("cuda") else ""
        try:
            spec = LaunchSpec(
                model=model,
                device=run_on,
                visible=visible,
                driver_cuda=allocation.driver_cuda,
                capability=allocation.capability,
                cpu_cores=self._cores(model, run_on),
                cpu_threads=self.cfg.cpu_threads,
            )
            return await self.runtime.launch(spec), allocation
        except GpuRefused as exc:  # the very first refusal too: the GPU's fault; fall back, or name the fix
            await self._gpu_refused(model, run_on, str(exc))
            on_cpu = Allocation(model=model.id, device="cpu")
            return await self.runtime.launch(
                LaunchSpec(
                    model=model, device="cpu", cpu_cores=self._cores(model, "cpu"), cpu_threads=self.cfg.cpu_threads
                )
            ), on_cpu

    def _cores(self, model: ModelInfo, run_on: str) -> int:
        """This server's share of the node's cores: the usable cores divided among the model servers on the CPU
        (itself included), so two loaded models do not each start a thread per core."""
        if run_on.startswith("cuda"):
            return 0
        beside = sum(1 for s in self.servers.values() if s.model.id != model.id and _on_cpu(s))
        usable = usable_cores()
        cores = share(usable.count, beside + 1)
        self.log.info(
            "%s: %d of %d cores (%s), %d other model server(s) on the CPU",
            model.id,
            cores,
            usable.count,
            usable.source,
            beside,
        )
        return cores

    async def _gpu_usable(self, model: ModelInfo, allocation: Allocation, run_on: str) -> tuple[Allocation, str]:
        """The GPU placement when this runtime can run the model there; else the CPU (cpu_fallback, with the reason
        in a `starting` event) or a clear 503 naming the fix — not a start that fails once per retry."""
        try:
            problem = await self.runtime.gpu_problem(model, allocation)
        except Exception as exc:  # the runtime could not tell (its daemon is down, say): not the GPU's fault
            problem = f"the {self.runtime.name} runtime could not check: {exc}"
        if not problem:
            return allocation, run_on
        await self._gpu_refused(model, run_on, problem)
        return Allocation(model=model.id, device="cpu"), "cpu"

    async def _gpu_refused(self, model: ModelInfo, run_on: str, problem: str) -> None:
        """The GPU cannot run `model` here: its memory is given back, then it runs on the CPU (cpu_fallback, said in
        a `starting` event), or the start fails with `cause: gpu` and a 503 naming the fix."""
        await self.gpu.release(model.id)
        if model.cpu_fallback:
            self.log.warning("%s on the CPU: %s", model.id, problem, extra={"model": model.id})
            reason = f"on the CPU instead of {run_on}: {problem}"
            await self.actor.publish(ServerStarting(model=model.id, runtime=self.runtime.name, reason=reason))
            return
        message = f"{model.id} was placed on {run_on} but cannot run there: {problem}"
        await self.actor.publish(ServerFailed(model=model.id, runtime=self.runtime.name, reason=message, cause="gpu"))
        raise AsrError(errors.UNAVAILABLE, message, kind=ErrorCode.GPU_UNUSABLE)

    async def ready(self, server: Server, *, startup_s: float = 0.0, adopted: bool = False) -> None:
        """A healthy server: watch it, tell the gpu actor its pid (for measuring), record it, announce it."""
        server.state = "ready"
        handle, allocation = server.handle, server.allocation
        self.actor.loop(self._watch(server))
        if adopted:
            await self.gpu.bind(server)
        await self.save(server)
        await self.actor.publish(
            ServerReady(
                model=server.model_id,
                runtime=self.runtime.name,
                url=handle.url,
                pid=handle.pid,
                container_id=handle.container_id,
                device=server.ran_on or allocation.device,  # where the engine says it runs
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
        await self.forget(server.model.id)
        self.log.warning("%s crashed: %s", server.model.id, reason, extra={"model": server.model.id})
        await self.actor.publish(
            ServerCrashed(
                model=server.model.id, runtime=self.runtime.name, reason=reason, exit_code=server.handle.exit_code
            )
        )

    # -- stopping ---------------------------------------------------------------------
    async def stop(self, server: Server, reason: StopReason, *, publish: bool = True) -> None:
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
            await self.forget(server.model.id)
        if publish:
            await self.actor.publish(ServerStopped(model=server.model.id, runtime=self.runtime.name, reason=reason))
        self.log.info("%s stopped (%s)", server.model.id, reason, extra={"model": server.model.id})

    async def stop_if_idle(self, server: Server, reason: StopReason) -> bool:
        async with self.fleet.locks[server.model.id]:
            return await self.retire(server, reason)

    async def retire(self, server: Server, reason: StopReason) -> bool:
        """Stop an idle server (idle, keep_alive, evicted) without racing a request that found it ready in the
        proxies' view: first withdraw it from the view (its record says stopping), then give a request already on
        its way the time to announce itself (its `transcribing` event), and keep the server if one did."""
        if self.servers.get(server.model_id) is not server or server.inflight or server.stopping:
            return False
        server.state = "stopping"
        await self.save(server)
        await asyncio.sleep(RETIRE_GRACE_S)
        if server.inflight or self.servers.get(server.model_id) is not server:
            server.state = "ready"
            await self.save(server)
            return False
        await self.stop(server, reason)
        return True
