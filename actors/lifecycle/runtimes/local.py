"""Local runtime: the model server as a child process on a free 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import signal
import socket
import sys

from actors.lifecycle.runtimes.base import LaunchSpec, Runtime, ServerHandle, build_problem
from framework import cuda_compat
from framework.processes import die_with_parent
from model_server import cuda_libs
from schemas.gpu import Allocation
from schemas.registry import ModelInfo

# ctranslate2 before 4.6.3 needs cuDNN 9 (libcudnn.so.9) for the encoder's convolutions; later builds do not.
CTRANSLATE2_NO_CUDNN = (4, 6, 3)
# The newest onnxruntime-gpu on PyPI is built for CUDA 13 (libcublas.so.13, R580 drivers); 1.23.2 is CUDA 12. Both
# it and the CPU onnxruntime (which faster-whisper pulls in) write the same package directory: one must go.
ONNXRUNTIME_GPU_RECIPE = (
    "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu[cuda,cudnn]==1.23.2' "
    "(a CUDA 12 build; see the GPU page of the manual)"
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"exited with code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"exited with code {code}"
    return f"exited with code {code}"


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self) -> None:
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def gpu_problem(self, model: ModelInfo, allocation: Allocation) -> str:
        if model.engine == "onnx-asr":
            gpu_build = _version("onnxruntime-gpu")
            if not gpu_build:
                return f"the CPU build of onnxruntime is installed here: {ONNXRUNTIME_GPU_RECIPE}"
            build = await asyncio.to_thread(cuda_compat.installed_onnxruntime)
            if build is None:  # installed, then overwritten by the CPU build's files
                return f"onnxruntime's files here are the CPU build's, not onnxruntime-gpu's: {ONNXRUNTIME_GPU_RECIPE}"
            return build_problem(build, allocation, f"onnxruntime-gpu {gpu_build}")
        ctranslate2 = _version("ctranslate2")
        if ctranslate2 and _release(ctranslate2) < CTRANSLATE2_NO_CUDNN:
            return f"ctranslate2 {ctranslate2} needs cuDNN 9 on a GPU: pip install 'ctranslate2>=4.6.3'"
        missing = [soname for soname, where in (await asyncio.to_thread(cuda_libs.locate)).items() if not where]
        if missing:
            return f"CUDA libraries not found on this host: {', '.join(missing)} ({cuda_libs.INSTALL_HINT})"
        build = await asyncio.to_thread(cuda_compat.installed_ctranslate2)
        return build_problem(build, allocation, f"ctranslate2 {ctranslate2}")

    async def launch(self, spec: LaunchSpec) -> ServerHandle:
        port = free_port()
        env = dict(os.environ, HF_HUB_OFFLINE="1") | spec.server_env()
        compiles = False
        if spec.device_kind == "cuda":
            # NVML numbers devices by PCI bus; CUDA, unless told, fastest first: make them agree.
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible  # the GPU's UUID
            # CUDA's JIT cache (~/.nv/ComputeCache) keeps compiled PTX across starts; room for Whisper's kernels.
            env.setdefault("CUDA_CACHE_MAXSIZE", str(4 * 2**30))
            if spec.model.engine == "faster-whisper":
                build = await asyncio.to_thread(cuda_compat.installed_ctranslate2)
                compiles = cuda_compat.needs_jit(build, spec.capability)
        model = spec.model
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "model_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-id",
            model.id,
            "--engine",
            model.engine,
            "--weights",
            model.weights,
            "--device",
            spec.device_kind,
            "--compute-type",
            spec.compute_type,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        handle = ServerHandle(model=model.id, url=f"http://127.0.0.1:{port}", runtime=self.name, pid=proc.pid)
        handle.compiles_kernels = compiles
        self.processes[proc.pid] = proc
        watcher = asyncio.ensure_future(self._watch(proc, handle))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return handle

    async def _watch(self, proc: asyncio.subprocess.Process, handle: ServerHandle) -> None:
        code = await proc.wait()
        self.processes.pop(proc.pid, None)
        if not handle.exited.done():
            handle.exit_code = code
            handle.exited.set_result(exit_reason(code))

    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        proc = self.processes.get(handle.pid or -1)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
            proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) server must wake up to see the SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def close(self) -> None:
        for proc in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
