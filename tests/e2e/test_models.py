"""Two real models side by side, and a model that is not installed, through `asrpro up` as users see them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import openai
import pytest

from tests.conftest import JFK_TEXT
from tests.e2e.stack import Stack, start_stack, wait_until
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
MISSING = "whisper-large-v3"  # configured, no weights on this host


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("models"))
    yield s
    assert s.stop() == 0


def models(stack: Stack) -> dict[str, dict[str, object]]:
    return {m["id"]: m for m in httpx.get(f"{stack.gateway}/v1/models").json()["data"]}


def test_the_catalogue_says_what_is_installed_where(stack: Stack) -> None:
    wait_until(lambda: models(stack)[MISSING]["installed"] is False, what="the lifecycle actor's report")
    listed = models(stack)
    assert listed["whisper-tiny.en"]["installed"] is True and listed["whisper-base"]["installed"] is True
    assert str(Path("models/whisper-base").resolve()) in str(listed["whisper-base"]["installed_where"])
    assert "model.bin" in str(listed[MISSING]["installed_where"])


def test_two_real_models_side_by_side(stack: Stack, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()
    for model in ("whisper-tiny.en", "whisper-base"):
        reply = httpx.post(
            f"{stack.gateway}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", audio)},
            data={"model": model, "response_format": "verbose_json"},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == model and word_error_rate(JFK_TEXT, reply.json()["text"]) <= 0.1
    running = {m["model"] for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"]}
    assert {"whisper-tiny.en", "whisper-base"} <= running


def test_a_model_not_installed_is_a_404_with_the_hint_and_no_failure(stack: Stack, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()
    for _ in range(20):
        reply = httpx.post(
            f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}, data={"model": MISSING}
        )
        assert reply.status_code == 404, reply.text
        error = reply.json()["error"]
        assert error["code"] == "model_not_installed" and f"asrpro models pull {MISSING}" in error["message"]
    health = httpx.get(f"{stack.gateway}/health").json()
    assert health["status"] in ("healthy", "ready"), health  # not a failure: no breaker, nothing degraded
    refused = httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": MISSING})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_not_installed"
    assert f"asrpro models pull {MISSING}" in refused.json()["error"]["message"]
    assert models(stack)["whisper-tiny.en"]["default"] is True


def test_the_openai_client_gets_not_found_at_once(stack: Stack, shared_data: Path) -> None:
    client = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="unused", timeout=30)  # its default retries
    with (shared_data / "jfk.flac").open("rb") as fh, pytest.raises(openai.NotFoundError) as err:
        client.audio.transcriptions.create(model=MISSING, file=fh)
    assert "asrpro models pull" in str(err.value)


async def test_a_nats_client_gets_the_same_answer(stack: Stack, shared_data: Path) -> None:
    nc = await nats.connect(stack.nats_url, user="client", password=stack.client_password, inbox_prefix="_INBOX.client")
    try:
        body = {"audio": "", "audio_ref": None, "filename": "jfk.flac"}
        reply = await nc.request(
            f"asr.transcribe.{MISSING}",
            json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    finally:
        await nc.close()
    assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "404"
    assert json.loads(reply.data)["kind"] == "model_not_installed"
