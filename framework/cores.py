"""The CPU cores a process may really use, and how a CTranslate2 model spreads over them.

`os.cpu_count()` is the host's count: inside a container limited to two CPUs (`docker run --cpus 2`, a Kubernetes
limit) it still says 64, and CTranslate2 left to choose starts threads by the host's cores in every worker."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cores:
    count: int  # whole cores this process may use
    source: str  # what bounded it: "affinity", "cgroup cpu.max", "cgroup v1 cfs quota"


def usable_cores(root: Path = CGROUP) -> Cores:
    """The cores the scheduler lets this process run on (its affinity mask), bounded by its cgroup's CPU quota."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    if quota is not None and quota[0] < affinity:
        return Cores(max(1, math.floor(quota[0])), quota[1])
    return Cores(affinity, "affinity")


def _cgroup_quota(root: Path) -> tuple[float, str] | None:
    """The CPU quota in cores of this process's cgroup (v2 `cpu.max`, else v1's CFS quota); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period), "cgroup cpu.max"
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return (quota_us / period_us, "cgroup v1 cfs quota") if quota_us > 0 and period_us > 0 else None


def server_plan(concurrency: int, share_of: int = 0, threads: int = 0) -> tuple[int, str, ThreadPlan]:
    """(cores, where that count comes from, the plan) for a model server given `share_of` the node's cores by the
    lifecycle actor (0: all it may use), bounded by what it may use itself (a container sees its own quota)."""
    usable = usable_cores()
    if share_of <= 0:
        return usable.count, usable.source, thread_plan(usable.count, concurrency, threads)
    cores = min(usable.count, share_of)
    return cores, f"{usable.source}, share {share_of}", thread_plan(cores, concurrency, threads)


def share(cores: int, servers: int) -> int:
    """One model server's share of the cores when `servers` CPU model servers run on them (at least one core)."""
    return max(1, cores // max(1, servers))


@dataclass(frozen=True)
class ThreadPlan:
    workers: int  # CTranslate2 replicas: transcriptions decoded at once
    threads: int  # intra-op threads of each

    def __str__(self) -> str:
        return f"{self.workers} worker{'s' * (self.workers != 1)} x {self.threads} thread{'s' * (self.threads != 1)}"


def thread_plan(cores: int, concurrency: int, threads: int = 0) -> ThreadPlan:
    """Workers x threads for `cores`: as many workers as concurrent transcriptions (up to the cores), each with up
    to all the cores as threads, the total at most twice the cores. Measured on two cores (whisper-tiny.en, jfk.flac;
    docs/throughput.md): 2 workers x 2 threads served 8 clients at 2.70 requests/s and a lone request in 0.585 s;
    2 x 1 (no oversubscription) 2.57/s and 0.645 s; 1 x 2 1.76/s and 0.552 s — a lone request wants every core,
    a full server its workers, and twice the cores in threads cost nothing. What hurts is CTranslate2's own
    default in a container: threads for every core of the host. `threads` > 0 is an operator's override."""
    workers = max(1, min(concurrency, cores))
    return ThreadPlan(workers, threads if threads > 0 else max(1, min(cores, 2 * cores // workers)))
