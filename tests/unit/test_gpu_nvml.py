"""The gpu actor's reading of NVML (framework.nvml), against a stand-in pynvml (no GPU here): a GPU split into MIG
slices is used as its slices, selected by UUID; a device NVML cannot read is left out, not fatal; NVML's used
memory outside asrpro's servers is left alone by placement."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from actors import gpu
from framework.nvml import memory_in_use
from schemas.gpu import AllocationTable, GpuDevice


class NVMLError(Exception):
    pass


def fake_pynvml() -> types.ModuleType:
    """GPU 0: a plain 24 GB card; GPU 1: in MIG mode with two 10 GB slices (slot 1 empty); GPU 2: fallen off the bus."""
    m = types.ModuleType("pynvml")
    mem = types.SimpleNamespace
    handles: dict[Any, dict[str, Any]] = {
        0: {"name": "RTX 4090", "memory": mem(total=24 * 2**30, free=20 * 2**30, used=4 * 2**30), "mig": None},
        1: {"name": "A100", "memory": mem(total=80 * 2**30, free=80 * 2**30, used=0), "mig": 1},
        ("mig", 0): {
            "name": "A100 MIG 1g.10gb",
            "memory": mem(total=10 * 2**30, free=10 * 2**30, used=0),
            "uuid": "MIG-aaaa",
        },
        ("mig", 2): {
            "name": "A100 MIG 1g.10gb",
            "memory": mem(total=10 * 2**30, free=9 * 2**30, used=2**30),
            "uuid": "MIG-cccc",
        },
    }

    def handle_by_index(index: int) -> Any:
        if index == 2:
            raise NVMLError("GPU is lost")
        return index

    def mig_mode(handle: Any) -> tuple[int, int]:
        if handles[handle]["mig"] is None:
            raise NVMLError("Not Supported")
        return handles[handle]["mig"], handles[handle]["mig"]

    def mig_handle(handle: Any, slot: int) -> Any:
        if ("mig", slot) not in handles:
            raise NVMLError("Not Found")
        return ("mig", slot)

    def processes(handle: Any) -> list[Any]:
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)] if handle == 0 else []

    functions = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 3,
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlDeviceGetMemoryInfo": lambda h: handles[h]["memory"],
        "nvmlDeviceGetName": lambda h: handles[h]["name"].encode(),
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 3,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetUUID": lambda h: handles[h]["uuid"],
        "nvmlDeviceGetComputeRunningProcesses": processes,
        "NVMLError": NVMLError,
        "NVML_DEVICE_MIG_ENABLE": 1,
    }
    for name, value in functions.items():
        setattr(m, name, value)
    return m


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    return module


def test_mig_slices_are_devices_and_a_lost_gpu_is_left_out_with_the_reason(nvml: types.ModuleType) -> None:
    devices, reason = gpu.detect_nvml()
    assert [(d.index, d.name, d.total_mb, d.uuid) for d in devices] == [
        (0, "RTX 4090", 24576, ""),
        (1100, "A100 MIG 1g.10gb", 10240, "MIG-aaaa"),
        (1102, "A100 MIG 1g.10gb", 10240, "MIG-cccc"),
    ]
    assert "cuda:2 (GPU is lost)" in reason


def test_a_slice_is_selected_by_its_uuid_a_whole_gpu_by_its_index(nvml: types.ModuleType) -> None:
    devices, _ = gpu.detect_nvml()
    table = AllocationTable()
    big = gpu.place(table, devices, "large", 20000)
    assert big is not None and (big.device, big.visible) == ("cuda:0", "")
    table.allocations["large"] = big
    small = gpu.place(table, devices, "tiny", 8000)
    assert small is not None and small.visible.startswith("MIG-")


def test_memory_used_outside_asrpro_is_left_alone(nvml: types.ModuleType) -> None:
    per_device = memory_in_use()
    assert per_device[0] == {0: 4096, 4242: 3072}
    table = AllocationTable(external_mb={0: 4096})
    card = [GpuDevice(index=0, name="RTX 4090", total_mb=24576, free_mb=20480)]
    assert gpu.place(table, card, "m", 22000) is None  # it would fit an empty card, not beside Xorg's 4 GB
    assert gpu.place(table, card, "m", 20000) is not None
