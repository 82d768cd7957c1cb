"""Runtimes that run model servers: `local` (child processes) and `docker` (containers)."""

from __future__ import annotations

from actors.config import Config
from actors.runtimes.base import LaunchSpec, Runtime, ServerHandle
from actors.runtimes.local import LocalRuntime

__all__ = ["LaunchSpec", "LocalRuntime", "Runtime", "ServerHandle", "choose_runtime"]


def choose_runtime(config: Config) -> tuple[Runtime, str]:
    """The runtime to use and why (logged at start, shown by /health)."""
    wanted = config.lifecycle.runtime
    if wanted == "docker":
        raise RuntimeError("lifecycle.runtime = docker: the docker runtime is not available in this version")
    if wanted == "local":
        return LocalRuntime(), "lifecycle.runtime = local"
    return LocalRuntime(), "lifecycle.runtime = auto: docker runtime not available in this version, using local"
