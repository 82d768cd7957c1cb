"""Docker runtime: one hardened container per model, published on 127.0.0.1 only, found again by labels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.models.containers import Container
from docker.types import DeviceRequest

from actors.lifecycle.runtimes.base import GpuRefused, LaunchSpec, Runtime, ServerHandle, build_problem
from framework import cuda_compat
from framework.config import Config, node_name
from framework.installed_weights import PACKAGE_PREFIX
from schemas.gpu import Allocation
from schemas.registry import Installed, ModelInfo

log = logging.getLogger("asrpro.runtime.docker")

MODEL_LABEL = "asrpro.model"
# The node whose lifecycle actor started it: nodes sharing one Docker daemon adopt only their own.
NODE_LABEL = "asrpro.node"
DEPLOYMENT_LABEL = "asrpro.deployment"
CONTAINER_PORT = "9000/tcp"
MODELS_MOUNT = "/models"
CUDA_CACHE_MOUNT = "/cuda-cache"  # CUDA_CACHE_PATH inside CUDA containers: a volume per image and driver


class DockerUnavailable(RuntimeError):
    pass


def daemon_problem(timeout: float = 3.0) -> str:
    """'' when a Docker daemon answers, else why not."""
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"Docker daemon unreachable: {exc}"
    return ""


def image_problem(image: str, timeout: float = 3.0) -> str:
    """'' when `image` exists in the local Docker Engine, else why it cannot be used."""
    try:
        client = docker.from_env(timeout=timeout)
        try:
            client.images.get(image)
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return f"image {image} is not built (asrpro images build)"
    except Exception as exc:
        return f"Docker daemon unreachable: {exc}"
    return ""


def container_name(deployment: str, model_id: str, node: str = "") -> str:
    """One name per model per node: a leftover of ours is found (and replaced) by it, another node's never is."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", "-".join(filter(None, ["asrpro", deployment, node, model_id])))


