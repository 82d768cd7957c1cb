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
