"""The whole system started by `asrpro up`, used the way applications use it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework import bus
from schemas import endpoints, subjects
from schemas.events import decode_event, kind
from schemas.lifecycle import StopServer
from tests.conftest import JFK_TEXT
from tests.e2e.stack import REPO, Stack, start_stack, wait_until
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
MODEL = "whisper-tiny.en"
SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n.+$", re.MULTILINE)
VTT_CUE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n.+$", re.MULTILINE)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(
        tmp_path_factory.mktemp("stack"),
        ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="4",
        ASRPRO_GATEWAY__MAX_UPLOAD_MB="2",
    )
    yield s
    assert s.stop() == 0
    s.wait_no_leftovers()


@pytest.fixture(scope="module")
def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_openai_client_json(oai: openai.OpenAI, shared_data: Path) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        result = oai.audio.transcriptions.create(model="whisper-1", file=fh)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt", "verbose_json", "json"])
def test_openai_client_every_response_format(oai: openai.OpenAI, shared_data: Path, fmt: str) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        # `fmt` is a plain str from the parametrization: no single overload of create() can be chosen statically.
        result = oai.audio.transcriptions.create(model=MODEL, file=fh, response_format=fmt)  # type: ignore[call-overload]
    if fmt == "text":
        assert isinstance(result, str) and word_error_rate(JFK_TEXT, result) <= 0.1
    elif fmt == "srt":
        cues = SRT_CUE.findall(result)
        assert cues and result.startswith("1\n00:00:00,000 --> ")
        assert word_error_rate(JFK_TEXT, " ".join(c.split("\n")[2] for c in cues)) <= 0.1
    elif fmt == "vtt":
        assert result.startswith("WEBVTT\n")
        cues = VTT_CUE.findall(result)
        assert cues and word_error_rate(JFK_TEXT, " ".join(c.split("\n")[1] for c in cues)) <= 0.1
    elif fmt == "verbose_json":
        assert result.duration == pytest.approx(11.0, abs=0.1)
        assert result.language == "english" and result.segments and result.segments[-1].end <= 11.1
        assert result.to_dict()["language_code"] == "en" and result.usage.seconds == 11
        assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    else:
        assert word_error_rate(JFK_TEXT, result.text) <= 0.1


def test_older_clients_send_model_and_format_as_query(stack: Stack, shared_data: Path) -> None:
    with (shared_data / "jfk.flac").open("rb") as fh:
        r = httpx.post(
            f"{stack.gateway}/v1/audio/transcriptions",
            params={"model": MODEL, "response_format": "text"},
            files={"file": ("jfk.flac", fh)},
            timeout=120,
        )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert word_error_rate(JFK_TEXT, r.text) <= 0.1


def post(stack: Stack, data: bytes | None, name: str = "a.wav", **form: str) -> httpx.Response:
    files = {"file": (name, data)} if data is not None else None
    return httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files=files, data=form, timeout=120)


def test_bad_input_gets_documented_status_and_service_keeps_serving(stack: Stack, shared_data: Path) -> None:
    empty = post(stack, b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
    missing = httpx.post(f"{stack.gateway}/v1/audio/transcriptions", data={"model": MODEL}, timeout=30)
    assert missing.status_code == 400 and "file" in missing.json()["error"]["message"]
    assert (missing.json()["error"]["code"], missing.json()["error"]["param"]) == (None, "file")
    text = post(stack, b"Hello, I am a text file and not a recording.\n" * 20, name="notes.wav")
    assert text.status_code == 400 and "could not decode audio" in text.json()["error"]["message"]
    assert (text.json()["error"]["code"], text.json()["error"]["param"]) == ("unsupported_audio", "file")
    unknown = post(stack, b"RIFF", model="whisper-huge")
    assert unknown.status_code == 404 and "whisper-huge" in unknown.json()["error"]["message"]
    assert (unknown.json()["error"]["code"], unknown.json()["error"]["param"]) == ("model_not_found", "model")
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    oversize = post(stack, b"\0" * (3 * 2**20))
    assert oversize.status_code == 413 and "2 MB" in oversize.json()["error"]["message"]

    def chunked_upload() -> Iterator[bytes]:  # no Content-Length: the limit is found while the body streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for _ in range(4):
            yield b"\0" * 2**20
        yield b"\r\n--b--\r\n"

    chunked = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        content=chunked_upload(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert chunked.status_code == 413 and "2 MB" in chunked.json()["error"]["message"]
    bad_format = post(stack, b"RIFF", response_format="docx")
    assert bad_format.status_code == 400
    ok = post(stack, (shared_data / "jfk.flac").read_bytes(), name="jfk.flac", model=MODEL)
    assert ok.status_code == 200 and word_error_rate(JFK_TEXT, ok.json()["text"]) <= 0.1


def test_models_health_metrics_and_default_model(stack: Stack, shared_data: Path) -> None:
    models = httpx.get(f"{stack.gateway}/v1/models").json()
    assert models["object"] == "list"
    assert {m["id"]: m["default"] for m in models["data"]}[MODEL] is True
    health = httpx.get(f"{stack.gateway}/health").json()
    assert health["status"] in ("healthy", "ready") and health["runtime"]["name"] == "local"
    metrics = httpx.get(f"{stack.gateway}/metrics").text
    families = {f.name for f in text_string_to_metric_families(metrics)}  # the exposition parses
    assert {
        "asrpro_requests",
        "asrpro_model_load_seconds",
        "asrpro_servers_running",
        "asrpro_requests_inflight",
        "asrpro_queue_wait_seconds",
        "asrpro_server_stops",
        "asrpro_server_uptime_seconds",
        "asrpro_gateway_rejected",
    } <= families

    r = httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "whisper-base"})
    assert r.status_code == 200 and r.json() == {
        "status": "success",
        "model": "whisper-base",
        "default_model": "whisper-base",
    }
    try:
        whisper_1 = httpx.get(f"{stack.gateway}/v1/models/whisper-1").json()
        assert (whisper_1["id"], whisper_1["target"]) == ("whisper-1", "whisper-base")
        # whisper-base (multilingual, pulled by the test command) now answers what whisper-1 is sent.
        answered = post(stack, (shared_data / "jfk.flac").read_bytes(), name="jfk.flac", response_format="verbose_json")
        assert answered.status_code == 200, answered.text
        assert answered.json()["model"] == "whisper-base" and answered.json()["language"] == "english"
        assert answered.json()["language_code"] == "en"
        assert word_error_rate(JFK_TEXT, answered.json()["text"]) <= 0.1
    finally:
        r = httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": MODEL})
        # The tests after this one send no model: the gateway's watched copy must be back to MODEL (the
        # setting waits for it, but gives up silently after 2 s).
        wait_until(
            lambda: httpx.get(f"{stack.gateway}/v1/models/whisper-1").json().get("target") == MODEL,
            what=f"{MODEL} to be the default again",
        )
    assert r.json()["status"] == "success" and r.json()["model"] == MODEL
    assert httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "nope"}).status_code == 404
    assert httpx.post(f"{stack.gateway}/v1/settings/model", json={"model": MODEL}).status_code == 400


async def test_lifecycle_events_in_order_on_a_nats_subscription(stack: Stack, shared_data: Path) -> None:
    nc = await bus.connect(stack.nats_url, name="test-events", user="client", password=stack.client_password)
    admin = await bus.connect(stack.nats_url, name="test-admin", user="admin", password=_password(stack, "admin"))
    try:
        await bus.request(admin, endpoints.LIFECYCLE_STOP, StopServer(model=MODEL), timeout=30)
        sub = await nc.subscribe(subjects.events_of_model(MODEL))
        await nc.flush()  # the server has the subscription before the first event can be published
        async with httpx.AsyncClient(timeout=120) as http:
            with (shared_data / "jfk.flac").open("rb") as fh:
                r = await http.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", fh.read())})
        assert r.status_code == 200
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while "stopped" not in seen and time.monotonic() < deadline:
            msg = await sub.next_msg(timeout=deadline - time.monotonic())
            seen.append(kind(decode_event(msg.data, msg.headers)))
        assert seen == ["transcribing", "starting", "ready", "transcribed", "stopped"]
    finally:
        await nc.close()
        await admin.close()


def _password(stack: Stack, user: str) -> str:
    creds = Path(stack.env["ASRPRO_NATS__STORE_DIR"]) / "credentials.json"
    return msgspec.json.decode(creds.read_bytes())[user]


def test_cli_transcribes_through_gateway_and_over_nats(stack: Stack, shared_data: Path) -> None:
    env = dict(stack.env, ASRPRO_GATEWAY__PORT=stack.gateway.rsplit(":", 1)[1])
    for extra in ([], ["--nats"]):
        out = subprocess.run(
            [sys.executable, "-m", "asrpro.cli", "transcribe", str(shared_data / "jfk.flac"), *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert word_error_rate(JFK_TEXT, out.stdout) <= 0.1


def test_killed_model_server_next_request_succeeds(stack: Stack, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()
    assert post(stack, audio, name="jfk.flac").status_code == 200
    servers = httpx.get(f"{stack.gateway}/health").json()["servers"]
    pid = next(s["pid"] for s in servers if s["model"] == MODEL)
    os.kill(pid, signal.SIGKILL)
    r = post(stack, audio, name="jfk.flac")
    assert r.status_code == 200 and word_error_rate(JFK_TEXT, r.json()["text"]) <= 0.1


def test_sigterm_leaves_no_process_behind(tmp_path: Path, shared_data: Path) -> None:
    s = start_stack(tmp_path)
    try:
        assert post(s, (shared_data / "jfk.flac").read_bytes(), name="jfk.flac").status_code == 200
        running = s.leftovers()
        # supervisor, nats-server, six actors, the gateway and the model server
        assert len(running) >= 10, running
    finally:
        assert s.stop() == 0
    s.wait_no_leftovers()
