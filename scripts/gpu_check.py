"""The checks of scripts/gpu-check.sh, for a machine with an NVIDIA GPU (not run on the project's own machines,
which have none: see the manual's GPU page for what was verified where). Prints one JSON report. Exit 0 when every
check passed, 1 when one failed, 2 when it cannot run here (something it needs is missing: the reason on stderr),
77 without a GPU.

--nvml-only needs only python3 with nvidia-ml-py: the gpu actor's NVML reading (framework.nvml) against
nvidia-smi, and its per-process measurement of a process holding GPU memory (allocated through the driver's own
libcuda.so.1, so no CUDA toolkit or framework is needed) and the release after that process stops.

--offline DIR needs only python3 and DIR (made by --prepare on a connected machine): its wheels are unpacked into
DIR/site, which goes on PYTHONPATH; then NVML against nvidia-smi, admission beside a process holding GPU memory, and
CTranslate2's kernels on CUDA (a tiny random Whisper: encode per compute type against a CPU float32 reference, a
generate, the first call's JIT time), with the pre-start verdict (framework.cuda_compat) compared to what ran.
`--device cpu` rehearses it on a CPU machine with a stand-in NVML (the test does)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from framework import nvml  # noqa: E402  (nvidia-ml-py only: no nats-py, no msgspec)

REPORT: list[dict[str, Any]] = []
EXIT_FAILED, EXIT_CANNOT_RUN, EXIT_NO_GPU = 1, 2, 77
HOLD_MB = 512
HOLDER_MARK = "asrpro-gpu-check-holder"  # in the holder's argv: a stand-in NVML finds the rehearsal's holder by it
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
# The rehearsal's holder (--device cpu): holds nothing; the stand-in NVML reports HOLD_MB for it.
REHEARSAL_HOLDER = "import time; print('holding', flush=True); time.sleep(600)"


class CannotRun(Exception):
    """Something the check needs is not here (a module, a library, the prepared DIR): exit 2, never 1."""


def check(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], None]]:
    def wrap(fn: Callable[[], dict[str, Any]]) -> Callable[[], None]:
        def run() -> None:
            t0 = time.monotonic()
            print(f"gpu-check: {name}", file=sys.stderr)
            try:
                details = fn()
                REPORT.append({"check": name, "ok": True, "seconds": round(time.monotonic() - t0, 1), **details})
            except CannotRun as exc:  # not a failure: something it needs is not on this machine
                print(f"gpu-check: cannot run {name!r} here: {exc}", file=sys.stderr)
                REPORT.append({"check": name, "ok": None, "cannot_run": str(exc)})
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
    seen = [(d.index, d.name, d.total_mb) for d in devices if d.index < 1000]
    whole = {index for index, _, _ in seen}  # a GPU in MIG mode is listed as its slices (synthetic indices)
    assert seen == [e for e in expected if e[0] in whole], f"NVML {seen} != nvidia-smi {expected} ({reason})"
    return {"devices": seen, "mig_slices": [(d.index, d.uuid, d.total_mb) for d in devices if d.index >= 1000]}


DEVICE = "cuda"  # --device


def hold_memory(uuid: str = "") -> subprocess.Popen[str]:
    """A process of our own holding HOLD_MB of GPU memory (on the GPU with this UUID, else CUDA's first), once NVML
    shows it."""
    import pynvml

    # A stand-in NVML (the rehearsal's) measures a holder that allocates nothing; a real one, real memory.
    program = REHEARSAL_HOLDER if getattr(pynvml, "STANDIN", False) else HOLDER
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid} if uuid else None
    command = [sys.executable, "-c", program, HOLDER_MARK]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding", "could not allocate"
    used = 0
    for _ in range(50):
        used = sum(per.get(holder.pid, 0) for per in nvml.memory_in_use().values())
        if used >= HOLD_MB:
            return holder
        time.sleep(0.2)
    holder.kill()
    raise AssertionError(f"NVML shows {used} MB for pid {holder.pid}, expected >= {HOLD_MB}")


@check("per-process measurement and release")
def measurement() -> dict[str, Any]:
    holder = hold_memory()
    used = sum(per.get(holder.pid, 0) for per in nvml.memory_in_use().values())
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


@check("admission leaves the memory another process holds alone")
def admission() -> dict[str, Any]:
    from framework.gpu_accounting import outside_use, place
    from schemas.gpu import AllocationTable, GpuDevice

    found, _ = nvml.detect()
    whole = [d for d in found if d.index < 1000]
    if not whole:
        raise CannotRun("only MIG slices here: NVML measures whole GPUs, so admission is not checked per slice")
    first = whole[0]  # NVML's order; the holder is put on it by UUID, not on CUDA's first device
    holder = hold_memory(first.uuid)
    try:
        devices = [GpuDevice(index=first.index, name=first.name, total_mb=first.total_mb, free_mb=first.free_mb)]
        table = AllocationTable()
        table.external_mb = outside_use(table, nvml.memory_in_use())
        outside = table.external_mb.get(first.index, 0)
        assert outside >= HOLD_MB, f"{outside} MB counted as used outside asrpro, the holder alone holds {HOLD_MB}"
        room = first.total_mb - outside
        assert place(table, devices, "too-big", room + 1) is None, "placed beside the holder's memory"
        assert place(table, devices, "fits", room - 1) is not None, f"{room - 1} MB did not fit in {room} MB free"
        return {"outside_mb": outside, "room_mb": room}
    finally:
        holder.kill()
        holder.wait()


def features() -> Any:
    import numpy as np

    return np.random.default_rng(7).standard_normal((1, 80, 3000)).astype(np.float32)


def cublas_here() -> str:
    """Where libcublas.so.12 loads from; CannotRun without it (today's ctranslate2 is built for CUDA 12)."""
    import ctypes

    try:
        ctypes.CDLL("libcublas.so.12", mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise CannotRun(
            f"no libcublas.so.12 can be loaded here ({exc}): today's ctranslate2 is built for CUDA 12 and a CUDA "
            "13-only machine cannot run it (install CUDA 12's cuBLAS, or the gpu extra's nvidia-cublas-cu12)"
        ) from exc
    return "system"


@check("ctranslate2's kernels: encode per compute type against CPU float32, generate, the JIT's first call")
def kernels() -> dict[str, Any]:
    import ctranslate2
    import numpy as np

    from framework import cuda_compat

    if DEVICE == "cuda":
        cublas_here()
    model = str(PREPARED / "tiny-whisper")
    build = cuda_compat.installed_ctranslate2()
    assert build is not None, "no libctranslate2 found beside the ctranslate2 package"
    found, _ = nvml.detect()
    # CTranslate2's device 0 is the GPU whose capability is checked: NVML's first, by UUID (before CUDA starts).
    if DEVICE == "cuda" and found[0].uuid:
        os.environ["CUDA_VISIBLE_DEVICES"] = found[0].uuid
    driver = nvml.driver_cuda_version()
    verdict = cuda_compat.problem(build, found[0].capability, driver, f"ctranslate2 {ctranslate2.__version__}")
    mel = ctranslate2.StorageView.from_array(features())
    reference = np.array(ctranslate2.models.Whisper(model, device="cpu", compute_type="float32").encode(mel, True))
    types = ("float16", "int8_float16", "int8") if DEVICE == "cuda" else ("int8_float32", "int8", "float32")
    tolerance = {"float16": 0.02, "float32": 1e-4}  # of the reference's largest value; int8 weights: 0.05
    results: dict[str, Any] = {}
    for compute_type in types:
        t0 = time.perf_counter()
        try:
            whisper = ctranslate2.models.Whisper(model, device=DEVICE, compute_type=compute_type)
            encoded = np.array(whisper.encode(mel, True)).astype(np.float32)
            first_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            whisper.encode(mel, True)
            again_s = time.perf_counter() - t1
            prompt = [["<|startoftranscript|>", "<|notimestamps|>"]]
            tokens = whisper.generate(mel, prompt, max_length=16, beam_size=1)[0].sequences_ids[0]
        except RuntimeError as exc:
            results[compute_type] = {"ok": False, "error": str(exc)}
            continue
        error = float(np.abs(encoded - reference).max() / np.abs(reference).max())
        limit = tolerance.get(compute_type, 0.05)
        results[compute_type] = {
            "ok": error <= limit and len(tokens) > 0,
            "relative_error": round(error, 5),
            "tolerance": limit,
            "tokens": len(tokens),
            "first_call_s": round(first_s, 3),  # on a GPU without compiled kernels: the PTX's JIT compile
            "second_call_s": round(again_s, 4),
        }
    ran = all(r["ok"] for r in results.values())
    report: dict[str, Any] = {"build": build.describe(), "driver_cuda": driver, "capability": found[0].capability}
    report["imported_from"] = {m.__name__: str(Path(m.__file__ or "").parent) for m in (ctranslate2, np)}
    report |= {"verdict": verdict or "runs", "compute_types": results}
    # The verdict the lifecycle acts on before a start must agree with what really ran.
    assert ran == (verdict == ""), f"the pre-start verdict ({verdict or 'runs'}) disagrees with what ran: {report}"
    assert ran, f"ctranslate2 could not run here: {report}"
    return report


BEAM, TOKENS = 5, 48  # faster-whisper's default beam; about an 11-s utterance's text (jfk.flac: 27 tokens)
MOST = 256  # windows in the batch the free-memory rule allows, at most (an 80-GB card allows ~700 of base's)


def used_mb(index: int) -> int:
    """The memory in use on device `index` (NVML, every process)."""
    return nvml.memory_in_use().get(index, {}).get(0, 0)


def peak_used_mb(index: int, stop: threading.Event, into: list[int]) -> None:
    """The device's used memory, polled every 10 ms until `stop`."""
    while not stop.is_set():
        into.append(used_mb(index))
        stop.wait(0.01)


@check("batched decode: windows decoded together against one by one, the batch sized by free GPU memory")
def batched() -> dict[str, Any]:
    """Real models' shapes with random weights (built here: no download), every decode forced to TOKENS tokens (the
    end-of-text token suppressed), so one by one and together decode the same work. Reports the speed-up at each
    batch size; the batch model_server.gpu_memory allows in the free memory now (uncapped, up to MOST windows),
    decoded at once; and the memory a window really took (NVML's peak over each run) against its estimate for
    TOKENS tokens. Fails if a batch the rule allows does not fit."""
    import tempfile

    from gpu_prepare import BASE, LARGE_V3, TINY

    if DEVICE == "cuda":
        cublas_here()
    found, _ = nvml.detect()
    if DEVICE == "cuda" and found[0].uuid:
        os.environ["CUDA_VISIBLE_DEVICES"] = found[0].uuid
    reader = nvml.free_memory_reader()
    assert reader is not None, "NVML cannot read the free memory of the GPU CUDA uses"
    shapes = {"base": BASE, "large-v3": LARGE_V3} if DEVICE == "cuda" else {"tiny": TINY}
    results: dict[str, Any] = {}
    for name, shape in shapes.items():
        work = Path(tempfile.mkdtemp(prefix="asrpro-gpu-check-"))
        try:
            results[name] = batched_shape(shape, work / name, reader, found[0].index)
        finally:  # a large-v3 is 3 GB of disk
            shutil.rmtree(work, ignore_errors=True)
    return results


def batched_shape(shape: Any, target: Path, reader: Callable[[], int | None], index: int) -> dict[str, Any]:
    import ctranslate2
    import numpy as np
    from gpu_prepare import build_whisper

    from model_server.gpu_memory import GpuBatchLimit, read_dims

    # The rehearsal on a CPU: the tiny shape, a few windows, a batch of at most 8 allowed.
    windows, sizes, most = (32, (4, 8, 16, 32), MOST) if DEVICE == "cuda" else (4, (2, 4), 8)
    compute_type = "float16" if DEVICE == "cuda" else "int8"
    t0 = time.perf_counter()
    build_whisper(target, shape, quantization=compute_type)
    built_s = time.perf_counter() - t0
    whisper = ctranslate2.models.Whisper(str(target), device=DEVICE, compute_type=compute_type)
    eot = json.loads((target / "vocabulary.json").read_text()).index("<|endoftext|>")
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
    mel = np.random.default_rng(11).standard_normal((windows, shape.mels, 3000)).astype(np.float32)

    def decode(batch: np.ndarray) -> list[int]:
        out = whisper.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(batch)),
            [prompt] * len(batch),
            beam_size=BEAM,
            max_length=2 * TOKENS,  # CTranslate2's Whisper generates at most half of max_length (measured)
            suppress_tokens=[eot],
            suppress_blank=False,
        )
        return [len(r.sequences_ids[0]) for r in out]

    def run(batches: list[np.ndarray]) -> tuple[float, float]:
        """Seconds for the batches in turn, and the memory they took at their peak a window (MB)."""
        samples: list[int] = []
        stop = threading.Event()
        before = used_mb(index)
        poller = threading.Thread(target=peak_used_mb, args=(index, stop, samples), daemon=True)
        poller.start()
        t0 = time.perf_counter()
        try:
            lengths = [n for batch in batches for n in decode(batch)]
        finally:
            stop.set()
            poller.join()
        assert all(n == TOKENS for n in lengths), f"decodes ended early: {sorted(set(lengths))}"
        return time.perf_counter() - t0, (max(samples, default=before) - before) / max(len(b) for b in batches)

    decode(mel[:1])  # cuBLAS's start, the kernels' first call
    limit = GpuBatchLimit(read_dims(target / "model.bin"), whisper.compute_type, 1, reader)
    alone_s, alone_mb = run([mel[k : k + 1] for k in range(windows)])
    report: dict[str, Any] = {
        "built_s": round(built_s, 1),
        "windows": windows,
        "one_by_one_s": round(alone_s, 3),
        "one_by_one_measured_mb": round(alone_mb, 1),
        "estimated_mb_a_window": round(limit.window_mb(BEAM), 1),
        f"estimated_mb_a_window_at_{TOKENS}_tokens": round(limit.window_mb(BEAM, TOKENS), 1),
        "free_mb": reader(),
    }
    runs: dict[str, Any] = {}
    for size in sizes:
        if limit(size, BEAM) < size:
            runs[str(size)] = "does not fit, by the estimate"
            continue
        seconds, per_window = run([mel[k : k + size] for k in range(0, windows, size)])
        runs[str(size)] = {
            "seconds": round(seconds, 3),
            "speed_up": round(alone_s / seconds, 2),
            "measured_mb_a_window": round(per_window, 1),
        }
    report["batches"] = runs
    # The largest batch the rule allows now, decoded at once: it must fit.
    allowed = min(most, limit.fits(BEAM) or 1)
    whole = np.resize(mel, (allowed, *mel.shape[1:]))
    seconds, per_window = run([whole])
    report["allowed_batch"] = {
        "windows": allowed,
        "seconds": round(seconds, 3),
        "windows_per_s": round(allowed / seconds, 1),
        "one_by_one_windows_per_s": round(windows / alone_s, 1),
        "measured_mb_a_window": round(per_window, 1),
    }
    return report


PREPARED = Path(".")


def prepared_site(directory: Path) -> Path:
    """DIR/site with DIR's wheels unpacked (once); CannotRun when DIR was not prepared for this Python."""
    import zipfile

    manifest_file = directory / "manifest.json"
    if not manifest_file.is_file():
        raise CannotRun(
            f"{directory} is not prepared: run scripts/gpu-check.sh --prepare {directory} on a connected machine"
        )
    manifest = json.loads(manifest_file.read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest["python"] != here:
        raise CannotRun(f"{directory} was prepared for Python {manifest['python']}, this python3 is {here}")
    site = directory / "site"
    if not (site / ".unpacked").is_file():
        for wheel in sorted((directory / "wheels").glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        (site / ".unpacked").write_text("\n".join(manifest["files"]))
    return site


def offline(directory: Path) -> None:
    """Run again with DIR/site on PYTHONPATH (after what is there already: a stand-in NVML in the rehearsal)."""
    site = prepared_site(directory)
    if os.environ.get("ASRPRO_GPU_CHECK_SITE") != str(site):
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [str(site), str(REPO)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "ASRPRO_GPU_CHECK_SITE": str(site)}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-s", *sys.argv], env)


def needed(*modules: str) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CannotRun(f"{name} is not importable here ({exc})") from exc


def main() -> int:
    global DEVICE, PREPARED
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvml-only", action="store_true")
    parser.add_argument("--offline", type=Path, metavar="DIR", help="run from what --prepare wrote into DIR")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a rehearsal (stand-in NVML)")
    args = parser.parse_args()
    DEVICE = args.device
    try:
        if args.offline:
            PREPARED = args.offline.resolve()
            offline(PREPARED)
            needed("pynvml", "msgspec", "numpy", "ctranslate2")
            checks = [inventory, admission, kernels, batched]
        elif args.nvml_only:
            needed("pynvml")
            checks = [inventory, measurement]
        else:
            needed("pynvml", "nats", "msgspec", "faster_whisper", "httpx")
            checks = [inventory, measurement, local_runtime, docker_runtime, compute_types, batched]
        devices, reason = nvml.detect()
        if not devices:
            print(f"gpu-check: NVML finds no GPU ({reason}): nothing to check", file=sys.stderr)
            return EXIT_NO_GPU
    except CannotRun as exc:
        print(f"gpu-check: cannot run here: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    for run in checks:
        run()
    failed = any(r["ok"] is False for r in REPORT)
    print(json.dumps({"ok": not failed and all(r["ok"] for r in REPORT), "checks": REPORT}, indent=2))
    if failed:
        return EXIT_FAILED
    return EXIT_CANNOT_RUN if any(r["ok"] is None for r in REPORT) else 0


if __name__ == "__main__":
    sys.exit(main())
