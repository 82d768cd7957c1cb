"""Runtimes that run model servers: `local` (child processes) and `docker` (containers)."""

from __future__ import annotations

from actors.lifecycle.runtimes.base import GpuRefused, LaunchSpec, Runtime, ServerHandle
from actors.lifecycle.runtimes.local import LocalRuntime
from framework.config import Config

__all__ = ["GpuRefused", "LaunchSpec", "LocalRuntime", "Runtime", "ServerHandle", "choose_runtime"]


def choose_runtime(config: Config) -> tuple[Runtime, str]:
    """The runtime to use and why (logged at start, shown by /health).

    `docker` is used even when the daemon does not answer: requests then fail with that reason
    instead of silently running models somewhere the operator did not ask for.
    """
    from actors.lifecycle.runtimes.docker import DockerRuntime, daemon_problem, image_problem

    wanted = config.lifecycle.runtime
    if wanted == "local":
        return LocalRuntime(), "lifecycle.runtime = local"
    if wanted == "docker":
        return DockerRuntime(config), "lifecycle.runtime = docker"
    problem = daemon_problem()
    if not problem:
        # A daemon without the images would only answer 503s: the embedded default must work out of the box.
        default = config.registry.default_model
        model = config.models.get(default)
        image = (model.image if model else "") or f"{config.docker.image_prefix}/{default}:{config.docker.image_tag}"
        problem = image_problem(image)
    if problem:
        return LocalRuntime(), f"lifecycle.runtime = auto and {problem}: using local processes"
    return DockerRuntime(config), "lifecycle.runtime = auto, a Docker daemon answers and the images are built"
