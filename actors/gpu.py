"""GPU actor: the GPU inventory (NVML, or configured) and memory accounting per model."""

from __future__ import annotations

from actors.base import Actor, endpoint
from actors.config import Config
from schemas import subjects
from schemas.gpu import Allocate, Allocation, GpuDevice, GpuStatus, GpuStatusRequest, Release, Released


def detect_nvml() -> tuple[list[GpuDevice], str]:
    """Devices NVML reports; ([], reason) when there is no driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML unavailable ({exc}): running on CPU"
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            devices.append(
                GpuDevice(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else name,
                    total_mb=int(memory.total // 2**20),
                    free_mb=int(memory.free // 2**20),
                )
            )
        return devices, f"NVML: {len(devices)} device(s)"
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


class GpuAllocator(Actor):
    """GPU inventory and memory allocation: a model gets the device with the most free memory, else the CPU."""

    name = "gpu"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.source, self.devices, self.reason = inventory(config)
        self.allocations: dict[str, Allocation] = {}

    def _allocated(self, index: int) -> int:
        return sum(a.memory_mb for a in self.allocations.values() if a.device_index == index)

    def _free(self, device: GpuDevice) -> int:
        return min(device.free_mb, device.total_mb - self._allocated(device.index))

    async def setup(self) -> None:
        self.log.info("gpu inventory: %s", self.reason, extra={"source": self.source, "devices": len(self.devices)})

    @endpoint(subjects.GPU_ALLOCATE, Allocate)
    async def allocate(self, msg: Allocate) -> Allocation:
        existing = self.allocations.get(msg.model)
        if existing is not None:
            return existing
        fitting = [d for d in self.devices if msg.memory_mb > 0 and self._free(d) >= msg.memory_mb]
        if not fitting:
            return Allocation(model=msg.model, device="cpu")
        best = max(fitting, key=self._free)
        allocation = Allocation(
            model=msg.model, device=f"cuda:{best.index}", device_index=best.index, memory_mb=msg.memory_mb
        )
        self.allocations[msg.model] = allocation
        return allocation

    @endpoint(subjects.GPU_RELEASE, Release)
    async def release(self, msg: Release) -> Released:
        return Released(model=msg.model, released=self.allocations.pop(msg.model, None) is not None)

    @endpoint(subjects.GPU_STATUS, GpuStatusRequest)
    async def status(self, _: GpuStatusRequest) -> GpuStatus:
        devices = [
            GpuDevice(
                index=d.index,
                name=d.name,
                total_mb=d.total_mb,
                free_mb=self._free(d),
                allocated_mb=self._allocated(d.index),
            )
            for d in self.devices
        ]
        return GpuStatus(
            source=self.source, reason=self.reason, devices=devices, allocations=list(self.allocations.values())
        )
