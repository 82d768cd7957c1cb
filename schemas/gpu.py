from __future__ import annotations

import msgspec


class Allocate(msgspec.Struct, kw_only=True):
    model: str
    memory_mb: int


class Allocation(msgspec.Struct, kw_only=True):
    model: str
    device: str  # "cpu" or "cuda:<index>"
    device_index: int | None = None
    # What selects the device for CUDA (CUDA_VISIBLE_DEVICES, a Docker device request): the GPU's UUID (GPU-...)
    # or a MIG slice's (MIG-...). Empty (a configured inventory without UUIDs): str(device_index).
    visible: str = ""
    memory_mb: int = 0
    # What the runtime checks an engine's CUDA build against before starting it ('' = unknown: not checked).
    capability: str = ""  # the device's compute capability, "9.0"
    driver_cuda: str = ""  # the newest CUDA version the host's driver supports, "12.2"
    pid: int | None = None  # the server's process on the host, once known (for NVML per-process use)
    at: float = 0.0


class AllocationTable(msgspec.Struct, kw_only=True):
    """The one record all gpu actors update with compare-and-set: no memory is ever given out twice."""

    allocations: dict[str, Allocation] = {}
    measured_mb: dict[str, int] = {}  # model -> GPU memory its server really used (NVML), replaces the declaration
    # device index -> MB in use by processes that are not asrpro's model servers (a desktop's Xorg, other jobs),
    # from NVML: placement leaves it alone.
    external_mb: dict[int, int] = {}


class Bind(msgspec.Struct, kw_only=True):
    model: str
    pid: int


class Release(msgspec.Struct, kw_only=True):
    model: str


class Released(msgspec.Struct, kw_only=True):
    model: str
    released: bool


class GpuStatusRequest(msgspec.Struct, kw_only=True):
    pass


class GpuDevice(msgspec.Struct, kw_only=True):
    index: int
    name: str
    total_mb: int
    free_mb: int  # as the source reports it (NVML) or total minus allocations (configured)
    allocated_mb: int = 0
    utilization_pct: int | None = None  # NVML's GPU utilisation, where NVML is the source
    uuid: str = ""  # GPU-... (a MIG slice's MIG-..., its index synthetic): how CUDA is told to use it
    capability: str = ""  # CUDA compute capability, "9.0"


class GpuStatus(msgspec.Struct, kw_only=True):
    source: str  # nvml | config | none
    reason: str
    driver_cuda: str = ""  # the newest CUDA version the driver supports ('' without NVML)
    devices: list[GpuDevice]
    allocations: list[Allocation]
    measured_mb: dict[str, int] = {}
