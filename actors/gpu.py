"""GPU actor: the GPU inventory (NVML, or configured) and memory accounting per model.

The allocation table lives in the JetStream key-value bucket ASR_GPU and every change is a
compare-and-set on it, so several gpu actors (or one restarted) never give the same memory twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from framework import nvml
from framework.actor import Actor, endpoint
from framework.collaborators import collaborator
from framework.config import Config
from framework.gpu_accounting import allocated_mb, outside_use, place
from framework.transport import KeyValueStore
from schemas import endpoints, errors
from schemas.errors import AsrError
from schemas.gpu import (
    Allocate,
    Allocation,
    AllocationTable,
    Bind,
    GpuDevice,
    GpuStatus,
    GpuStatusRequest,
    Release,
    Released,
)
from schemas.kv import GPU_TABLE

MEASURE_INTERVAL_S = 10.0


def detect_nvml() -> tuple[list[GpuDevice], str]:
    """The devices NVML reports (framework.nvml.detect), as the wire's GpuDevice."""
    found, reason = nvml.detect()
    return [
        GpuDevice(
            index=d.index, name=d.name, total_mb=d.total_mb, free_mb=d.free_mb, uuid=d.uuid, capability=d.capability
        )
        for d in found
    ], reason


def inventory(config: Config) -> tuple[str, list[GpuDevice], str, str]:
    """(source, devices, why, the CUDA version the driver supports)."""
    if config.gpu.devices:
        devices = [
            GpuDevice(
                index=d.index,
                name=d.name,
                total_mb=d.memory_mb,
                free_mb=d.memory_mb,
                uuid=d.uuid,
                capability=d.capability,
            )
            for d in config.gpu.devices
        ]
        return "config", devices, "configured inventory (gpu.devices)", config.gpu.driver_cuda
    if not config.gpu.detect:
        return "none", [], "GPU detection disabled (gpu.detect = false): running on CPU", ""
    devices, reason = detect_nvml()
    return ("nvml" if devices else "none"), devices, reason, nvml.driver_cuda_version() if devices else ""


