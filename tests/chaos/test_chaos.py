"""The chaos suite: failures injected under steady load; every request must be answered correctly or
with a clear error — none lost. The counts are printed at the end (run with -s to see them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.load import Load
from tests.conftest import REPO, containers_of
from tests.e2e.stack import Stack, start_stack, wait_until

pytestmark = pytest.mark.e2e
CONFIG = str(REPO / "tests" / "fixtures" / "chaos.toml")
MODEL = "whisper-tiny.en"
REPORTS: list[dict[str, object]] = []


def _count(report: dict[str, object], key: str) -> int:
    value = report[key]
    assert isinstance(value, int), report  # Load.report's counts
    return value


@pytest.fixture(scope="module", autouse=True)
def print_counts() -> Iterator[None]:
    yield
    totals = {k: sum(_count(r, k) for r in REPORTS) for k in ("sent", "ok", "clear_error", "lost")}
    print("\nchaos suite:")
    for report in REPORTS:
        print(json.dumps(report))
    print(json.dumps({"scenario": "total", **totals}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("chaos"), ASRPRO_CONFIG=CONFIG)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def audio(shared_data: Path) -> bytes:
    return (shared_data / "jfk.flac").read_bytes()


def healthy(stack: Stack) -> bool:
    return httpx.get(f"{stack.gateway}/health", timeout=2).json().get("status") in ("healthy", "ready")


def busy_server_pid(stack: Stack) -> int | None:
    """The pid of MODEL's server while it has requests in flight (lifecycle counts them), else None."""
    models = httpx.get(f"{stack.gateway}/api/ps", timeout=5).json().get("models", [])
    return next((m["pid"] for m in models if m["model"] == MODEL and m["pid"] and m["inflight"]), None)


def finish(load: Load, name: str) -> None:
    REPORTS.append(load.report(name))
    assert load.counts["lost"] == 0, load.report(name)
    assert load.counts["ok"] > 0, load.report(name)


def a_busy_server(stack: Stack, other_than: int | None) -> int:
    """Wait for MODEL's server to have requests in flight, and return its pid; not `other_than`, the
    server just killed, which /api/ps lists until lifecycle has seen it die."""
    found: list[int] = []

    def fresh_and_busy() -> bool:
        pid = busy_server_pid(stack)
        if pid is None or pid == other_than:
            return False
        found.append(pid)
        return True

    wait_until(fresh_and_busy, timeout=60, what="a model server with requests in flight")
    return found[-1]


def test_kill_model_server_mid_request(stack: Stack, audio: bytes) -> None:
    killed: int | None = None
    with Load(stack.gateway, audio) as load:
        for _ in range(5):
            killed = a_busy_server(stack, other_than=killed)
            os.kill(killed, signal.SIGKILL)
        wait_until(lambda: load.send() == "ok", timeout=60, what="a transcript after the last kill")
    finish(load, "kill -9 the model server mid-request, 5 times")


def requests_in_flight(stack: Stack) -> bool:
    return busy_server_pid(stack) is not None


@pytest.mark.parametrize("actor", ["registry", "gpu", "metrics", "lifecycle", "recovery", "proxy"])
def test_kill_each_actor(stack: Stack, audio: bytes, actor: str) -> None:
    wait_until(lambda: healthy(stack), what="a healthy stack")
    with Load(stack.gateway, audio) as load:
        wait_until(lambda: requests_in_flight(stack), timeout=60, what="requests in flight")
        pid = stack.pid_of("actor", actor)
        os.kill(pid, signal.SIGKILL)
        # /health says ok at once for most actors (it asks only lifecycle and the proxy): wait for the
        # supervisor's new process itself, then for the stack to serve.
        wait_until(lambda: stack.restarted(pid, "actor", actor), what=f"the supervisor to restart {actor}")
        wait_until(lambda: healthy(stack), what=f"{actor} to be back")
        wait_until(lambda: load.send() == "ok", timeout=30, what=f"a transcript after {actor} came back")
    finish(load, f"kill -9 the {actor} actor")


