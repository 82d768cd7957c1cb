"""NVML, read: the GPUs of this host (a GPU in MIG mode as its slices), the memory each process uses, utilisation.

Standard library and nvidia-ml-py (``pynvml``, imported when called) only, no nats-py or msgspec: scripts/gpu_check.py
--nvml-only runs this on a bare GPU machine. The gpu actor turns `Device` into the wire's ``schemas.gpu.GpuDevice``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("asrpro.nvml")


@dataclass(frozen=True)
class Device:
    index: int  # NVML's index; a MIG slice's is synthetic: 1000 + 100 * the GPU's index + the slice's
    name: str
    total_mb: int
    free_mb: int
    # How CUDA and Docker are told to use it: GPU-... (NVML's indices are not guaranteed stable across boots or
    # driver reloads, UUIDs are), MIG-... for a slice.
    uuid: str = ""
    capability: str = ""  # CUDA compute capability, "9.0": which compiled kernels can run on it
    parent_uuid: str = ""  # a MIG slice's GPU


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
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:  # a driver in a bad state: no GPUs, said why, never a crash
            return [], f"NVML cannot count the GPUs ({exc}): running on CPU"
        for index in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                slices = _mig_slices(pynvml, handle, index)
                if slices == []:
                    skipped.append(f"cuda:{index} (MIG mode with no instances: CUDA cannot use the whole GPU)")
                devices += [_device(pynvml, handle, index)] if slices is None else slices
            except pynvml.NVMLError as exc:
                skipped.append(f"cuda:{index} ({exc})")
        devices, hidden = visible(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
        found = f"NVML: {len(devices)} device(s)" + (f"; unreadable: {', '.join(skipped)}" if skipped else "")
        if hidden:
            found += f"; {hidden} hidden by CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}"
        driver = driver_cuda(pynvml)
        return devices, found + (f"; driver supports CUDA {driver}" if driver else "")
    finally:
        pynvml.nvmlShutdown()


def visible(devices: list[Device], setting: str | None) -> tuple[list[Device], int]:
    """The devices an operator's CUDA_VISIBLE_DEVICES leaves to asrpro (None: all), and how many it hides. Entries
    are NVML indices (as with CUDA_DEVICE_ORDER=PCI_BUS_ID) or UUIDs (GPU-..., MIG-..., or a unique prefix), as
    CUDA reads them; a slice is kept when its GPU is."""
    if setting is None:
        return devices, 0
    wanted = [entry.strip() for entry in setting.split(",") if entry.strip()]
    kept = []
    for device in devices:
        whole = device.index if device.index < 1000 else (device.index - 1000) // 100
        if any(
            (entry.isdigit() and int(entry) == whole)
            or any(uuid and uuid.startswith(entry) for uuid in (device.uuid, device.parent_uuid))
            for entry in wanted
        ):
            kept.append(device)
    return kept, len(devices) - len(kept)


def driver_cuda(pynvml: Any) -> str:
    """The newest CUDA version the driver supports ("12.2"), '' when NVML cannot say."""
    try:
        version = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
    except (pynvml.NVMLError, AttributeError):
        return ""
    return f"{version // 1000}.{version % 1000 // 10}"


@functools.lru_cache(maxsize=1)
def present() -> bool:
    """Whether NVML finds a GPU on this host (read once)."""
    return bool(detect()[0])


def driver_cuda_version() -> str:
    """driver_cuda, opening NVML for the call ('' without NVML)."""
    pynvml = _nvml()
    if pynvml is None:
        return ""
    try:
        return driver_cuda(pynvml)
    finally:
        pynvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _device(pynvml: Any, handle: Any, index: int, uuid: str = "", capability: str = "") -> Device:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    if not uuid:
        with contextlib.suppress(pynvml.NVMLError, AttributeError):
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
    if not capability:
        with contextlib.suppress(pynvml.NVMLError, AttributeError):
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            capability = f"{major}.{minor}"
    return Device(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        total_mb=int(memory.total // 2**20),
        free_mb=int(memory.free // 2**20),
        uuid=uuid,
        capability=capability,
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
    parent, capability = "", ""  # each read on its own: a GPU that cannot say one still gives its slices
    with contextlib.suppress(pynvml.NVMLError, AttributeError):
        parent = _text(pynvml.nvmlDeviceGetUUID(handle))
    with contextlib.suppress(pynvml.NVMLError, AttributeError):
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        capability = f"{major}.{minor}"
    slices = []
    for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError:  # an empty slot
            continue
        device = _device(pynvml, mig, 1000 + 100 * index + slot, _text(pynvml.nvmlDeviceGetUUID(mig)), capability)
        slices.append(dataclasses.replace(device, parent_uuid=parent))
    return slices


def free_memory_reader() -> Callable[[], int | None] | None:
    """For a process on one GPU (a model server, CUDA_VISIBLE_DEVICES naming it): a function reading that device's
    free memory in MB (None when a reading fails), NVML kept open for the process's life so that a reading costs
    microseconds; None without NVML or a visible device."""
    devices, _ = detect()
    pynvml = _nvml() if devices and devices[0].uuid else None
    if pynvml is None:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(devices[0].uuid.encode())  # bytes: any nvidia-ml-py takes them
    except (pynvml.NVMLError, AttributeError):
        pynvml.nvmlShutdown()
        return None

    def free_mb() -> int | None:
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free // 2**20)
        except pynvml.NVMLError:
            return None

    return free_mb


def memory_in_use() -> dict[int, dict[int, int]]:
    """Device index -> {pid -> MB in use}, with the device's whole use under pid 0 ({} without NVML). A device
    that cannot be read is skipped."""
    pynvml = _nvml()
    if pynvml is None:
        return {}
    try:
        found: dict[int, dict[int, int]] = {}
        for index in range(_count(pynvml)):
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
        for index in range(_count(pynvml)):
            with contextlib.suppress(pynvml.NVMLError):
                busy[index] = int(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(index)).gpu)
        return busy
    finally:
        pynvml.nvmlShutdown()


def _count(pynvml: Any) -> int:
    """nvmlDeviceGetCount, 0 when the driver cannot answer (logged): a reading is skipped, nothing crashes."""
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as exc:
        log.warning("NVML cannot count the GPUs: %s", exc)
        return 0
