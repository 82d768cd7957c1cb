"""The interface every runtime (local processes, Docker containers) implements."""

from __future__ import annotations

import abc
import asyncio
import time
from dataclasses import dataclass, field

from framework import cuda_compat
from framework.installed_weights import check
from schemas.gpu import Allocation
from schemas.registry import Installed, ModelInfo


@dataclass
class LaunchSpec:
    model: ModelInfo
    device: str  # "cpu" or "cuda:<index>"
    visible: str = ""  # what selects the GPU for CUDA: its UUID (GPU-..., MIG-...); empty: the index
    driver_cuda: str = ""  # the CUDA version the host's driver supports: names the kernel cache
    capability: str = ""  # the GPU's compute capability: whether its kernels must be compiled from PTX
    cpu_cores: int = 0  # on the CPU: the cores this server may use beside the others (0: all)
    cpu_threads: int = 0  # on the CPU: threads per worker (lifecycle.cpu_threads; 0: from the cores)

    def server_env(self) -> dict[str, str]:
        """What the model server is told beside its model and device: the cores (CPU_CORES, CPU_THREADS) on the
        CPU, and how it batches (MAX_BATCH, BATCH_WINDOW_MS)."""
        batching = {"MAX_BATCH": str(self.model.max_batch), "BATCH_WINDOW_MS": str(self.model.batch_window_ms)}
        if self.device_kind != "cpu":
            return batching
        return batching | {"CPU_CORES": str(self.cpu_cores), "CPU_THREADS": str(self.cpu_threads)}

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def device_index(self) -> str:
        return self.device.partition(":")[2] or "0"

    @property
    def cuda_visible(self) -> str:
        """The value of CUDA_VISIBLE_DEVICES (and of a Docker device request) for this server."""
        return self.visible or self.device_index

    @property
    def compute_type(self) -> str:
        # CTranslate2 on CPU has no float16 kernels: int8 is both valid and fastest there.
        return self.model.compute_type if self.device_kind == "cuda" else "int8"


@dataclass
class ServerHandle:
    model: str
    url: str
    runtime: str
    pid: int | None = None
    container_id: str | None = None
    started_at: float = field(default_factory=time.time)
    exit_code: int | None = None
    note: str = ""  # added to failure messages, e.g. where mounted weights come from on the host
    # The engine has no compiled kernels for this GPU: the driver compiles its PTX at the first start, for minutes
    # until the kernel cache holds them (lifecycle.first_gpu_startup_timeout applies).
    compiles_kernels: bool = False
    # Resolves with a reason ("exited with code -9 (SIGKILL)") when the server exits by itself or is stopped.
    exited: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GpuRefused(RuntimeError):
    """The runtime cannot give a server a GPU at all (Docker without the NVIDIA Container Toolkit): the GPU's fault,
    never the model's."""


class Runtime(abc.ABC):
    name: str
    startup_timeout: float | None = None  # None: lifecycle.startup_timeout applies

    @abc.abstractmethod
    async def launch(self, spec: LaunchSpec) -> ServerHandle:
        """Start a model server; return once it runs (not necessarily healthy yet)."""

    @abc.abstractmethod
    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        """Stop the server and wait until it is gone."""

    def installed(self, model: ModelInfo) -> Installed:
        """Whether the model's weights are where this runtime's servers will load them from (blocking: call it in a
        thread). Here: the weights directory or package on this host."""
        return check(model.id, model.weights, model.engine)

    async def gpu_problem(self, model: ModelInfo, allocation: Allocation) -> str:
        """'' when a server of `model` placed on this GPU can use it here, else why not and what fixes it."""
        return ""

    async def adopt(self) -> list[ServerHandle]:
        """Servers of this deployment already running (after an actor restart)."""
        return []

    async def close(self) -> None:  # noqa: B027 - optional hook, most runtimes hold nothing
        """Release runtime resources (clients, sockets)."""


def build_problem(build: cuda_compat.CudaBuild | None, allocation: Allocation, what: str) -> str:
    """Whether an engine's CUDA build (None: unknown) runs on the allocated GPU with this host's driver."""
    if build is None:
        return ""
    return cuda_compat.problem(build, allocation.capability, allocation.driver_cuda, what)
