"""A running `asrpro up` under failure: the bus restarted, a model that keeps failing, a killed server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_TEXT
from tests.e2e.stack import Stack, start_stack, wait_until
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
MODEL = "whisper-tiny.en"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("resilience")
    broken = tmp / "broken-whisper-base"  # weights that are there but do not load: a failure of the model
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.bin").write_bytes(b"not a model")
    s = start_stack(
        tmp,
        ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(broken),
        ASRPRO_RECOVERY__BACKOFF="[0.2]",
        ASRPRO_RECOVERY__BREAKER_FAILURES="2",
        ASRPRO_RECOVERY__BREAKER_COOLDOWN="600",
    )
    yield s
    assert s.stop() == 0
    s.wait_no_leftovers()


def post(stack: Stack, audio: bytes, **form: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}, data=form, timeout=120
    )


def test_killed_server_is_restarted_without_a_request(stack: Stack, shared_data: Path) -> None:
    assert post(stack, (shared_data / "jfk.flac").read_bytes()).status_code == 200
    [entry] = [m for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"] if m["model"] == MODEL]
    os.kill(entry["pid"], signal.SIGKILL)

    def restarted() -> bool:
        models = httpx.get(f"{stack.gateway}/api/ps").json()["models"]
        return any(m["model"] == MODEL and m["pid"] not in (None, entry["pid"]) for m in models)

    wait_until(restarted, what="the recovery actor to restart the server")


def test_nats_restart_gateway_answers_503_at_once_then_recovers(stack: Stack, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()

    def bus_down() -> bool:
        return httpx.get(f"{stack.gateway}/health", timeout=5).json().get("nats") == "disconnected"

    # The supervisor restarts nats-server within a fraction of a second: hold it still (SIGSTOP) so the bus
    # stays down while we look, and let it go whatever happens. Its children run on, in their own sessions.
    os.kill(stack.proc.pid, signal.SIGSTOP)
    try:
        os.kill(stack.pid_of("nats-server"), signal.SIGKILL)
        # Not at once after the kill: the gateway's client sees the connection close a moment later.
        wait_until(bus_down, timeout=10, what="the gateway to see the bus go")
        t0 = time.monotonic()
        health = httpx.get(f"{stack.gateway}/health", timeout=5)
        down = post(stack, audio)
        assert time.monotonic() - t0 < 3.0  # no hanging while the bus is down
    finally:
        os.kill(stack.proc.pid, signal.SIGCONT)
    assert health.status_code == 503 and health.json()["nats"] == "disconnected"
    assert down.status_code == 503 and "NATS" in down.json()["error"]["message"]
    # The supervisor restarts nats-server; actors and gateway reconnect by themselves.
    wait_until(
        lambda: httpx.get(f"{stack.gateway}/health").json().get("status") in ("healthy", "ready"),
        what="the bus to return",
    )
    wait_until(lambda: post(stack, audio).status_code == 200, timeout=30, what="a transcription after the outage")
    assert word_error_rate(JFK_TEXT, post(stack, audio).json()["text"]) <= 0.1


def test_health_is_degraded_while_a_breaker_is_open(stack: Stack, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()
    for _ in range(2):  # broken weights: it fails to start, and two failures open its breaker
        failed = post(stack, audio, model="whisper-base")
        assert failed.status_code == 503 and "failed" in failed.json()["error"]["message"]

    def degraded() -> bool:
        return httpx.get(f"{stack.gateway}/health").json()["status"] == "degraded"

    wait_until(degraded, what="the breaker to open")
    health = httpx.get(f"{stack.gateway}/health").json()
    assert "whisper-base: circuit breaker open" in health["reason"]
    refused = post(stack, audio, model="whisper-base")
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 500
    assert "circuit breaker is open" in refused.json()["error"]["message"]
    assert post(stack, audio).status_code == 200  # other models are not affected
    # An operator sees why, and closes it by hand.
    listed = httpx.get(f"{stack.gateway}/api/breakers").json()["breakers"]
    assert [(b["model"], b["state"]) for b in listed] == [("whisper-base", "open")] and listed[0]["reason"]
    closed = httpx.post(f"{stack.gateway}/api/breakers/whisper-base/close")
    assert closed.status_code == 200 and closed.json() == {"model": "whisper-base", "was": "open", "state": "closed"}
    wait_until(lambda: httpx.get(f"{stack.gateway}/health").json()["status"] in ("healthy", "ready"), what="closed")
    assert httpx.get(f"{stack.gateway}/api/breakers").json()["breakers"] == []
    again = post(stack, audio, model="whisper-base")  # tried again at once (and fails again: the weights are broken)
    assert again.status_code == 503 and "circuit breaker" not in again.json()["error"]["message"]
