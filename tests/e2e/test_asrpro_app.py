"""The original asrpro desktop app's contract, written from its sidecar (`sidecar/api/models.py`, `server.py`) and
its Rust client's serde models (`frontends/linux/src/models/api.rs`): what a client written for it reads."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import JFK_TEXT
from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
HEALTH_STATES = {"healthy", "ready", "degraded", "initializing", "unhealthy"}
DEV_ORIGIN = "http://localhost:1420"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    origins = json.dumps(["tauri://localhost", "https://tauri.localhost", DEV_ORIGIN])
    s = start_stack(tmp_path_factory.mktemp("app"), ASRPRO_GATEWAY__CORS_ORIGINS=origins)
    yield s
    assert s.stop() == 0


def test_health(stack: Stack) -> None:
    health = httpx.get(f"{stack.gateway}/health").json()
    assert health["status"] in HEALTH_STATES and health["status"] in ("healthy", "ready")
    assert health["current_model"] == "whisper-tiny.en" and isinstance(health["device"], str)
    assert health["device"] in ("Local process (CPU)", "Local process (GPU)")


def test_models_list_as_the_rust_client_deserialises_it(stack: Stack) -> None:
    listing = httpx.get(f"{stack.gateway}/v1/models").json()
    assert listing["object"] == "list"
    for entry in listing["data"]:
        assert isinstance(entry["id"], str) and entry["object"] == "model" and isinstance(entry["owned_by"], str)
        assert isinstance(entry["ready"], bool)
    ids = {entry["id"] for entry in listing["data"]}
    assert {"whisper-tiny", "whisper-base", "whisper-small", "whisper-medium", "whisper-large"} <= ids
    by_alias = httpx.get(f"{stack.gateway}/v1/models/parakeet").json()
    assert (by_alias["id"], by_alias["target"]) == ("parakeet", "parakeet-tdt-0.6b")
    # OpenAI's names are entries of their own, each with every field the app requires, pointing at the default.
    for name in ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe"):
        entry = next(e for e in listing["data"] if e["id"] == name)
        assert entry["target"] == "whisper-tiny.en" and entry["created"] > 1_700_000_000


def test_transcription_json_has_the_sidecars_fields(stack: Stack, shared_data: Path) -> None:
    # The app sends model and response_format as query parameters.
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions?model=whisper-base&response_format=json",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert word_error_rate(JFK_TEXT, body["text"]) <= 0.1
    assert body["language"] == "en" and isinstance(body["language_probability"], float)
    assert isinstance(body["duration"], float) and body["model_id"] == "whisper-base"
    assert isinstance(body["processing_time"], float) and isinstance(body["backend"], str)
    for segment in body["segments"]:
        assert isinstance(segment["text"], str) and isinstance(segment["start"], float)
        assert isinstance(segment["end"], float) and 0.0 < segment["confidence"] <= 1.0  # a probability
    assert body["usage"] == {"type": "duration", "seconds": 11}
    # Everyone else (fields in the form, as OpenAI's SDKs send them) gets OpenAI's json exactly.
    openai_json = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        data={"model": "whisper-base", "response_format": "json"},
        timeout=120,
    ).json()
    assert set(openai_json) == {"text", "usage"} and openai_json["usage"] == {"type": "duration", "seconds": 11}
    listed = {m["id"]: m for m in httpx.get(f"{stack.gateway}/v1/models").json()["data"]}
    assert listed["whisper-base"]["ready"] is True  # its server runs now
    assert listed["whisper-base"]["size_bytes"] > 100 * 2**20 and listed["whisper-small"]["size_bytes"] is None
    running = {m["model"]: m for m in httpx.get(f"{stack.gateway}/api/ps").json()["models"]}
    assert running["whisper-base"]["rss_mb"] > 50  # what the server really uses


def test_setting_the_model_loads_it(stack: Stack) -> None:
    try:
        reply = httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "whisper-base"}, timeout=120)
        assert (
            reply.status_code == 200 and reply.json()["status"] == "success" and reply.json()["model"] == "whisper-base"
        )
        ready = {m["id"]: m["ready"] for m in httpx.get(f"{stack.gateway}/v1/models").json()["data"]}
        assert ready["whisper-base"] is True
        assert httpx.get(f"{stack.gateway}/health").json()["current_model"] == "whisper-base"
    finally:
        httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "whisper-tiny.en"}, timeout=120)
    assert httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "whisper-huge"}).status_code == 404
    not_here = httpx.post(f"{stack.gateway}/v1/settings/model", json={"model_id": "whisper-small"})
    assert not_here.status_code == 409 and not_here.json()["error"]["code"] == "model_not_installed"


def test_options_are_what_is_really_there(stack: Stack) -> None:
    options = httpx.get(f"{stack.gateway}/v1/options").json()
    assert isinstance(options["api_version"], str) and isinstance(options["server"], str)
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/health", "/v1/options"):
        endpoint = options["endpoints"][path]
        assert isinstance(endpoint["method"], str) and isinstance(endpoint["description"], str)
        for parameter in endpoint["parameters"].values():
            assert isinstance(parameter["type"], str) and isinstance(parameter["required"], bool)
            assert isinstance(parameter["description"], str)
        assert all(isinstance(r["description"], str) for r in endpoint["responses"].values())
    transcription = options["endpoints"]["/v1/audio/transcriptions"]["parameters"]
    assert transcription["file"]["type"] == "file" and transcription["response_format"]["options"]
    for kind in ("audio", "video"):
        formats = options["supported_formats"][kind]
        assert formats["extensions"] and formats["mime_types"]
    assert ".flac" in options["supported_formats"]["audio"]["extensions"]
    assert set(options["available_models"]) == {"whisper-tiny.en", "whisper-base"}  # the installed ones
    # The diarizer is installed too, offered for what it does and not as a model to transcribe with.
    assert options["diarizers"] == ["diarizer-resemblyzer"] and options["capabilities"]["speaker_diarization"]
    assert "min_speakers" in transcription and "known_speaker_names[]" in transcription
    capabilities = options["capabilities"]
    for flag in (
        "ffmpeg_support",
        "video_processing",
        "audio_extraction",
        "gpu_acceleration",
        "websocket_support",
        "real_time_progress",
    ):
        assert isinstance(capabilities[flag], bool)
    assert isinstance(capabilities["current_device"], str)
    assert all(isinstance(v, str) for v in options["examples"].values())


@pytest.mark.parametrize("origin", ["tauri://localhost", "https://tauri.localhost", DEV_ORIGIN])
def test_cors_for_the_apps_origins(stack: Stack, origin: str) -> None:
    preflight = httpx.options(
        f"{stack.gateway}/v1/audio/transcriptions",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin
    simple = httpx.get(f"{stack.gateway}/health", headers={"Origin": origin})
    assert simple.headers["access-control-allow-origin"] == origin


def test_cors_refuses_other_origins(stack: Stack) -> None:
    for origin in ("https://evil.example", "http://localhost:3000"):
        preflight = httpx.options(
            f"{stack.gateway}/v1/settings/model",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
        assert (
            "access-control-allow-origin"
            not in httpx.get(f"{stack.gateway}/health", headers={"Origin": origin}).headers
        )


@pytest.fixture
def long_flac(shared_data: Path, tmp_path: Path) -> Path:
    long = tmp_path / "long.flac"
    subprocess.run(["sox", *[str(shared_data / "jfk.flac")] * 4, str(long)], check=True)  # 44 s
    return long


async def test_the_websocket_speaks_the_sidecars_messages(stack: Stack, long_flac: Path) -> None:
    long = long_flac
    ws_url = stack.gateway.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "system_status"
        await ws.send("this is not JSON")
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv())["type"] == "pong"  # the bad frame did not cost the connection
        await ws.send(json.dumps({"type": "get_status"}))
        status = json.loads(await ws.recv())
        assert status["type"] == "system_status" and status["data"]["status"] in HEALTH_STATES

        async with httpx.AsyncClient(timeout=300) as http:
            await http.post(
                f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("long.flac", long.read_bytes())}
            )
            await http.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("bad.wav", b"no audio" * 50)})
        seen: dict[str, list[dict[str, object]]] = {}
        async with asyncio.timeout(30):
            while "transcription_error" not in seen:
                message = json.loads(await ws.recv())
                seen.setdefault(message["type"], []).append(message["data"])
    started = next(d for d in seen["transcription_started"] if d["filename"] == "long.flac")
    assert started["model"] == "whisper-tiny.en"
    progress = [d for d in seen["transcription_progress"] if d["filename"] == "long.flac"]
    assert len(progress) >= 2 and all(isinstance(d["progress"], int) and 0 <= d["progress"] <= 100 for d in progress)
    assert all(isinstance(d["status"], str) and d["model"] == "whisper-tiny.en" for d in progress)
    completed = next(d for d in seen["transcription_completed"] if d["filename"] == "long.flac")
    assert isinstance(completed["result_length"], int) and completed["result_length"] > 100
    assert isinstance(completed["processing_time"], float)
    assert completed["model"] == "whisper-tiny.en"
    error = seen["transcription_error"][0]
    assert error["filename"] == "bad.wav" and "decode" in str(error["error"]) and error["model"] == "whisper-tiny.en"
    assert (error["code"], error["kind"]) == ("400", "unsupported_audio")  # the one table, as HTTP shows it


def test_hostile_hosts_and_origins_are_refused(stack: Stack) -> None:
    rebound = httpx.get(f"{stack.gateway}/v1/models", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "not served here" in rebound.json()["error"]["message"]
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    cross_site = httpx.post(
        f"{stack.gateway}/v1/settings/model",
        json={"model_id": "whisper-base"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403 and cross_site.json()["error"]["type"] == "permission_error"
    assert cross_site.json()["error"]["code"] == "forbidden_origin"
    other_port = httpx.delete(f"{stack.gateway}/api/ps/whisper-tiny.en", headers={"Origin": "http://127.0.0.1:9"})
    assert other_port.status_code == 403  # another local web server's page is another origin
    plain = httpx.post(
        f"{stack.gateway}/v1/settings/model",
        content=b'{"model_id": "whisper-base"}',
        headers={"Content-Type": "text/plain"},
    )
    assert plain.status_code == 415
    assert httpx.get(f"{stack.gateway}/health", headers={"Origin": "https://evil.example"}).status_code == 200
    assert httpx.get(f"{stack.gateway}/v1/models").status_code == 200  # native clients (no Origin) as before


async def test_a_hostile_page_cannot_open_the_websocket(stack: Stack) -> None:
    ws_url = stack.gateway.replace("http://", "ws://") + "/ws"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(ws_url, origin=websockets.Origin("https://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"{}")["error"]["code"] == "forbidden_origin"
    async with websockets.connect(ws_url, origin=websockets.Origin("tauri://localhost")) as ws:
        assert json.loads(await ws.recv())["type"] == "system_status"
