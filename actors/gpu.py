"""GPU actor: the GPU inventory (NVML, or configured) and memory accounting per model.

The allocation table lives in the JetStream key-value bucket ASR_GPU and every change is a
compare-and-set on it, so several gpu actors (or one restarted) never give the same memory twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from framework.actor import Actor, endpoint
from framework.config import Config
from schemas import endpoints, errors, subjects
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

MEASURE_INTERVAL_S = 10.0
_encode = msgspec.msgpack.Encoder().encode
_decode_table = msgspec.msgpack.Decoder(AllocationTable).decode


def _nvml() -> Any:
    """pynvml, initialised; None without the library or a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def detect_nvml() -> tuple[list[GpuDevice], str]:
    """Devices NVML reports; ([], reason) when there is no driver or no GPU. A device NVML cannot read (fallen
    off the bus, an XID error) is left out with the reason, not allowed to stop the others."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({exc}): running on CPU"
    try:
        devices: list[GpuDevice] = []
        skipped: list[str] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                slices = _mig_slices(pynvml, handle, index)
                if slices == []:
                    skipped.append(f"cuda:{index} (MIG mode with no instances: CUDA cannot use the whole GPU)")
                devices += [_device(pynvml, handle, index)] if slices is None else slices
            except pynvml.NVMLError as exc:
                skipped.append(f"cuda:{index} ({exc})")
        found = f"NVML: {len(devices)} device(s)" + (f"; unreadable: {', '.join(skipped)}" if skipped else "")
        return devices, found
    finally:
        pynvml.nvmlShutdown()


def _device(pynvml: Any, handle: Any, index: int, uuid: str = "") -> GpuDevice:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    return GpuDevice(
        index=index,
        name=name.decode() if isinstance(name, bytes) else name,
        total_mb=int(memory.total // 2**20),
        free_mb=int(memory.free // 2**20),
        uuid=uuid,
    )


def _mig_slices(pynvml: Any, handle: Any, index: int) -> list[GpuDevice] | None:
    """A GPU split into MIG instances is used as its slices (each with its own memory, selected by UUID); their
    indices are synthetic: 1000 + 100 * the GPU's index + the slice's."""
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:  # not a MIG-capable GPU
        return None
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return None
    slices = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError:  # an empty slot
            continue
        uuid = pynvml.nvmlDeviceGetUUID(mig)
        slices.append(
            _device(pynvml, mig, 1000 + 100 * index + slot, uuid.decode() if isinstance(uuid, bytes) else uuid)
        )
    return slices


def nvml_memory() -> dict[int, dict[int, int]]:
    """Device index -> {pid -> MB in use}, with the device's whole use under pid 0 ({} without NVML). A device
    that cannot be read is skipped."""
    pynvml = _nvml()
    if pynvml is None:
        return {}
    try:
        found: dict[int, dict[int, int]] = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                used = {0: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used // 2**20)}
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.usedGpuMemory and proc.pid:
                        used[proc.pid] = used.get(proc.pid, 0) + int(proc.usedGpuMemory // 2**20)
            except pynvml.NVMLError:
                continue
            found[index] = used
        return found
    finally:
        pynvml.nvmlShutdown()


def nvml_utilization() -> dict[int, int]:
    """Device index -> GPU utilisation in percent ({} without NVML). Not run here: no GPU on these machines."""
    pynvml = _nvml()
    if pynvml is None:
        return {}
    try:
        busy = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            with contextlib.suppress(pynvml.NVMLError):
                busy[index] = int(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(index)).gpu)
        return busy
    finally:
        pynvml.nvmlShutdown()


def inventory(config: Config) -> tuple[str, list[GpuDevice], str]:
    if config.gpu.devices:
        devices = [
            GpuDevice(index=d.index, name=d.name, total_mb=d.memory_mb, free_mb=d.memory_mb) for d in config.gpu.devices
        ]
        return "config", devices, "configured inventory (gpu.devices)"
    if not config.gpu.detect:
        return "none", [], "GPU detection disabled (gpu.detect = false): running on CPU"
    devices, reason = detect_nvml()
    return ("nvml" if devices else "none"), devices, reason


def allocated_mb(table: AllocationTable, index: int) -> int:
    return sum(a.memory_mb for a in table.allocations.values() if a.device_index == index)


def place(table: AllocationTable, devices: list[GpuDevice], model: str, memory_mb: int) -> Allocation | None:
    """The device with the most free memory that fits `memory_mb`, or None."""

    def free(device: GpuDevice) -> int:
        return device.total_mb - allocated_mb(table, device.index) - table.external_mb.get(device.index, 0)

    fitting = [d for d in devices if free(d) >= memory_mb]
    if not fitting:
        return None
    best = max(fitting, key=free)
    return Allocation(
        model=model,
        device=f"cuda:{best.index}",
        device_index=best.index,
        visible=best.uuid,
        memory_mb=memory_mb,
        at=time.time(),
    )


class GpuAllocator(Actor):
    """GPU inventory and memory allocation; the model gets the device with the most free memory."""

    name = "gpu"

    def __init__(self, config: Config, measure: Callable[[], dict[int, dict[int, int]]] = nvml_memory) -> None:
        super().__init__(config)
        self.source, self.devices, self.reason = inventory(config)
        self.measure = measure
        self.kv: KeyValue | None = None
        # Each node's GPUs have their own table (key: the node's name): nodes never share memory, and copies of one
        # node's gpu actor still change it by compare-and-set.
        self.table_key = self.node_name

    async def setup(self) -> None:
        self.kv = await self.connection.jetstream().key_value(subjects.GPU_BUCKET)
        self.log.info("gpu inventory: %s", self.reason, extra={"source": self.source, "devices": len(self.devices)})
        if self.source == "nvml":
            self.loop(self._measure_loop())

    async def _read(self) -> tuple[AllocationTable, int | None]:
        assert self.kv is not None
        try:
            entry = await self.kv.get(self.table_key)
        except KeyNotFoundError:
            return AllocationTable(), None
        return (_decode_table(entry.value) if entry.value else AllocationTable()), entry.revision

    async def _change(self, change: Callable[[AllocationTable], object]) -> object:
        """Apply `change` to the table with compare-and-set, retrying when another gpu actor got there first."""
        assert self.kv is not None
        for _ in range(100):
            table, revision = await self._read()
            result = change(table)
            try:
                if revision is None:
                    await self.kv.create(self.table_key, _encode(table))
                else:
                    await self.kv.update(self.table_key, _encode(table), last=revision)
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
            allocation = place(table, self.devices, msg.model, need)
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

        def change(table: AllocationTable) -> dict[str, int]:
            for model, allocation in table.allocations.items():
                if allocation.pid is not None and used.get(allocation.pid):
                    table.measured_mb[model] = used[allocation.pid]
            ours = {a.pid for a in table.allocations.values() if a.pid}
            for index, device in per_device.items():
                mine = sum(mb for pid, mb in device.items() if pid in ours)
                table.external_mb[index] = max(0, device.get(0, 0) - mine)
            return dict(table.measured_mb)

        measured = await self._change(change)
        assert isinstance(measured, dict)
        return measured

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
        busy = await asyncio.to_thread(nvml_utilization) if self.source == "nvml" else {}
        devices = [
            GpuDevice(
                index=d.index,
                name=d.name,
                total_mb=d.total_mb,
                free_mb=d.total_mb - allocated_mb(table, d.index) - table.external_mb.get(d.index, 0),
                allocated_mb=allocated_mb(table, d.index),
                utilization_pct=busy.get(d.index),
            )
            for d in self.devices
        ]
        return GpuStatus(
            source=self.source,
            reason=self.reason,
            devices=devices,
            allocations=list(table.allocations.values()),
            measured_mb=table.measured_mb,
        )
