"""Stand-ins for the fast tier: a runtime that launches nothing, a model server answered by httpx.MockTransport,
and configuration built from the repo's file with overrides."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec

from actors.lifecycle.runtimes import GpuRefused, LaunchSpec, Runtime, ServerHandle
from framework.config import Config, load_config
from framework.model_server import ModelServerClient
from schemas.gpu import Allocation
from schemas.model_server import Frame, Health, HealthStatus, OpenedFrame, ResultFrame, SegmentFrame
from schemas.registry import Installed, ModelInfo
from schemas.transcribe import Segment, TranscriptionResult

REPO = Path(__file__).resolve().parents[2]


def config(**env: str) -> Config:
    """The repo's configuration with ASRPRO_* overrides as keyword arguments (values read as TOML)."""
    return load_config(REPO / "asrpro.toml", environ={"ASRPRO_LIFECYCLE__RUNTIME": "local", **env})


class FakeRuntime(Runtime):
    """Launches nothing: a handle per launch, at http://<model>.fake; `crash()` ends one as a crash would."""

    name = "fake"

    def __init__(self) -> None:
        self.launched: list[LaunchSpec] = []
        self.stopped: list[str] = []
        self.running: dict[str, ServerHandle] = {}
        self.fail_launch: str = ""  # a message: launch raises it
        self.adoptable: list[ServerHandle] = []  # what adopt() finds running
        self.absent: set[str] = set()  # models whose weights are not here
        self.gpu_trouble = ""  # what gpu_problem() says (no CUDA image, no toolkit, ...)
        self.refuse_gpu = ""  # a message: a launch on a GPU raises GpuRefused with it (Docker without the toolkit)
        self._pids = itertools.count(1000)

    async def gpu_problem(self, model: ModelInfo, allocation: Allocation) -> str:
        return self.gpu_trouble

    async def launch(self, spec: LaunchSpec) -> ServerHandle:
        if self.fail_launch:
            raise RuntimeError(self.fail_launch)
        if self.refuse_gpu and spec.device_kind == "cuda":
            raise GpuRefused(self.refuse_gpu)
        self.launched.append(spec)
        handle = ServerHandle(
            model=spec.model.id, url=f"http://{spec.model.id}.fake", runtime=self.name, pid=next(self._pids)
        )
        self.running[spec.model.id] = handle
        return handle

    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        self.stopped.append(handle.model)
        self.running.pop(handle.model, None)
        if not handle.exited.done():
            handle.exited.set_result("stopped")

    def installed(self, model: ModelInfo) -> Installed:
        if model.id in self.absent:
            return Installed(model=model.id, installed=False, where=f"/weights/{model.id}", missing="model.bin")
        return Installed(model=model.id, installed=True, where=f"/weights/{model.id}")

    async def adopt(self) -> list[ServerHandle]:
        for handle in self.adoptable:
            self.running[handle.model] = handle
        return list(self.adoptable)

    def crash(self, model: str, reason: str = "exited with code -9 (SIGKILL)") -> None:
        handle = self.running.pop(model)
        handle.exit_code = -9
        handle.exited.set_result(reason)


class FakeModelServer:
    """Every fake server's HTTP side: /health says `health[model]` (ok by default), /transcribe answers a
    result naming the model; `requests` records what was sent."""

    def __init__(self, runtime: FakeRuntime | None = None) -> None:
        self.runtime = runtime  # its launches say where a server runs, unless `device` says otherwise
        self.health: dict[str, HealthStatus] = {}
        self.device: dict[str, str] = {}  # what /health says the engine runs on (default: where it was launched)
        self.gpu_failure: dict[str, str] = {}  # a load the GPU could not run: /health's error, with cause gpu
        self.requests: list[httpx.Request] = []
        self.respond: Callable[[httpx.Request], httpx.Response] | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        model = request.url.host.removesuffix(".fake")
        if self.respond is not None:
            return self.respond(request)
        if request.url.path == "/health":
            status = self.health.get(model, "ok")
            gpu_failure = self.gpu_failure.get(model)
            launched = [s.device_kind for s in self.runtime.launched if s.model.id == model] if self.runtime else []
            device = self.device.get(model) or (launched[-1] if launched else "cpu")
            on_gpu = device == "cuda"
            body = Health(
                status="error" if gpu_failure else status,
                model=model,
                engine="fake",
                device=device,
                compute_type="float16" if on_gpu else "int8",
                error=gpu_failure or (None if status == "ok" else f"{model} is {status}"),
                cause="gpu" if gpu_failure else None,
            )
            status = body.status
            return httpx.Response(200 if status == "ok" else 503, content=msgspec.json.encode(body))
        segments = [Segment(id=i, start=float(i), end=float(i + 1), text=f" part {i} by {model}") for i in range(3)]
        result = TranscriptionResult(
            text="".join(seg.text for seg in segments).strip(), language="en", duration=3.0, segments=segments
        )
        if request.url.params.get("stream") != "true":
            return httpx.Response(200, content=msgspec.json.encode(result))
        opened: list[Frame] = [OpenedFrame(duration=3.0)]  # as the real server: the audio opened, then segments
        frames = opened + [SegmentFrame(segment=seg, duration=3.0) for seg in segments] + [ResultFrame(result=result)]
        return httpx.Response(200, content=b"".join(msgspec.json.encode(f) + b"\n" for f in frames))

    def client(self) -> ModelServerClient:
        return ModelServerClient(timeout=5.0, transport=httpx.MockTransport(self.handler))


def error_response(code: int, message: str) -> httpx.Response:
    return httpx.Response(code, content=json.dumps({"error": {"code": str(code), "message": message}}).encode())


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Until `predicate()` holds (background tasks of an actor run between checks)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
