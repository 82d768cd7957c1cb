"""containers/compose.yml: the whole stack as containers, only the lifecycle actor with the Docker socket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest
import websockets

from actors.lifecycle.runtimes.local import free_port
from asrpro import images
from asrpro.nats_server import USERS, new_password, password_env
from asrpro.pcm import read_pcm16
from tests.conftest import JFK_TEXT, REPO, make_config
from tests.docker.conftest import containers_of
from tests.wer import word_error_rate

pytestmark = pytest.mark.docker
COMPOSE = REPO / "containers" / "compose.yml"


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    message = "neither docker-compose nor the docker compose plugin is installed"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def compose_stack(model_images, docker_client: docker.DockerClient, jetstream) -> Iterator[dict[str, str]]:
    images.build(make_config(jetstream, "admin"), ["stack"], REPO / ".asrpro" / "images")
    name = f"asrprotest{secrets.token_hex(3)}"
    env = dict(os.environ, **{password_env(u): new_password() for u in USERS})
    env.update(
        ASRPRO_GATEWAY_PORT=str(free_port()),
        ASRPRO_NATS_PORT=str(free_port()),
        ASRPRO_NETWORK=name,
        ASRPRO_DEPLOYMENT=name,
        DOCKER_GID=str(os.stat("/var/run/docker.sock").st_gid),
    )
    cmd = [*compose_command(), "-f", str(COMPOSE), "-p", name]
    try:
        # Inside the try: a start that fails or hangs must still be taken down (containers, network, volume).
        subprocess.run([*cmd, "up", "-d"], env=env, check=True, capture_output=True, timeout=300)
        yield env
    finally:
        logs = subprocess.run([*cmd, "logs", "--no-color"], env=env, capture_output=True, text=True).stdout
        subprocess.run([*cmd, "down", "-v", "-t", "20"], env=env, capture_output=True, timeout=300)
        for container in containers_of(docker_client, name):
            container.remove(force=True)
        print(logs[-5000:])


def test_compose_stack_transcribes(compose_stack: dict[str, str], docker_client, shared_data: Path) -> None:
    gateway = f"http://127.0.0.1:{compose_stack['ASRPRO_GATEWAY_PORT']}"
    deadline = time.monotonic() + 120
    while True:
        try:
            health = httpx.get(f"{gateway}/health", timeout=2).json()
            if health.get("status") in ("healthy", "ready"):
                break
        except (httpx.HTTPError, ValueError):
            pass
        assert time.monotonic() < deadline, "the compose stack did not become healthy"
        time.sleep(0.5)
    assert health["runtime"]["name"] == "docker"
    with (shared_data / "jfk.flac").open("rb") as fh:
        r = httpx.post(f"{gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", fh)}, timeout=180)
    assert r.status_code == 200, r.text
    assert word_error_rate(JFK_TEXT, r.json()["text"]) <= 0.1
    # Live transcription: the live service's session over the gateway's WebSocket, the client committing.
    live = asyncio.run(asyncio.wait_for(_live_transcript(gateway, shared_data / "jfk.flac"), 120))
    assert word_error_rate(JFK_TEXT, live) <= 0.25, live
    # The model container joined the stack's network and publishes nothing on the host.
    [model] = containers_of(docker_client, compose_stack["ASRPRO_NETWORK"])
    attrs = docker_client.api.inspect_container(model.id)
    assert attrs["HostConfig"]["PortBindings"] in ({}, None)
    assert list(attrs["NetworkSettings"]["Networks"]) == [compose_stack["ASRPRO_NETWORK"]]
    # Only the lifecycle service has the Docker socket.
    project = f"com.docker.compose.project={compose_stack['ASRPRO_NETWORK']}"
    with_socket = [
        c.labels["com.docker.compose.service"]
        for c in docker_client.containers.list(filters={"label": project})
        if any("docker.sock" in m["Source"] for m in c.attrs["Mounts"])
    ]
    assert with_socket == ["lifecycle"]


async def _live_transcript(gateway: str, recording: Path) -> str:
    """A realtime transcription session of the compose stack: the recording appended at once, committed by the
    client (no turn detection), its completed transcript."""
    pcm = read_pcm16(recording, 24000)
    async with websockets.connect(gateway.replace("http://", "ws://") + "/v1/realtime?intent=transcription") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        session = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        for start in range(0, len(pcm), 2400):
            audio = base64.b64encode(pcm[start : start + 2400].astype("<i2").tobytes()).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while True:
            event = json.loads(await ws.recv())
            assert event["type"] != "error", event
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                return str(event["transcript"])