class GpuAllocator(Actor):
    """GPU inventory and memory allocation; the model gets the device with the most free memory."""

    name = "gpu"

    @collaborator
    def measure(self) -> Callable[[], dict[int, dict[int, int]]]:
        """Per device, the MB each process uses: NVML's reading (a test gives a fixed one)."""
        return nvml.memory_in_use

    @collaborator
    def proc(self) -> Path:
        """This pid namespace's /proc: NVML's pids are the host's, which a container without --pid=host lacks."""
        return Path("/proc")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.source, self.devices, self.reason, self.driver_cuda = inventory(config)
        self.pid_namespace_warned = False
        self.kv: KeyValueStore | None = None
        # Each node's GPUs have their own table (key: the node's name): nodes never share memory, and copies of one
        # node's gpu actor still change it by compare-and-set.
        self.table_key = GPU_TABLE.key(self.node_name)

    async def setup(self) -> None:
        self.kv = await self.transport.kv(GPU_TABLE.bucket)
        self.log.info("gpu inventory: %s", self.reason, extra={"source": self.source, "devices": len(self.devices)})
        if self.source == "nvml":
            self.loop(self._measure_loop())

    async def _read(self) -> tuple[AllocationTable, int | None]:
        assert self.kv is not None
        try:
            entry = await self.kv.get(self.table_key)
        except KeyNotFoundError:
            return AllocationTable(), None
        return (GPU_TABLE.decode(entry.value) if entry.value else AllocationTable()), entry.revision

    async def _change(self, change: Callable[[AllocationTable], object]) -> object:
        """Apply `change` to the table with compare-and-set, retrying when another gpu actor got there first."""
        assert self.kv is not None
        for _ in range(100):
            table, revision = await self._read()
            result = change(table)
            try:
                if revision is None:
                    await self.kv.create(self.table_key, GPU_TABLE.encode(table))
                else:
                    await self.kv.update(self.table_key, GPU_TABLE.encode(table), last=revision)
                return result
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.005)
        raise AsrError(errors.UNAVAILABLE, "the allocation table is too contended: try again")

    @endpoint(endpoints.GPU_ALLOCATE)
    async def allocate(self, msg: Allocate) -> Allocation:
        if not self.devices or msg.memory_mb <= 0:
            return Allocation(model=msg.model, device="cpu")
        failure: list[str] = []

        def change(table: AllocationTable) -> Allocation | None:
            existing = table.allocations.get(msg.model)
            if existing is not None:
                return existing
            need = table.measured_mb.get(msg.model, msg.memory_mb)
            allocation = place(table, self.devices, msg.model, need, self.driver_cuda)
            if allocation is None:
                failure.append(self._no_room(table, msg.model, need))
                return None
            table.allocations[msg.model] = allocation
            return allocation

        result = await self._change(change)
        if result is None:
            raise AsrError(errors.NO_ROOM, failure[-1])
        assert isinstance(result, Allocation)
        return result

    def _no_room(self, table: AllocationTable, model: str, need: int) -> str:
        where = "; ".join(
            f"cuda:{d.index} {d.total_mb - allocated_mb(table, d.index) - table.external_mb.get(d.index, 0)} of "
            f"{d.total_mb} MB free"
            + (f" ({table.external_mb[d.index]} MB used outside asrpro)" if table.external_mb.get(d.index) else "")
            for d in self.devices
        )
        return f"no GPU has {need} MB free for {model} ({where})"

    @endpoint(endpoints.GPU_RELEASE)
    async def release(self, msg: Release) -> Released:
        def change(table: AllocationTable) -> bool:
            return table.allocations.pop(msg.model, None) is not None

        return Released(model=msg.model, released=bool(await self._change(change)))

    @endpoint(endpoints.GPU_BIND)
    async def bind(self, msg: Bind) -> Allocation:
        def change(table: AllocationTable) -> Allocation | None:
            allocation = table.allocations.get(msg.model)
            if allocation is not None:
                allocation.pid = msg.pid
            return allocation

        result = await self._change(change)
        if result is None:
            raise AsrError(errors.NOT_FOUND, f"{msg.model} has no GPU allocation")
        assert isinstance(result, Allocation)
        return result

    async def measure_once(self) -> dict[str, int]:
        """Record what each allocated server really uses (the next allocation of that model asks for that), and
        per device what other processes use (placement leaves it alone)."""
        per_device = await asyncio.to_thread(self.measure)
        used = {pid: mb for device in per_device.values() for pid, mb in device.items() if pid}
        self._check_pid_namespace(used)

        def change(table: AllocationTable) -> dict[str, int]:
            for model, allocation in table.allocations.items():
                if allocation.pid is not None and used.get(allocation.pid):
                    table.measured_mb[model] = used[allocation.pid]
            table.external_mb.update(outside_use(table, per_device))
            return dict(table.measured_mb)

        measured = await self._change(change)
        assert isinstance(measured, dict)
        return measured

    def _check_pid_namespace(self, used: dict[int, int]) -> None:
        """Say once when none of NVML's pids exist here: this process sees another pid namespace than NVML's (a
        container without --pid=host), so local servers' memory cannot be matched and is taken as allocated."""
        if self.pid_namespace_warned or not used or any((self.proc / str(pid)).exists() for pid in used):
            return
        self.pid_namespace_warned = True
        self.log.warning(
            "NVML reports GPU processes (pids %s) that do not exist in this pid namespace: asrpro runs in a container "
            "without the host's pid namespace (run it with --pid=host to measure each server's GPU memory); servers "
            "are counted at their allocations, never as memory used outside asrpro",
            sorted(used)[:8],
        )

    async def _measure_loop(self) -> None:
        while True:
            await asyncio.sleep(MEASURE_INTERVAL_S)
            try:
                await self.measure_once()
            except Exception as exc:
                self.log.warning("GPU measurement failed: %s", exc)

    @endpoint(endpoints.GPU_STATUS)
    async def status(self, _: GpuStatusRequest) -> GpuStatus:
        table, _rev = await self._read()
        busy = await asyncio.to_thread(nvml.utilization) if self.source == "nvml" else {}
        devices = [
            GpuDevice(
                index=d.index,
                name=d.name,
                total_mb=d.total_mb,
                free_mb=d.total_mb - allocated_mb(table, d.index) - table.external_mb.get(d.index, 0),
                allocated_mb=allocated_mb(table, d.index),
                utilization_pct=busy.get(d.index),
                uuid=d.uuid,
                capability=d.capability,
            )
            for d in self.devices
        ]
        return GpuStatus(
            source=self.source,
            reason=self.reason,
            driver_cuda=self.driver_cuda,
            devices=devices,
            allocations=list(table.allocations.values()),
            measured_mb=table.measured_mb,
        )
