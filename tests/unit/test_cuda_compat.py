"""Whether an engine's CUDA build can run on a GPU with a driver: read from the build itself (the installed
libctranslate2's fatbin containers, onnxruntime's build info, an image's labels), checked before a start, and the
warm-up's own toolchain error taken as the GPU's fault. No GPU here: the GPU and driver are what NVML would say."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from actors.lifecycle.runtimes import LaunchSpec, local
from actors.registry import catalogue as catalogue_of
from framework import cuda_compat
from framework.cuda_compat import CudaBuild
from model_server.settings import EngineSettings
from model_server.state import ModelState
from schemas.gpu import Allocation
from tests.unit.fakes import config

H100_R535 = Allocation(model="m", device="cuda:0", device_index=0, capability="9.0", driver_cuda="12.2")
H100_R570 = Allocation(model="m", device="cuda:0", device_index=0, capability="9.0", driver_cuda="12.8")
A10_R535 = Allocation(model="m", device="cuda:0", device_index=0, capability="8.6", driver_cuda="12.2")


def fatbin(entries: list[tuple[int, int, tuple[int, int]]], padding: int = 0) -> bytes:
    """A fatbin container as nvcc writes it: (kind, sm, ISA version) entries with 64-byte headers."""
    body = b""
    for kind, arch, (major, minor) in entries:
        payload = b"\0" * 32
        header = struct.pack("<HHIQIIHHI", kind, 0x101, 64, len(payload), 0, 0, minor, major, arch)
        body += header.ljust(64, b"\0") + payload
    body += b"\0" * padding
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_a_fatbin_says_which_gpus_have_compiled_code_and_which_ptx_the_driver_must_compile() -> None:
    library = b"ELF..." + fatbin([(2, 75, (1, 7)), (2, 80, (1, 7)), (1, 80, (8, 4))], padding=48)
    library += b"more code" + fatbin([(2, 86, (1, 7)), (1, 86, (8, 7))])
    build = cuda_compat.read_fatbins(library)
    assert build == CudaBuild(sass=(75, 80, 86), ptx_arch=86, ptx_version=(8, 7))
    assert CudaBuild.from_labels(build.labels()) == build
    assert CudaBuild.from_labels({}) is None  # an image built before the labels: unknown, not checked


def test_the_installed_ctranslate2_is_read_from_its_library() -> None:
    build = cuda_compat.installed_ctranslate2()
    assert build is not None and build.ptx_arch and build.sass, "the wheel carries CUDA code"
    assert build.ptx_version in cuda_compat.PTX_CUDA
    # Whatever it carries, a GPU of its newest compiled architecture runs it with a driver of its CUDA major.
    newest = max(build.sass)
    assert cuda_compat.problem(build, f"{newest // 10}.{newest % 10}", "12.0", "ct2") == ""


@pytest.mark.parametrize(
    ("capability", "driver", "verdict"),
    [
        ("9.0", "12.2", "install an NVIDIA driver R570 or newer"),  # Hopper on R535: the PTX cannot be compiled
        ("9.0", "12.4", "install an NVIDIA driver R570 or newer"),  # ... nor on R550
        ("9.0", "12.8", ""),
        ("10.0", "12.9", ""),  # Blackwell runs the PTX too
        ("8.0", "12.2", ""),  # A100: compiled code
        ("8.9", "12.2", ""),  # L4 / RTX 4090: sm_86 code runs on 8.9
        ("8.6", "11.8", "needs a driver for CUDA 12"),
        ("5.0", "12.8", "has no code for this GPU (compute capability 5.0"),
        ("9.0", "", ""),  # the driver unknown (a configured inventory without it): not checked
    ],
)
def test_a_build_is_checked_against_the_gpu_and_the_driver(capability: str, driver: str, verdict: str) -> None:
    build = CudaBuild(sass=(53, 60, 61, 70, 75, 80, 86), ptx_arch=86, ptx_version=(8, 7))
    problem = cuda_compat.problem(build, capability, driver, "ctranslate2 4.8.5")
    assert (verdict in problem) if verdict else problem == ""


def test_a_runtime_linked_build_needs_a_driver_of_its_cuda_major() -> None:
    cuda13 = CudaBuild(runtime=(13, 0))
    assert "install a driver for CUDA 13 (R580 or newer)" in cuda_compat.problem(cuda13, "9.0", "12.8", "ort")
    assert cuda_compat.problem(CudaBuild(runtime=(12, 4)), "9.0", "12.2", "ort") == ""


def test_onnxruntime_builds_are_told_apart_by_their_build_info(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-1.23.2-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            "onnxruntime/capi/build_and_package_info.py", "package_name = 'onnxruntime-gpu'\ncuda_version = '12.8'\n"
        )
    assert cuda_compat.wheel_build(wheel) == CudaBuild(runtime=(12, 8))
    cpu = tmp_path / "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(cpu, "w") as archive:
        archive.writestr("onnxruntime/capi/build_and_package_info.py", "package_name = 'onnxruntime'\n")
    assert cuda_compat.wheel_build(cpu) is None
    assert cuda_compat.installed_onnxruntime() is None  # what faster-whisper installs here: the CPU build


async def test_the_local_runtime_refuses_a_gpu_its_ctranslate2_cannot_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    model = catalogue_of(config())["whisper-base"]
    # As on a host with the gpu extra: cuBLAS found.
    monkeypatch.setattr(local.cuda_libs, "locate", lambda: {"libcublas.so.12": "/venv/libcublas.so.12"})
    runtime = local.LocalRuntime()
    assert "R570 or newer" in await runtime.gpu_problem(model, H100_R535)
    assert await runtime.gpu_problem(model, H100_R570) == ""
    assert await runtime.gpu_problem(model, A10_R535) == ""
    monkeypatch.setattr(local, "_version", lambda dist: "4.5.0" if dist == "ctranslate2" else "")
    assert "needs cuDNN 9" in await runtime.gpu_problem(model, A10_R535)


async def test_parakeet_locally_needs_a_cuda_12_onnxruntime_gpu_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    model = catalogue_of(config())["parakeet-tdt-0.6b"]
    runtime = local.LocalRuntime()
    problem = await runtime.gpu_problem(model, A10_R535)
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in problem and "==1.23.2" in problem
    monkeypatch.setattr(local, "_version", lambda dist: "1.24.0" if dist == "onnxruntime-gpu" else "")
    monkeypatch.setattr(cuda_compat, "installed_onnxruntime", lambda: CudaBuild(runtime=(13, 0)))
    assert "R580 or newer" in await runtime.gpu_problem(model, A10_R535)
    monkeypatch.setattr(cuda_compat, "installed_onnxruntime", lambda: None)  # the CPU build's files over it
    assert "the CPU build's" in await runtime.gpu_problem(model, A10_R535)


def test_the_gpu_selected_by_uuid_reaches_cuda_visible_devices() -> None:
    model = catalogue_of(config())["whisper-base"]
    assert LaunchSpec(model=model, device="cuda:1", visible="GPU-8f3a").cuda_visible == "GPU-8f3a"


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        ("CUDA failed with error the provided PTX was compiled with an unsupported toolchain.", "gpu"),
        ("CUDA failed with error no kernel image is available for execution on the device", "gpu"),
        ("CUDA libraries not loadable: libcublas.so.12 (pip install ...)", None),  # raised as CudaLibrariesMissing
        ("weights not found: looked in /models/x", None),
    ],
)
def test_a_load_the_gpu_cannot_run_says_so_in_health(error: str, cause: str | None) -> None:
    def loader(_: EngineSettings) -> object:
        raise RuntimeError(error)

    state = ModelState(EngineSettings(model_id="m", engine="faster-whisper", weights="/x", device="cuda"), loader)  # type: ignore[arg-type]
    state.start_loading().join()
    report = state.health()
    assert (report.status, report.cause, report.error) == ("error", cause, error)


def test_missing_cuda_libraries_are_the_gpus_fault() -> None:
    from model_server.cuda_libs import CudaLibrariesMissing

    def loader(_: EngineSettings) -> object:
        raise CudaLibrariesMissing("CUDA libraries not loadable: libcublas.so.12")

    state = ModelState(EngineSettings(model_id="m", engine="faster-whisper", weights="/x", device="cuda"), loader)  # type: ignore[arg-type]
    state.start_loading().join()
    assert state.health().cause == "gpu"


def test_stray_magic_bytes_and_unknown_entries_do_not_hide_the_real_containers() -> None:
    stray = cuda_compat.FATBIN_MAGIC + struct.pack("<HHQ", 7, 99, 2**40)  # the magic by chance, a huge "size"
    unknown_kind = fatbin([(3, 0, (0, 0)), (2, 90, (1, 7))])
    build = cuda_compat.read_fatbins(stray + b"x" * 20 + unknown_kind + cuda_compat.FATBIN_MAGIC)
    assert build.sass == (90,)


def test_a_ptx_newer_than_the_check_knows_is_refused_even_beside_compiled_kernels() -> None:
    cuda13_1 = CudaBuild(sass=(80, 86, 90), ptx_arch=90, ptx_version=(9, 1))
    assert "newer than any CUDA this check knows" in cuda_compat.problem(cuda13_1, "8.0", "12.8", "ct2")


def test_kernels_are_compiled_at_start_only_where_the_gpu_has_no_compiled_code() -> None:
    build = CudaBuild(sass=(53, 60, 61, 70, 75, 80, 86), ptx_arch=86, ptx_version=(8, 7))
    assert cuda_compat.needs_jit(build, "9.0") and cuda_compat.needs_jit(build, "12.0")
    assert not cuda_compat.needs_jit(build, "8.9") and not cuda_compat.needs_jit(build, "")
    assert not cuda_compat.needs_jit(None, "9.0")


def test_the_start_budget_allows_a_first_gpu_start_only_where_a_gpu_may_be_used() -> None:
    from framework.config import start_budget

    declared = '[{index = 0, memory_mb = 81920, capability = "9.0"}]'
    assert start_budget(config(ASRPRO_GPU__DEVICES=declared)) == 900 + 15
    assert start_budget(config(ASRPRO_GPU__DEVICES=declared, ASRPRO_GPU__ACCOUNTING_ONLY="true")) == 60 + 15
    assert start_budget(config(ASRPRO_GPU__DETECT="false")) == 60 + 15
