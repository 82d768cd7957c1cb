"""What the gateway itself measures, for /metrics: every HTTP answer's latency by route and status (5xx
included), this process's CPU and memory, the build, and what the model servers on this host use (read from
/proc by their pids: a local process's, or a container's host pid)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import nats.errors
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GATEWAY_METRICS
from schemas import subjects
from schemas.metrics import LATENCY_BUCKETS

ProcessCollector(namespace="asrpro_gateway", registry=GATEWAY_METRICS)
RESPONSES = Histogram(
    "asrpro_gateway_request_duration_seconds",
    "HTTP requests at the gateway, end to end (a stream until its last byte), by route template and status",
    ["route", "method", "code"],
    buckets=LATENCY_BUCKETS,
    registry=GATEWAY_METRICS,
)
BUILD = Gauge("asrpro_build_info", "The running build (always 1)", ["version", "python"], registry=GATEWAY_METRICS)
try:
    BUILD.labels(metadata.version("asrpro"), platform.python_version()).set(1)
except metadata.PackageNotFoundError:  # run from a tree that was never installed
    BUILD.labels("unknown", platform.python_version()).set(1)

DISCOVERY_S = 0.3
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class HttpMetrics:
    """ASGI middleware: times each HTTP answer. The route is the matched template (`/v1/models/{model_id:path}`),
    never the raw path: a client must not make series by asking for made-up paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [500]

        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            RESPONSES.labels(template, scope.get("method", ""), str(status[0])).observe(time.monotonic() - started)


def _usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process on this host, from /proc; None when it is not here (any more)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS, pages * _PAGE  # utime + stime; resident pages


def server_processes(registry: CollectorRegistry, pids: dict[str, int]) -> None:
    """CPU seconds and resident memory of the model servers running here (model -> pid), from /proc."""
    cpu = Counter(
        "asrpro_model_server_cpu_seconds", "CPU time of the model server's process", ["model"], registry=registry
    )
    rss = Gauge(
        "asrpro_model_server_resident_memory_bytes", "Resident memory of the model server", ["model"], registry=registry
    )
    for model, pid in pids.items():
        if (used := _usage(pid)) is not None:
            cpu.labels(model).inc(used[0])
            rss.labels(model).set(used[1])


async def actor_processes(registry: CollectorRegistry, nc: Client, node: str) -> None:
    """CPU seconds and resident memory of the actors on this gateway's host: each actor's nats.micro service says
    its node and pid in its metadata ($SRV.INFO, everyone answering within DISCOVERY_S)."""
    cpu = Counter(
        "asrpro_actor_cpu_seconds", "CPU time of an actor's process", ["actor", "instance"], registry=registry
    )
    rss = Gauge(
        "asrpro_actor_resident_memory_bytes", "Resident memory of an actor", ["actor", "instance"], registry=registry
    )
    inbox = nc.new_inbox()
    answers = await nc.subscribe(inbox)
    try:
        await nc.publish(subjects.SERVICE_INFO, b"", reply=inbox)
        deadline = time.monotonic() + DISCOVERY_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await answers.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            with contextlib.suppress(ValueError, KeyError, TypeError):
                info = json.loads(msg.data)
                where = info.get("metadata") or {}
                if where.get("node") != node or not str(info["name"]).startswith(subjects.SERVICE_PREFIX):
                    continue
                if (used := _usage(int(where["pid"]))) is not None:
                    actor = str(info["name"]).removeprefix(subjects.SERVICE_PREFIX)
                    cpu.labels(actor, str(info["id"])).inc(used[0])
                    rss.labels(actor, str(info["id"])).set(used[1])
    finally:
        with contextlib.suppress(Exception):
            await answers.unsubscribe()
