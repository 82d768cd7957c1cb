from __future__ import annotations

import msgspec


class Allocate(msgspec.Struct, kw_only=True):
    model: str
    memory_mb: int


class Allocation(msgspec.Struct, kw_only=True):
    model: str
    device: str  # "cpu" or "cuda:<index>"
    device_index: int | None = None
    memory_mb: int = 0


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


class GpuStatus(msgspec.Struct, kw_only=True):
    source: str  # nvml | config | none
    reason: str
    devices: list[GpuDevice]
    allocations: list[Allocation]
