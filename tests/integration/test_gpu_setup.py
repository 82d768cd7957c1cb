"""What a GPU user gets, checked on a machine without a GPU: the `gpu` extra installs into a fresh venv and its
libraries load through the model server's own loader; `asrpro doctor` reports this machine as it is; the prepared
GPU check declines with exit 77."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from model_server import cuda_libs
from tests.conftest import REPO


def test_the_gpu_extra_installs_and_its_libraries_load_through_the_model_servers_loader(tmp_path: Path) -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # pip's cache keeps the ~580 MB wheel between runs: downloaded once per machine.
    subprocess.run([venv / "bin" / "pip", "install", "-q", *extra], check=True, timeout=900)
    loader = "import json, sys; from model_server import cuda_libs; print(json.dumps(cuda_libs.preload()))"
    done = subprocess.run(
        [venv / "bin" / "python", "-c", loader],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert set(loaded) == set(cuda_libs.SONAMES)
    assert all(str(venv) in where and "nvidia/cublas/lib" in where for where in loaded.values()), loaded


def test_doctor_reports_this_machine_as_it_is() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "doctor", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert checks["nats-server"]["ok"] is True and "nats-server" in checks["nats-server"]["detail"]
    if shutil.which("nvidia-smi") is None:
        assert checks["gpu"]["ok"] is None and "NVML" in checks["gpu"]["detail"]
    # The main venv has no `gpu` extra: cuBLAS is not loadable on this host, and doctor says how to get it.
    host_libs = cuda_libs.locate()
    assert (checks["cuda libraries (host)"]["ok"] is None) == (not all(host_libs.values()))
    if not all(host_libs.values()):
        assert ".[gpu]" in checks["cuda libraries (host)"]["fix"]
    assert checks["models"]["ok"] is True and "whisper-tiny.en" in checks["models"]["data"]["installed"]
    # Weights, images and GPUs are per host: doctor says which node these checks are about.
    assert checks["node"]["data"]["node"] and checks["node"]["data"]["cluster"] is False
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # the CI machine runs a Docker Engine
        assert checks["docker"]["ok"] is True and checks["docker"]["data"]["nvidia_runtime"] in (True, False)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU machine runs the real check")
def test_the_prepared_gpu_check_declines_without_a_gpu() -> None:
    done = subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 77 and "no NVIDIA GPU" in done.stderr


STANDIN = REPO / "tests" / "fixtures" / "standin_gpu"
# The system's PATH, without this venv's bin: `python3` is then the bare interpreter a GPU machine would have.
SYSTEM_PATH = ":".join(p for p in os.environ["PATH"].split(":") if not p.startswith(sys.prefix))


def gpu_check(*args: str, standin_nvml: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/gpu-check.sh with the stand-in nvidia-smi on PATH (and its pynvml on PYTHONPATH), the system python3."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ["PATH"] = f"{STANDIN / 'bin'}:{SYSTEM_PATH}"
    if standin_nvml:
        environ["PYTHONPATH"] = str(STANDIN)
    command = ["bash", "scripts/gpu-check.sh", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environ | env)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What --prepare writes for the system python3 (pip's cache keeps the wheels between runs)."""
    version = subprocess.run(
        ["python3", "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": SYSTEM_PATH},
    ).stdout.strip()
    directory = tmp_path_factory.mktemp("gpu-check") / "prepared"
    done = gpu_check("--prepare", str(directory), "--python", version)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_mib"] < 64
    manifest = json.loads((directory / "manifest.json").read_text())
    wheels = {name.split("/")[1].split("-")[0].lower() for name in manifest["files"] if name.startswith("wheels/")}
    assert wheels == {"ctranslate2", "numpy", "pyyaml", "nvidia_ml_py", "msgspec"}
    assert (directory / "tiny-whisper" / "model.bin").stat().st_size < 4 * 2**20
    return directory


def test_the_offline_gpu_check_runs_from_the_prepared_dir_alone(prepared: Path) -> None:
    """Rehearsed on the CPU with a stand-in NVML, by the system python3: what it imported came from DIR/site."""
    done = gpu_check("--offline", str(prepared), "--device", "cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    report = {c["check"].split(" ")[0]: c for c in json.loads(done.stdout)["checks"]}
    assert report["admission"]["outside_mb"] >= 512 and report["admission"]["ok"]
    kernels = report["ctranslate2's"]
    assert kernels["verdict"] == "runs" and kernels["capability"] == "8.6" and kernels["driver_cuda"] == "12.8"
    assert all(r["ok"] and r["tokens"] > 0 for r in kernels["compute_types"].values())
    assert all(where.startswith(str(prepared / "site")) for where in kernels["imported_from"].values()), kernels
    assert (prepared / "site" / "ctranslate2").is_dir() and not (prepared / "site" / "pip").exists()
    # The batched decode: every batch size the free memory allows ran (the stand-in's 15 GB: all of them), with the
    # same work as one by one, and the largest the rule allows (capped at 8 in the rehearsal) at once.
    tiny = report["batched"]["tiny"]
    assert report["batched"]["ok"] and tiny["free_mb"] == 15 * 1024 and tiny["allowed_batch"]["windows"] == 8
    assert set(tiny["batches"]) == {"2", "4"} and all(run["speed_up"] > 0 for run in tiny["batches"].values())


def test_the_gpu_check_says_when_it_cannot_run_here_and_fails_only_a_failed_check(
    prepared: Path, tmp_path: Path
) -> None:
    # On CUDA (no --device cpu), this machine has no libcublas.so.12: it cannot run here, which is not a failure.
    # NVML and admission still run (a bare driver host has no cuBLAS: it does not fit the prepared 64 MiB).
    no_cublas = gpu_check("--offline", str(prepared))
    assert no_cublas.returncode == 2 and "no libcublas.so.12" in no_cublas.stderr
    ran = {c["check"].split(" ")[0]: c["ok"] for c in json.loads(no_cublas.stdout)["checks"]}
    assert ran == {"nvml": True, "admission": True, "ctranslate2's": None, "batched": None}
    unprepared = gpu_check("--offline", str(tmp_path))
    assert unprepared.returncode == 2 and "--prepare" in unprepared.stderr
    other = tmp_path / "other"
    shutil.copytree(prepared, other, ignore=shutil.ignore_patterns("site"))
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"python": "3.99"}))
    wrong_python = gpu_check("--offline", str(other), "--device", "cpu")
    assert wrong_python.returncode == 2 and "prepared for Python 3.99" in wrong_python.stderr
    bare = gpu_check("--nvml-only", standin_nvml=False)  # the system python3 without nvidia-ml-py
    assert bare.returncode == 2 and "pynvml is not importable" in bare.stderr
    # nvidia-smi and NVML disagree on the memory: a failed check, exit 1.
    disagree = gpu_check("--offline", str(prepared), "--device", "cpu", STANDIN_SMI_TOTAL_MB="24576")
    assert disagree.returncode == 1, disagree.stdout + disagree.stderr
    [inventory] = [c for c in json.loads(disagree.stdout)["checks"] if c["check"].startswith("nvml inventory")]
    assert inventory["ok"] is False and "24576" in inventory["error"]
