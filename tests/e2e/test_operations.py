"""The operations API of a running `asrpro up`: /api/ps, the SSE event stream with replay, the WebSocket."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.stack import Stack, start_stack, wait_until

pytestmark = pytest.mark.e2e
MODEL = "whisper-tiny.en"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("ops"), ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="3")
    yield s
    s.stop()


def transcribe(stack: Stack, audio: bytes, **form: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}, data=form, timeout=120
    )


def sse_events(
    stack: Stack, query: str, model: str = MODEL, quiet: float = 2.0, headers: dict[str, str] | None = None
) -> list[dict]:
    """Read /v1/events until nothing more arrives for `quiet` seconds (the replay is over)."""
    seen: list[dict] = []
    url = f"{stack.gateway}/v1/events?{query}"
    with httpx.stream("GET", url, timeout=quiet, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        lines = response.iter_lines()
        assert next(lines) == "retry: 2000"  # how soon a browser's EventSource reconnects
        try:
            for line in lines:
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    block[key] = value.strip()
                elif line == "" and block:
                    event = json.loads(block["data"])
                    event["_id"], event["_event"] = int(block["id"]), block["event"]
                    if event["model"] == model:
                        seen.append(event)
                    block = {}
        except httpx.ReadTimeout:
            pass
    return seen


def wait_stopped(stack: Stack, model: str = MODEL) -> None:
    deadline = time.monotonic() + 30
    while any(m["model"] == model for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"]):
        assert time.monotonic() < deadline, f"{model} did not stop"
        time.sleep(0.1)


def test_ps_load_unload_and_busy_conflict(stack: Stack, shared_data: Path) -> None:
    r = httpx.post(f"{stack.gateway}/api/ps/{MODEL}", params={"keep_alive": "10m"}, timeout=120)
    assert r.status_code == 200
    loaded = r.json()
    assert loaded["model"] == MODEL and loaded["pid"] and loaded["runtime"] == "local"
    ps = httpx.get(f"{stack.gateway}/api/ps").json()
    [entry] = [m for m in ps["models"] if m["model"] == MODEL]
    assert entry["pid"] == loaded["pid"] and entry["device"] == "cpu" and entry["inflight"] == 0
    assert entry["keep_alive"] == 600 and entry["expires_at"].startswith("20")

    # While a request is in flight, DELETE answers 409 unless forced.
    src = str(shared_data / "jfk.flac")
    long = subprocess.run(
        ["sox", *[src] * 8, "-r", "16000", "-c", "1", "-b", "16", "-t", "wav", "-"], check=True, capture_output=True
    ).stdout
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: result.update(r=transcribe(stack, long)))
    worker.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entry = next(m for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"] if m["model"] == MODEL)
        if entry["inflight"]:
            break
        time.sleep(0.01)
    assert entry["inflight"] == 1 and entry["expires_at"] is None
    busy = httpx.delete(f"{stack.gateway}/api/ps/{MODEL}")
    worker.join()
    assert busy.status_code == 409 and "force" in busy.json()["error"]["message"]
    assert result["r"].status_code == 200
    gone = httpx.delete(f"{stack.gateway}/api/ps/{MODEL}", params={"force": "true"}, timeout=60)
    assert gone.json() == {"model": MODEL, "stopped": True}
    assert [m for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"] if m["model"] == MODEL] == []


def test_events_replay_from_sequence_zero(stack: Stack, shared_data: Path) -> None:
    assert transcribe(stack, (shared_data / "jfk.flac").read_bytes(), keep_alive="1s").status_code == 200
    wait_stopped(stack)
    events = sse_events(stack, "since=0")
    lifecycle = [e["type"] for e in events if e["type"] in ("starting", "ready", "stopped")]
    # Replayed from the start of the stream, in order: each start of the model, then ready, then stopped.
    assert lifecycle and lifecycle == ["starting", "ready", "stopped"] * (len(lifecycle) // 3)
    assert [e["type"] for e in events][-2:] == ["transcribed", "stopped"]
    ids = [e["_id"] for e in events]
    assert ids == sorted(ids) and all(e["_event"] == e["type"] for e in events)
    # From a later sequence, only what came from it on.
    later = sse_events(stack, f"since={events[-1]['_id']}")
    assert [e["_id"] for e in later] == [events[-1]["_id"]]
    assert [e["_id"] for e in sse_events(stack, f"since_seq={events[-1]['_id']}")] == [events[-1]["_id"]]
    # An integer time (Unix seconds) is a time, not a sequence: from a minute ago, the replay has the events.
    since_time = sse_events(stack, f"since={int(events[-1]['at']) - 60}")
    assert since_time and since_time[-1]["_id"] == events[-1]["_id"]
    # A reconnecting EventSource sends the last id it saw (and the URL it first used): it gets the gap.
    resumed = sse_events(stack, "since=0", headers={"Last-Event-ID": str(events[-3]["_id"])})
    assert [e["_id"] for e in resumed] == [e["_id"] for e in events[-2:]]
    wrong = httpx.get(f"{stack.gateway}/v1/events", headers={"Last-Event-ID": "abc"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "Last-Event-ID"
    bad = httpx.get(f"{stack.gateway}/v1/events", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
    for model in ("no such model", "a.b"):
        unknown = httpx.get(f"{stack.gateway}/v1/events", params={"model": model})
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "invalid_request_error"


async def test_websocket_receives_events_live(stack: Stack, shared_data: Path) -> None:
    await asyncio.to_thread(wait_stopped, stack)
    url = stack.gateway.replace("http://", "ws://") + "/ws"
    async with websockets.connect(url) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "system_status" and hello["data"]["status"] in ("healthy", "ready")
        await ws.send(json.dumps({"type": "ping", "data": 42}))
        assert json.loads(await ws.recv()) == {"type": "pong", "data": 42}
        audio = (shared_data / "jfk.flac").read_bytes()
        request = asyncio.get_running_loop().run_in_executor(None, lambda: transcribe(stack, audio, keep_alive="0"))
        seen: list[tuple[str, str]] = []
        while ("container_status", "stopped") not in seen:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["data"].get("model") == MODEL:
                seen.append((message["type"], message["data"]["status"]))
        assert (await request).status_code == 200
    assert seen.index(("transcription_started", "transcribing")) < seen.index(("container_status", "ready"))
    assert seen.index(("container_status", "ready")) < seen.index(("transcription_completed", "transcribed"))
    assert seen[-1] == ("container_status", "stopped")


def test_nodes_lists_this_host_alive_with_what_it_runs(stack: Stack, shared_data: Path) -> None:
    assert transcribe(stack, (shared_data / "jfk.flac").read_bytes(), model=MODEL).status_code == 200

    def this_node() -> dict:
        [node] = httpx.get(f"{stack.gateway}/api/nodes", timeout=10).json()["nodes"]
        return node

    wait_until(lambda: MODEL in this_node()["servers"], timeout=15, what="the heartbeat to list the model")
    node = this_node()
    assert node["alive"] is True and node["name"] == socket.gethostname() and node["runtime"] == "local"
    assert node["heartbeat_at"] and node["host"] == socket.gethostname()
    servers = httpx.get(f"{stack.gateway}/api/ps", timeout=10).json()["models"]
    assert {s["node"] for s in servers} == {node["name"]}
