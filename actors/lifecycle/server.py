"""What the lifecycle actor knows of each model server it runs: one `Server` per model, in a `Fleet`."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from actors.lifecycle.placement import expires_at
from actors.lifecycle.runtimes import ServerHandle
from schemas.gpu import Allocation
from schemas.lifecycle import ServerState, ServerStatus
from schemas.registry import ModelInfo


@dataclass
class Server:
    model: ModelInfo
    handle: ServerHandle
    allocation: Allocation
    state: ServerState = "starting"
    last_activity: float = field(default_factory=time.time)
    inflight: dict[str, float] = field(default_factory=dict)  # request id -> when it began
    keep_alive: float | None = None  # the last request's keep_alive, seconds
    stopping: bool = False
    unhealthy: str = ""  # what the last failed health check said ('' when healthy)
    # Where the engine says it runs ("cuda:0", "cpu": its own /health, not the allocation) and with which compute
    # type; '' until it is healthy.
    ran_on: str = ""
    compute_type: str = ""

    @property
    def model_id(self) -> str:
        return self.model.id

    def begin(self, request_id: str, keep_alive: float | None) -> None:
        """A request for this server: activity, held busy until it is reported done, its keep_alive from now on."""
        self.last_activity = time.time()
        if request_id:
            self.inflight[request_id] = self.last_activity
        if keep_alive is not None:
            self.keep_alive = keep_alive

    def status(self, runtime: str, idle_timeout: float) -> ServerStatus:
        return ServerStatus(
            model=self.model_id,
            state=self.state,
            runtime=runtime,
            url=self.handle.url,
            pid=self.handle.pid,
            container_id=self.handle.container_id,
            device=self.ran_on or self.allocation.device,
            compute_type=self.compute_type,
            memory_mb=self.allocation.memory_mb,
            started_at=self.handle.started_at,
            last_activity=self.last_activity,
            expires_at=expires_at(self.last_activity, bool(self.inflight), idle_timeout),
            inflight=len(self.inflight),
            keep_alive=idle_timeout,
            rss_mb=rss_mb(self.handle.pid),
        )


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process on this host (a container's first process included), None when unknown."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class Fleet:
    """The running servers, a lock per model (held while one is started, checked or stopped), and a signal
    that capacity was freed (for requests waiting for GPU memory or a container slot)."""

    def __init__(self) -> None:
        self.servers: dict[str, Server] = {}
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.capacity_freed = asyncio.Event()

    def locked(self) -> list[str]:
        return [model for model, lock in self.locks.items() if lock.locked()]

    def remove(self, server: Server) -> None:
        if self.servers.get(server.model_id) is server:
            del self.servers[server.model_id]
        self.capacity_freed.set()