def test_restart_nats_server(stack: Stack, audio: bytes) -> None:
    wait_until(lambda: healthy(stack), what="a healthy stack")
    with Load(stack.gateway, audio) as load:
        wait_until(lambda: requests_in_flight(stack), timeout=60, what="requests in flight")
        pid = stack.pid_of("nats-server")
        os.kill(pid, signal.SIGKILL)
        # Until the gateway notices, /health still says ok: wait for the new nats-server itself.
        wait_until(lambda: stack.restarted(pid, "nats-server"), what="the supervisor to restart nats-server")
        wait_until(lambda: healthy(stack), what="the bus to return")
        wait_until(lambda: load.send() == "ok", timeout=30, what="a transcript after the bus returned")
    finish(load, "restart nats-server (kill -9; the supervisor restarts it)")


def test_exhaust_the_gpu_budget(stack: Stack, audio: bytes) -> None:
    """`huge` never fits the 1 GB GPU and may not fall back to the CPU: its requests get a clear 503 at
    their deadline while whisper-tiny.en keeps serving."""
    wait_until(lambda: healthy(stack), what="a healthy stack")
    with Load(stack.gateway, audio, clients=2) as load:
        outcomes = [load.send("huge") for _ in range(2)]
    assert outcomes == ["clear_error", "clear_error"]
    assert any("no room for huge" in e for e in load.errors), load.errors
    finish(load, "exhaust the GPU budget")


def _dockerd_pid() -> int | None:
    try:
        return int(Path("/var/run/docker.pid").read_text())
    except (OSError, ValueError):
        return None


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture
def docker_stack(model_images, docker_client, tmp_path: Path) -> Iterator[Stack]:
    if os.geteuid() != 0 or _dockerd_pid() is None:
        message = "stopping and starting dockerd needs root and a dockerd started on this machine"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    s = start_stack(
        tmp_path, ASRPRO_CONFIG=CONFIG, ASRPRO_LIFECYCLE__RUNTIME="docker", ASRPRO_DOCKER__DEPLOYMENT="chaos"
    )
    try:
        yield s
    finally:
        s.stop()
        # A container the stack could not remove (e.g. it stopped while dockerd was away) would be adopted by
        # the next run of this deployment: remove whatever is left.
        for container in containers_of(docker_client, "chaos"):
            container.remove(force=True)


def _process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (dockerd started with setsid is re-parented): it holds nothing any more."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.startswith("State:") and "Z" in line for line in status.splitlines())


def _start_dockerd() -> None:
    with open("/tmp/asrpro-dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    wait_until(_docker_answers, timeout=60, what="dockerd to start again")


def _stop_dockerd(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    # Not "the API went quiet": the old daemon removes its pid file after that, and a new one refuses to
    # start while the file is there. Wait for the process itself, and for the file.
    wait_until(lambda: _process_gone(pid), timeout=60, what=f"dockerd (pid {pid}) to exit")
    wait_until(lambda: not Path("/var/run/docker.pid").exists(), timeout=30, what="dockerd's pid file to go")


def test_stop_and_start_dockerd(docker_stack: Stack, audio: bytes, model_images) -> None:
    stack = docker_stack
    try:
        with Load(stack.gateway, audio, clients=2) as load:
            wait_until(lambda: load.counts["ok"] > 0, timeout=60, what="a first transcript from a container")
            pid = _dockerd_pid()
            assert pid is not None
            _stop_dockerd(pid)
            _start_dockerd()
            wait_until(lambda: load.send() == "ok", timeout=60, what="a transcript after dockerd came back")
    finally:
        # Whatever happened above, the rest of the suite needs a Docker Engine.
        if not _docker_answers():
            pid = _dockerd_pid()
            if pid is not None and not _process_gone(pid):
                _stop_dockerd(pid)
            _start_dockerd()
    finish(load, "stop and start dockerd")
