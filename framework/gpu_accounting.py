"""GPU memory accounting, pure: which device a model goes to, and what other processes use. The gpu actor keeps the
table in KV; scripts/gpu_check.py --offline runs the same admission on a GPU machine that has msgspec but no nats-py."""

from __future__ import annotations

import time

from schemas.gpu import Allocation, AllocationTable, GpuDevice


def allocated_mb(table: AllocationTable, index: int) -> int:
    return sum(a.memory_mb for a in table.allocations.values() if a.device_index == index)


def place(
    table: AllocationTable, devices: list[GpuDevice], model: str, memory_mb: int, driver_cuda: str = ""
) -> Allocation | None:
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
        capability=best.capability,
        driver_cuda=driver_cuda,
        at=time.time(),
    )


def outside_use(table: AllocationTable, per_device: dict[int, dict[int, int]]) -> dict[int, int]:
    """Per device, the MB used by processes that are not asrpro's servers: the device's use minus each server's
    (what NVML measured for its pid, else its allocation: a server still loading, or one whose pid NVML cannot
    match because it reports host pids into another pid namespace). Our own allocations never count as outside."""
    used = {pid: mb for device in per_device.values() for pid, mb in device.items() if pid}
    external = {}
    for index, device in per_device.items():
        ours = sum(
            used.get(a.pid or 0, a.memory_mb)
            for a in table.allocations.values()
            if a.device_index == index or (a.device_index is None and a.device == f"cuda:{index}")
        )
        external[index] = max(0, device.get(0, 0) - ours)
    return external
