"""One request id per request, from the HTTP caller through gateway, proxy, lifecycle and model server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    tmp = tmp_path_factory.mktemp("request-id")
    log = tmp / "stack.log"
    stack = start_stack(tmp, log=log)
    yield stack, log
    assert stack.stop() == 0


def lines_with(log: Path, request_id: str) -> list[dict[str, object]]:
    found = []
    for line in log.read_text().splitlines():
        if request_id in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def test_the_callers_id_is_in_every_hops_log_and_in_the_reply(logged: tuple[Stack, Path], shared_data: Path) -> None:
    stack, log = logged
    request_id = "trace-7f3a9c2e"
    with httpx.Client(timeout=120) as http:
        # Cold: the lifecycle actor starts the model server for this request.
        response = http.post(
            f"{stack.gateway}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
            headers={"X-Request-Id": request_id},
        )
    assert response.status_code == 200 and response.headers["x-request-id"] == request_id
    mine = lines_with(log, request_id)
    assert all(line.get("request_id") == request_id for line in mine)
    components = {line["component"] for line in mine}
    assert {"gateway", "proxy", "lifecycle", "model-server"} <= components, components


def test_an_id_is_made_when_none_or_a_hostile_one_is_sent(logged: tuple[Stack, Path]) -> None:
    stack, _ = logged
    with httpx.Client(timeout=30) as http:
        plain = http.post(f"{stack.gateway}/v1/audio/transcriptions", data={"model": "whisper-1"})
        hostile = http.get(f"{stack.gateway}/v1/models", headers={"X-Request-Id": 'x" forged=1 ' + "a" * 300})
    assert plain.status_code == 400 and len(plain.headers["x-request-id"]) == 32
    assert hostile.status_code == 200 and len(hostile.headers["x-request-id"]) == 32
    assert plain.headers["x-request-id"] != hostile.headers["x-request-id"]
