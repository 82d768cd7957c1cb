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
from schemas.gpu import Allocation, AllocationTable, GpuDevice


class NVMLError(Exception):
    pass


def fake_pynvml() -> types.ModuleType:
    """GPU 0: a plain 24 GB card; GPU 1: in MIG mode with two 10 GB slices (slot 1 empty); GPU 2: fallen off the bus."""
    m = types.ModuleType("pynvml")
    mem = types.SimpleNamespace
    handles: dict[Any, dict[str, Any]] = {
        0: {
            "name": "RTX 4090",
            "memory": mem(total=24 * 2**30, free=20 * 2**30, used=4 * 2**30),
            "mig": None,
            "uuid": b"GPU-4090",
            "capability": (8, 9),
        },
        1: {
            "name": "A100",
            "memory": mem(total=80 * 2**30, free=80 * 2**30, used=0),
            "mig": 1,
            "uuid": "GPU-a100",
            "capability": (8, 0),
        },
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

    def handle_by_uuid(uuid: bytes) -> Any:
        found = [h for h, about in handles.items() if about["uuid"] in (uuid, uuid.decode())]
        if not found:
            raise NVMLError("Not Found")
        return found[0]

    def processes(handle: Any) -> list[Any]:
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=3 * 2**30)] if handle == 0 else []

    functions = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: 3,
        "nvmlDeviceGetHandleByIndex": handle_by_index,
        "nvmlDeviceGetHandleByUUID": handle_by_uuid,
        "nvmlDeviceGetMemoryInfo": lambda h: handles[h]["memory"],
        "nvmlDeviceGetName": lambda h: handles[h]["name"].encode(),
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetMaxMigDeviceCount": lambda h: 3,
        "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        "nvmlDeviceGetUUID": lambda h: handles[h]["uuid"],
        "nvmlDeviceGetComputeRunningProcesses": processes,
        "nvmlDeviceGetCudaComputeCapability": lambda h: handles[h]["capability"],
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12020,
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
    assert [(d.index, d.name, d.total_mb, d.uuid, d.capability) for d in devices] == [
        (0, "RTX 4090", 24576, "GPU-4090", "8.9"),
        (1100, "A100 MIG 1g.10gb", 10240, "MIG-aaaa", "8.0"),
        (1102, "A100 MIG 1g.10gb", 10240, "MIG-cccc", "8.0"),
    ]
    assert "cuda:2 (GPU is lost)" in reason and "driver supports CUDA 12.2" in reason


def test_every_device_is_selected_by_its_uuid_never_by_an_index(nvml: types.ModuleType) -> None:
    devices, _ = gpu.detect_nvml()
    table = AllocationTable()
    big = gpu.place(table, devices, "large", 20000, "12.2")
    assert big is not None and (big.device, big.visible, big.capability, big.driver_cuda) == (
        "cuda:0",
        "GPU-4090",
        "8.9",
        "12.2",
    )
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


@pytest.mark.parametrize(
    ("setting", "kept"),
    [
        (None, [0, 1100, 1102]),
        ("0", [0]),
        ("GPU-a1", [1100, 1102]),  # a unique prefix of the UUID, as CUDA reads it
        ("MIG-cccc,GPU-4090", [0, 1102]),
        ("", []),
        ("-1", []),
    ],
)
def test_the_operators_cuda_visible_devices_is_respected(
    nvml: types.ModuleType, monkeypatch: pytest.MonkeyPatch, setting: str | None, kept: list[int]
) -> None:
    if setting is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", setting)
    devices, reason = gpu.detect_nvml()
    assert [d.index for d in devices] == kept
    assert ("hidden by CUDA_VISIBLE_DEVICES" in reason) == (setting is not None and len(kept) < 3)


def test_a_driver_that_cannot_count_its_gpus_crashes_nothing(nvml: types.ModuleType) -> None:
    def broken() -> int:
        raise NVMLError("Unknown Error")

    setattr(nvml, "nvmlDeviceGetCount", broken)  # noqa: B010 - a stand-in module
    devices, reason = gpu.detect_nvml()
    assert devices == [] and "cannot count the GPUs (Unknown Error)" in reason
    assert memory_in_use() == {}
    from framework.nvml import utilization

    assert utilization() == {}


def test_our_servers_never_count_as_outside_use_whatever_pid_namespace_nvml_reports() -> None:
    """NVML reports host pids; in a container without --pid=host the server's Popen pid is another number."""
    table = AllocationTable(
        allocations={
            "measured": Allocation(model="measured", device="cuda:0", device_index=0, memory_mb=2000, pid=4242),
            "unmatched": Allocation(model="unmatched", device="cuda:0", device_index=0, memory_mb=1500, pid=17),
        }
    )
    # Host pid 4242 is ours (3 GB measured); host pid 90001 is the unmatched server (its pid here is 17); Xorg 1 GB.
    per_device = {0: {0: 3072 + 1600 + 1024, 4242: 3072, 90001: 1600}}
    assert gpu.outside_use(table, per_device) == {0: 1024 + 100}  # never 1600 + 1024


def test_a_model_server_reads_the_free_memory_of_its_own_gpu(
    nvml: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.nvml import free_memory_reader

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-4090")
    reader = free_memory_reader()
    assert reader is not None and reader() == 20 * 1024
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cccc")  # a slice: its own memory, not its GPU's
    reader = free_memory_reader()
    assert reader is not None and reader() == 9 * 1024
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-none")
    assert free_memory_reader() is None