class DockerRuntime(Runtime):
    name = "docker"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cfg = config.docker
        self.deployment = self.cfg.deployment
        self.node = node_name(config)
        # Docker SDK calls block: they get threads of their own so the event loop never waits on the daemon.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker")
        self._client: docker.DockerClient | None = None
        self._handles: dict[str, ServerHandle] = {}  # container id -> handle
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: threading.Thread | None = None
        self._closed = False
        # Set when dockerd could not give a container a GPU ("could not select device driver"): no NVIDIA
        # Container Toolkit. GPU placements then fall back or fail with it, instead of failing each start.
        self._gpu_driver_problem = ""
        # A cold load of a large model takes as long in a container as outside: the longer of the two budgets.
        self.startup_timeout = max(self.cfg.container_timeout, config.lifecycle.startup_timeout)
        self.pull_retries = config.recovery.pull_retries
        # The daemon breaker: after a failed connection, fail fast until the next reconnection attempt.
        self._down_until = 0.0
        self._down_for = 0.0
        self._down_reason = ""

    def installed(self, model: ModelInfo) -> Installed:
        # A pip-installed model package lives in the image (a missing image is its own, clearer error);
        # a weights directory is mounted from this host.
        if model.weights.startswith(PACKAGE_PREFIX):
            return Installed(model=model.id, installed=True, where=f"image {model.image}")
        return super().installed(model)

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except requests.exceptions.ConnectionError as exc:
            self._client = None  # the daemon went away under us: reconnect on the next call
            raise DockerUnavailable(f"Docker daemon unreachable: {exc}") from exc

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            now = time.monotonic()
            if now < self._down_until:
                raise DockerUnavailable(
                    f"{self._down_reason} (next reconnection attempt in {self._down_until - now:.0f} s)"
                )
            try:
                client = docker.from_env(timeout=self.cfg.api_timeout)
                client.ping()
            except Exception as exc:
                self._down_for = min(max(self._down_for * 2, 1.0), 30.0)
                self._down_until = now + self._down_for
                self._down_reason = f"Docker daemon unreachable: {exc}"
                raise DockerUnavailable(self._down_reason) from exc
            if self._down_for:
                log.info("Docker daemon reachable again")
            self._down_for = 0.0
            self._client = client
        return self._client

    # -- launching -------------------------------------------------------------
    async def launch(self, spec: LaunchSpec) -> ServerHandle:
        self._loop = asyncio.get_running_loop()
        try:
            container, compiles = await self._run(self._launch_sync, spec)
        except docker.errors.APIError as exc:
            if spec.device_kind == "cuda" and "could not select device driver" in str(exc):
                self._gpu_driver_problem = (
                    "Docker cannot give a container a GPU (no NVIDIA Container Toolkit: install it and restart "
                    "dockerd, then the lifecycle actor)"
                )
                # Refused at start, after it was created: the container must not stay behind.
                await self._run(self._remove_named, container_name(self.deployment, spec.model.id, self.node))
                raise GpuRefused(f"{self._gpu_driver_problem}: {exc}") from exc
            raise
        try:
            handle: ServerHandle = await self._run(self._handle_for, container)
        except Exception:
            await self._run(self._remove, container.id, 1.0)
            raise
        self._ensure_watcher()
        handle.compiles_kernels = compiles
        return handle

    def _remove_named(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._docker().containers.get(name).remove(force=True)

    def _ensure_image(self, client: docker.DockerClient, image: str) -> None:
        policy = self.cfg.pull_policy
        present = True
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            present = False
        if present and policy != "always":
            return
        if not present and policy == "never":
            raise RuntimeError(
                f"image {image} not found locally and docker.pull_policy = never; build it with `asrpro images build`"
            )
        try:
            self._pull(client, image)
        except docker.errors.APIError as exc:
            if present:  # pull_policy = always with no registry: the local image still serves
                log.warning("pull of %s failed (%s); using the local image", image, exc)
                return
            reason = str(exc).splitlines()[0]
            raise RuntimeError(
                f"image {image} not found locally and the pull failed ({reason}); build it with `asrpro images build`"
            ) from exc

    def _pull(self, client: docker.DockerClient, image: str) -> None:
        """Pull, retrying transient registry errors with back-off (recovery.pull_retries)."""
        for attempt, delay in enumerate([0.0, *self.pull_retries]):
            time.sleep(delay)
            try:
                client.images.pull(image)
                return
            except docker.errors.APIError as exc:
                permanent = isinstance(exc, docker.errors.NotFound) or "no such host" in str(exc)
                if permanent or attempt == len(self.pull_retries):
                    raise
                log.warning("pull of %s failed (%s): retrying in %.0f s", image, exc, self.pull_retries[attempt])

    async def gpu_problem(self, model: ModelInfo, allocation: Allocation) -> str:
        if self._gpu_driver_problem:
            return self._gpu_driver_problem
        try:
            await self._run(self._ensure_image, self._docker(), model.cuda_image)
            labels = (await self._run(self._docker().images.get, model.cuda_image)).labels or {}
        except DockerUnavailable:
            raise
        except Exception as exc:
            return f"the CUDA image {model.cuda_image} is not available ({exc}; asrpro images build {model.id} --cuda)"
        # Written by `asrpro images build --cuda` from the wheels it installs; an older image has none: unchecked.
        return build_problem(cuda_compat.CudaBuild.from_labels(labels), allocation, f"the image {model.cuda_image}")

    @staticmethod
    def image_for(spec: LaunchSpec) -> str:
        return spec.model.cuda_image if spec.device_kind == "cuda" and spec.model.cuda_image else spec.model.image

    def _kernel_cache(self, client: docker.DockerClient, image: str, spec: LaunchSpec) -> tuple[str, bool]:
        """The volume that keeps CUDA's JIT kernel cache for this image, GPU architecture and driver across starts
        (the container's HOME is a tmpfs), and whether the image's engine has no compiled kernels for this GPU
        (its labels say): then a start without the cache compiles them, for minutes on Hopper."""
        found = client.images.get(image)
        image_id = found.id.removeprefix("sha256:")[:12]
        arch = spec.capability.replace(".", "") or "unknown"
        name = f"asrpro-cuda-cache-{image_id}-sm{arch}-driver{spec.driver_cuda or 'unknown'}"
        try:
            client.volumes.get(name)
        except docker.errors.NotFound:
            client.volumes.create(name, labels={DEPLOYMENT_LABEL: self.deployment})
        build = cuda_compat.CudaBuild.from_labels(found.labels or {})
        return name, cuda_compat.needs_jit(build, spec.capability)

    def _launch_sync(self, spec: LaunchSpec) -> tuple[Container, bool]:
        client = self._docker()
        model = spec.model
        image = self.image_for(spec)
        self._ensure_image(client, image)
        name = container_name(self.deployment, model.id, self.node)
        with contextlib.suppress(docker.errors.NotFound):
            stale = client.containers.get(name)
            log.info("removing stale container %s (%s)", name, stale.status)
            stale.remove(force=True)
        environment = {
            "MODEL_ID": model.id,
            "ENGINE": model.engine,
            "DEVICE": spec.device_kind,
            "COMPUTE_TYPE": spec.compute_type,
            "HOST": "0.0.0.0",  # inside the container's own network namespace; published on 127.0.0.1 only
            "PORT": CONTAINER_PORT.split("/")[0],
            "HF_HUB_OFFLINE": "1",
        } | spec.server_env()
        volumes = {}
        if model.weights.startswith("package:"):
            environment["WEIGHTS"] = model.weights
        else:
            host_dir = Path(model.weights).expanduser().resolve()
            if not host_dir.is_dir():
                raise RuntimeError(
                    f"weights not found: host directory {host_dir} does not exist (models.{model.id}.weights)"
                )
            target = f"{MODELS_MOUNT}/{model.id}"
            volumes[str(host_dir)] = {"bind": target, "mode": "ro"}
            environment["WEIGHTS"] = target
        device_requests = None
        compiles = False
        if spec.device_kind == "cuda":
            # The GPU's UUID: NVML's indices are not guaranteed stable.
            device_requests = [DeviceRequest(device_ids=[spec.cuda_visible], capabilities=[["gpu"]])]
            cache, compiles = self._kernel_cache(client, image, spec)
            volumes[cache] = {"bind": CUDA_CACHE_MOUNT, "mode": "rw"}
            environment |= {"CUDA_CACHE_PATH": CUDA_CACHE_MOUNT, "CUDA_CACHE_MAXSIZE": str(4 * 2**30)}
        network: dict[str, Any] = {"ports": {CONTAINER_PORT: ("127.0.0.1", None)}}
        if self.cfg.network:
            network = {"network": self.cfg.network}
        container = client.containers.run(
            image,
            detach=True,
            name=name,
            labels={MODEL_LABEL: model.id, DEPLOYMENT_LABEL: self.deployment, NODE_LABEL: self.node},
            environment=environment,
            **network,
            volumes=volumes,
            device_requests=device_requests,
            user="10001:10001",
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=512m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=self.cfg.memory_limit,
            pids_limit=self.cfg.pids_limit,
        )
        return container, compiles

    def _url(self, container: Container) -> str:
        if self.cfg.network:
            return f"http://{container.name}:{CONTAINER_PORT.split('/')[0]}"
        # Docker assigns the host port as the container starts: wait for it to appear.
        deadline = time.monotonic() + 10
        while True:
            container.reload()
            bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(CONTAINER_PORT)
            if bindings:
                break
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                raise RuntimeError(f"container {container.name} has no published port (status {container.status})")
            time.sleep(0.05)
        return f"http://127.0.0.1:{bindings[0]['HostPort']}"

    def _handle_for(self, container: Container) -> ServerHandle:
        url = self._url(container)
        assert self._loop is not None
        mounts = [f"{m['Source']} -> {m['Destination']}" for m in container.attrs.get("Mounts", [])]
        handle = ServerHandle(
            note=f"weights mounted from the host: {', '.join(mounts)}" if mounts else "",
            model=container.labels[MODEL_LABEL],
            url=url,
            runtime=self.name,
            container_id=container.id,
            # The model server is the container's first process; NVML reports host pids, so this is the one the
            # gpu actor measures (asr.gpu.bind).
            pid=int(container.attrs.get("State", {}).get("Pid") or 0) or None,
            exited=self._loop.create_future(),
        )
        self._handles[container.id] = handle
        return handle

    # -- watching --------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch_events, name="docker-events", daemon=True)
            self._watcher.start()

    def _watch_events(self) -> None:
        """One thread follows the daemon's `die` events for this deployment's containers."""
        filters = {"type": "container", "event": "die", "label": f"{DEPLOYMENT_LABEL}={self.deployment}"}
        while not self._closed:
            try:
                for event in self._docker().events(decode=True, filters=filters):
                    self._on_die(event)
                    if self._closed:
                        return
            except Exception as exc:
                if self._closed:
                    return
                log.warning("docker event stream broke (%s): following again", exc)
                self._client = None
                time.sleep(1.0)

    def _on_die(self, event: dict[str, Any]) -> None:
        handle = self._handles.pop(event.get("id", ""), None)
        if handle is None:
            return
        attributes = event.get("Actor", {}).get("Attributes", {})
        code = int(attributes.get("exitCode", -1))
        reason = f"container exited with code {code}"
        with contextlib.suppress(Exception):
            state = self._docker().api.inspect_container(handle.container_id)["State"]
            if state.get("OOMKilled"):
                reason += " (OOM-killed: raise docker.memory_limit)"
        if code == 137 and "OOM" not in reason:
            reason += " (SIGKILL)"
        self._resolve(handle, code, reason)

    def _resolve(self, handle: ServerHandle, code: int | None, reason: str) -> None:
        def set_result() -> None:
            if not handle.exited.done():
                handle.exit_code = code
                handle.exited.set_result(reason)

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(set_result)

    # -- stopping and adopting -------------------------------------------------
    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        self._handles.pop(handle.container_id or "", None)
        await self._run(self._remove, handle.container_id, timeout)
        self._resolve(handle, 0, "stopped")

    def _remove(self, container_id: str | None, timeout: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            container = self._docker().containers.get(container_id)
            with contextlib.suppress(docker.errors.APIError):
                container.stop(timeout=int(timeout))
            container.remove(force=True)

    async def adopt(self) -> list[ServerHandle]:
        self._loop = asyncio.get_running_loop()
        try:
            containers = await self._run(
                lambda: self._docker().containers.list(
                    all=True, filters={"label": f"{DEPLOYMENT_LABEL}={self.deployment}"}
                )
            )
        except DockerUnavailable as exc:
            log.warning("cannot look for running containers: %s", exc)
            return []
        handles = []
        for container in containers:
            if container.labels.get(NODE_LABEL, self.node) != self.node:
                continue  # another node's, on a Docker daemon we share
            if container.status != "running":
                await self._run(self._remove, container.id, 1.0)
                continue
            try:
                handles.append(await self._run(self._handle_for, container))
            except RuntimeError as exc:
                log.warning("not adopting %s: %s", container.name, exc)
        if handles:
            self._ensure_watcher()
        return handles

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
