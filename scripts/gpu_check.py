"""The checks of scripts/gpu-check.sh, for a machine with an NVIDIA GPU (not run on the project's own machines,
which have none: see the README's GPU section for what was verified where). Prints one JSON report; exit 0 when
every check passed, 1 otherwise.

--nvml-only needs only python3 with nvidia-ml-py: the gpu actor's NVML reading (framework.nvml) against
nvidia-smi, and its per-process measurement of a process holding GPU memory (allocated through the driver's own
libcuda.so.1, so no CUDA toolkit or framework is needed) and the release after that process stops."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from framework import nvml  # noqa: E402  (nvidia-ml-py only: no nats-py, no msgspec)

REPORT: list[dict[str, Any]] = []
HOLD_MB = 512
# A process that holds HOLD_MB of GPU memory through the CUDA driver API until it is killed.
HOLDER = f"""
import ctypes, sys, time
cuda = ctypes.CDLL("libcuda.so.1")
ctx, ptr, dev = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_int()
assert cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0
assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t({HOLD_MB} * 2**20)) == 0
print("holding", flush=True)
time.sleep(600)
"""


def check(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], None]]:
    def wrap(fn: Callable[[], dict[str, Any]]) -> Callable[[], None]:
        def run() -> None:
            t0 = time.monotonic()
            print(f"gpu-check: {name}", file=sys.stderr)
            try:
                details = fn()
                REPORT.append({"check": name, "ok": True, "seconds": round(time.monotonic() - t0, 1), **details})
            except Exception as exc:
                REPORT.append(
                    {"check": name, "ok": False, "seconds": round(time.monotonic() - t0, 1), "error": repr(exc)}
                )

        return run

    return wrap


@check("nvml inventory matches nvidia-smi")
def inventory() -> dict[str, Any]:
    devices, reason = nvml.detect()
    smi = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    expected = [(int(i), n.strip(), int(m)) for i, n, m in (line.split(",") for line in smi)]
    seen = [(d.index, d.name, d.total_mb) for d in devices if not d.uuid]
    whole = {index for index, _, _ in seen}  # a GPU in MIG mode is listed as its slices (synthetic indices)
    assert seen == [e for e in expected if e[0] in whole], f"NVML {seen} != nvidia-smi {expected} ({reason})"
    return {"devices": seen, "mig_slices": [(d.index, d.uuid, d.total_mb) for d in devices if d.uuid]}


@check("per-process measurement and release")
def measurement() -> dict[str, Any]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding", "could not allocate"
        used = 0
        for _ in range(50):
            used = sum(per.get(holder.pid, 0) for per in nvml.memory_in_use().values())
            if used >= HOLD_MB:
                break
            time.sleep(0.2)
        assert used >= HOLD_MB, f"NVML shows {used} MB for pid {holder.pid}, expected >= {HOLD_MB}"
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    while any(holder.pid in per for per in nvml.memory_in_use().values()):
        assert time.monotonic() - t0 < 30, "the memory was not released within 30 s of the process ending"
        time.sleep(0.2)
    return {"measured_mb": used, "released_after_s": round(time.monotonic() - t0, 2)}


def device_used_mb() -> int:
    return sum(per.get(0, 0) for per in nvml.memory_in_use().values())


def through_the_system(runtime: str) -> dict[str, Any]:
    import httpx

    from tests.conftest import JFK_TEXT
    from tests.e2e.stack import start_stack
    from tests.wer import word_error_rate

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"asrpro-gpu-check-{runtime}"
    stack = start_stack(tmp, ASRPRO_LIFECYCLE__RUNTIME=runtime, ASRPRO_GPU__DETECT="true")
    results: dict[str, Any] = {}
    try:
        audio = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
        for model in ("whisper-tiny.en", "whisper-base"):
            reply = httpx.post(
                f"{stack.gateway}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", audio)},
                data={"model": model},
                timeout=600,
            )
            assert reply.status_code == 200, reply.text
            wer = word_error_rate(JFK_TEXT, reply.json()["text"])
            servers = {s["model"]: s for s in httpx.get(f"{stack.gateway}/api/ps", timeout=30).json()["models"]}
            device = servers[model].get("device", "")
            assert device.startswith("cuda"), f"{model} ran on {device}"
            assert wer < 0.15, f"{model}: WER {wer:.2f}"
            results[model] = {"device": device, "wer": round(wer, 3)}
        time.sleep(12)  # the gpu actor measures every 10 s
        gpu = httpx.get(f"{stack.gateway}/api/gpu", timeout=30).json()
        assert gpu["measured_mb"], f"no NVML measurement replaced the declared sizes: {gpu}"
        results["measured_mb"] = gpu["measured_mb"]
        before = device_used_mb()
        unloaded = httpx.delete(f"{stack.gateway}/api/ps/whisper-base?force=true", timeout=60)
        assert unloaded.status_code == 200, unloaded.text
        time.sleep(3)
        after = device_used_mb()
        assert after < before - 50, f"unloading whisper-base freed {before - after} MB of GPU memory"
        results["unload_freed_mb"] = before - after
    finally:
        stack.stop()
    return results


@check("whisper on CUDA through the whole system, local runtime")
def local_runtime() -> dict[str, Any]:
    return through_the_system("local")


@check("whisper on CUDA through the whole system, docker runtime")
def docker_runtime() -> dict[str, Any]:
    from asrpro import images
    from framework.config import load_config

    config = load_config()
    work = Path(config.docker.build_dir)
    built = images.build(config, ["whisper-tiny.en", "whisper-base"], work)
    built |= {
        f"{k} (cuda)": v for k, v in images.build(config, ["whisper-tiny.en", "whisper-base"], work, cuda=True).items()
    }
    return {"images": built, **through_the_system("docker")}


@check("float16 vs int8 (whisper-base, in process)")
def compute_types() -> dict[str, Any]:
    import numpy as np

    from framework.config import load_config
    from model_server.audio import decode
    from model_server.engines.whisper import WhisperEngine
    from schemas.model_server import TranscribeOptions

    weights = load_config().models["whisper-base"].weights
    audio: np.ndarray = decode((REPO.parent / "shared" / "data" / "jfk.flac").read_bytes())
    timings = {}
    for compute_type in ("float16", "int8_float16", "int8"):
        engine = WhisperEngine(weights, device="cuda", compute_type=compute_type)
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            list(engine.decode(audio, TranscribeOptions(language="en")).pieces)
            runs.append(time.perf_counter() - t0)
        timings[engine.compute_type] = round(min(runs), 3)
    return {"seconds_for_11s_of_audio": timings}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvml-only", action="store_true")
    args = parser.parse_args()
    checks = [inventory, measurement]
    if not args.nvml_only:
        checks += [local_runtime, docker_runtime, compute_types]
    for run in checks:
        run()
    print(json.dumps({"ok": all(r["ok"] for r in REPORT), "checks": REPORT}, indent=2))
    return 0 if all(r["ok"] for r in REPORT) else 1


if __name__ == "__main__":
    sys.exit(main())
