"""containers/compose.yml: the whole stack as containers, only the lifecycle actor with the Docker socket."""

from __future__ import annotations

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

from actors.lifecycle.runtimes.local import free_port
from asrpro import images
from asrpro.nats_server import USERS, new_password, password_env
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
