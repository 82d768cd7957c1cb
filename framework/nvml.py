"""NVML, read: the GPUs of this host (a GPU in MIG mode as its slices), the memory each process uses, utilisation.

Standard library and nvidia-ml-py (``pynvml``, imported when called) only, no nats-py or msgspec: scripts/gpu_check.py
--nvml-only runs this on a bare GPU machine. The gpu actor turns `Device` into the wire's ``schemas.gpu.GpuDevice``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Device:
    index: int  # NVML's index; a MIG slice's is synthetic: 1000 + 100 * the GPU's index + the slice's
    name: str
    total_mb: int
    free_mb: int
    uuid: str = ""  # a MIG slice's UUID (MIG-...): how CUDA is told to use it


def _nvml() -> Any:
    """pynvml, initialised; None without the library or a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def detect() -> tuple[list[Device], str]:
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
        devices: list[Device] = []
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


def _device(pynvml: Any, handle: Any, index: int, uuid: str = "") -> Device:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    name = pynvml.nvmlDeviceGetName(handle)
    return Device(
        index=index,
        name=name.decode() if isinstance(name, bytes) else name,
        total_mb=int(memory.total // 2**20),
        free_mb=int(memory.free // 2**20),
        uuid=uuid,
    )


def _mig_slices(pynvml: Any, handle: Any, index: int) -> list[Device] | None:
    """A GPU split into MIG instances is used as its slices (each with its own memory, selected by UUID); None for
    a GPU not in MIG mode."""
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


def memory_in_use() -> dict[int, dict[int, int]]:
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


def utilization() -> dict[int, int]:
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
