"""API keys on a running `asrpro up`, as applications and an attacker meet them: the official `openai` client
with a key, requests without one or with the wrong scope, keys added and revoked while it runs, tokens on the
WebSocket and SSE, and a gateway that will not open itself to the network without keys."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from tests.conftest import JFK_TEXT
from tests.e2e.stack import REPO, Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
APP_KEY = "app-key-" + "a" * 24
ADMIN_KEY = "admin-key-" + "b" * 24


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys-log") / "stack.log"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, log_file: Path) -> Iterator[Stack]:
    s = start_stack(
        tmp_path_factory.mktemp("keys"),
        log=log_file,
        ASRPRO_GATEWAY__API_KEYS=json.dumps([APP_KEY]),
        ASRPRO_GATEWAY__ADMIN_KEYS=json.dumps([ADMIN_KEY]),
        ASRPRO_GATEWAY__HEADER_TIMEOUT="1",
    )
    yield s
    assert s.stop() == 0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert APP_KEY not in response.text and ADMIN_KEY not in response.text


def test_openai_client_with_a_key_transcribes_and_without_one_is_told_why(stack: Stack, shared_data: Path) -> None:
    audio = shared_data / "jfk.flac"
    good = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key=APP_KEY, max_retries=0, timeout=120)
    with audio.open("rb") as fh:
        text = good.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
    assert word_error_rate(JFK_TEXT, str(text)) < 0.15
    bad = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="not-a-key", max_retries=0, timeout=30)
    with audio.open("rb") as fh, pytest.raises(openai.AuthenticationError) as caught:
        bad.audio.transcriptions.create(model="whisper-1", file=fh)
    assert caught.value.status_code == 401 and "not valid" in caught.value.message


def test_no_key_401_wrong_scope_403_admin_allowed(stack: Stack) -> None:
    gw = stack.gateway
    missing = httpx.get(f"{gw}/v1/models")
    assert_openai_error(missing, 401, "invalid_api_key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_openai_error(httpx.get(f"{gw}/v1/models", headers={"Authorization": "Basic eDp5"}), 401, "invalid_api_key")
    assert httpx.get(f"{gw}/v1/models", headers=bearer(APP_KEY)).status_code == 200
    assert httpx.get(f"{gw}/health").status_code == 200  # liveness stays public
    assert httpx.get(f"{gw}/").status_code == 200  # the console's page asks for a key itself
    for method, path in [
        ("DELETE", "/api/ps/whisper-tiny.en?force=true"),
        ("POST", "/api/ps/whisper-tiny.en"),
        ("GET", "/api/ps"),
        ("POST", "/api/breakers/whisper-tiny.en/close"),
        ("POST", "/v1/settings/model"),
    ]:
        body = {"model_id": "whisper-tiny.en"} if path == "/v1/settings/model" else None
        assert_openai_error(httpx.request(method, f"{gw}{path}", json=body), 401, "invalid_api_key")
        refused = httpx.request(method, f"{gw}{path}", json=body, headers=bearer(APP_KEY))
        assert_openai_error(refused, 403, "insufficient_scope")
        assert refused.json()["error"]["type"] == "permission_error"
    assert httpx.get(f"{gw}/api/ps", headers=bearer(ADMIN_KEY)).status_code == 200
    # The desktop app holds an admin key: it sets the default model.
    changed = httpx.post(f"{gw}/v1/settings/model", json={"model_id": "whisper-tiny.en"}, headers=bearer(ADMIN_KEY))
    assert changed.status_code == 200, changed.text


def test_keys_file_is_reread_add_and_revoke_without_restart(stack: Stack) -> None:
    env = {**stack.env}
    add = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "keys", "add", "--scope", "admin"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = add.stdout.strip()
    keys_file = Path(env["ASRPRO_GATEWAY__API_KEYS_FILE"])
    assert key not in keys_file.read_text() and oct(keys_file.stat().st_mode & 0o777) == "0o600"
    assert httpx.get(f"{stack.gateway}/api/ps", headers=bearer(key)).status_code == 200
    listed = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "keys", "list"], cwd=REPO, env=env, capture_output=True, text=True
    ).stdout
    digest = listed.split()[0]
    subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "keys", "remove", digest.rstrip("…")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    assert_openai_error(httpx.get(f"{stack.gateway}/api/ps", headers=bearer(key)), 401, "invalid_api_key")


async def test_websocket_takes_the_key_as_token(stack: Stack) -> None:
    ws_url = stack.gateway.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
    # 401 as over HTTP, with OpenAI's error body (an ASGI WebSocket denial response, not uvicorn's bare 403).
    assert refused.value.response.status_code == 401
    error = json.loads(refused.value.response.body or b"{}")["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
    async with websockets.connect(f"{ws_url}?token={APP_KEY}") as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "system_status"


async def test_realtime_takes_the_key_as_openai_s_browser_subprotocol_and_never_echoes_it(stack: Stack) -> None:
    """What a browser page does (it cannot set headers on a WebSocket): the key as a subprotocol beside
    `realtime`; the answer selects `realtime` only (Chrome aborts a handshake that selects none it offered)."""
    url = stack.gateway.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    offered = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{APP_KEY}")]
    async with websockets.connect(url, subprotocols=offered) as ws:
        assert ws.subprotocol == "realtime"
        assert ws.response is not None and APP_KEY not in str(ws.response.headers)
        assert json.loads(await ws.recv())["type"] == "session.created"
    wrong = [Subprotocol("realtime"), Subprotocol("openai-insecure-api-key.not-a-key-zz9")]
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, subprotocols=wrong) as ws:
            await ws.recv()
    assert refused.value.response.status_code == 401
    # A page of another origin may not open one, key or not.
    with pytest.raises(InvalidStatus) as foreign:
        async with websockets.connect(url, subprotocols=offered, origin=Origin("https://evil.example")) as ws:
            await ws.recv()
    assert foreign.value.response.status_code == 403


def test_sse_takes_the_key_as_token_and_logs_never_show_it(stack: Stack, log_file: Path) -> None:
    with httpx.stream("GET", f"{stack.gateway}/v1/events?token={APP_KEY}&since=0", timeout=10) as events:
        assert events.status_code == 200
    refused = httpx.get(f"{stack.gateway}/v1/events?since=0&token=wrong-token-zz9", timeout=10)
    assert_openai_error(refused, 401, "invalid_api_key")
    # ?token= is for what browsers cannot give headers to, not for every route.
    assert httpx.get(f"{stack.gateway}/v1/models?token={APP_KEY}").status_code == 401
    time.sleep(0.5)
    logged = log_file.read_text()
    assert APP_KEY not in logged and ADMIN_KEY not in logged
    # The refusal is logged with its query, and the token in it redacted.
    assert "wrong-token-zz9" not in logged and "token=[redacted]" in logged


def test_a_client_that_never_finishes_its_headers_is_cut_off(stack: Stack) -> None:
    port = int(stack.gateway.rsplit(":", 1)[1])
    held = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        held.append(sock)
    for sock in held:
        sock.settimeout(15)
        assert sock.recv(1024) == b"", "the gateway kept a connection with unfinished headers open"
        sock.close()
    assert httpx.get(f"{stack.gateway}/health").status_code == 200


def test_a_client_that_trickles_its_body_is_cut_off(stack: Stack) -> None:
    port = int(stack.gateway.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {APP_KEY}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    )
    sock.sendall(head.encode())
    sock.settimeout(0.5)
    closed = False
    for _ in range(40):  # 20 s of one byte every half second: far below gateway.min_upload_rate
        try:
            sock.sendall(b"x")
            if sock.recv(1024) == b"":
                closed = True
                break
        except TimeoutError:
            continue
        except OSError:
            closed = True
            break
    sock.close()
    assert closed, "the gateway kept a connection whose body trickles in"


@pytest.mark.parametrize("command", [["gateway"], ["up"]])
def test_an_open_gateway_on_a_network_address_refuses_to_start(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    env.update(
        ASRPRO_GATEWAY__HOST="0.0.0.0",
        ASRPRO_GATEWAY__API_KEYS_FILE=str(tmp_path / "none"),
        ASRPRO_NATS__STORE_DIR=str(tmp_path / "state"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "no API key is configured" in done.stderr and "allow_unauthenticated" in done.stderr
    assert not (tmp_path / "state").exists(), "nothing may start before the refusal"


def test_a_client_secret_opens_live_sessions_only_with_its_settings(stack: Stack) -> None:
    """OpenAI's ephemeral client secret, minted through the official SDK: a browser holds it instead of the key;
    it opens realtime sessions (its session settings applied) and nothing else, and cannot be forged."""
    sdk = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key=APP_KEY, max_retries=0, timeout=30)
    audio = {"input": {"transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": None}}
    session: Any = {"type": "transcription", "audio": audio}  # the SDK's TypedDict, as a plain dict
    minted = sdk.realtime.client_secrets.create(expires_after={"anchor": "created_at", "seconds": 60}, session=session)
    secret = minted.value
    assert secret.startswith("ek_") and APP_KEY not in secret and abs(minted.expires_at - time.time() - 60) < 5
    assert minted.session.type == "transcription"
    url = stack.gateway.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    asyncio.run(_session_with(url, secret))
    # Nothing else: not the API, not the events, not minting more; a changed secret is no secret.
    assert httpx.get(f"{stack.gateway}/v1/models", headers=bearer(secret)).status_code == 401
    assert httpx.get(f"{stack.gateway}/v1/events?token={secret}", timeout=10).status_code == 401
    again = httpx.post(f"{stack.gateway}/v1/realtime/client_secrets", json={}, headers=bearer(secret))
    assert_openai_error(again, 401, "invalid_api_key")
    payload, signature = secret.split(".")
    for forged in (payload[:-2] + "xx." + signature, payload + "." + signature[::-1]):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(_session_with(url, forged))
        assert refused.value.response.status_code == 401
    # Bad requests name the field; no key, no secret.
    minting = f"{stack.gateway}/v1/realtime/client_secrets"
    for body, param in (
        ({"expires_after": {"seconds": 5}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "later"}}, "expires_after.anchor"),
        ({"session": {"type": "realtime"}}, "session.type"),
        ({"session": "everything"}, "session"),
    ):
        reply = httpx.post(minting, json=body, headers=bearer(APP_KEY))
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    assert httpx.post(minting, json={}).status_code == 401
    plain = httpx.post(minting, content=b"{}", headers={**bearer(APP_KEY), "Content-Type": "text/plain"})
    assert plain.status_code == 415


async def _session_with(url: str, secret: str) -> None:
    """A session opened with a client secret as a browser offers it: the secret's settings are the session's."""
    offered = [Subprotocol("realtime"), Subprotocol(f"openai-insecure-api-key.{secret}")]
    async with websockets.connect(url, subprotocols=offered) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created", created
        audio_in = created["session"]["audio"]["input"]
        assert audio_in["turn_detection"] is None and audio_in["transcription"]["language"] == "en", created
