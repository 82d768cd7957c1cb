"""`asrpro up` with runtime=docker: cold start through the gateway, re-adoption, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import openai
import pytest

from framework import bus
from schemas import subjects
from schemas.events import ServerReady, decode_event, kind
from tests.conftest import JFK_TEXT
from tests.docker.conftest import containers_of
from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.docker
MODEL = "whisper-tiny.en"


@pytest.fixture
def docker_stack(model_images, docker_client, deployment, tmp_path: Path) -> Iterator[Stack]:
    s = start_stack(
        tmp_path,
        ASRPRO_LIFECYCLE__RUNTIME="docker",
        ASRPRO_DOCKER__DEPLOYMENT=deployment,
        ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="60",
        ASRPRO_GPU__DEVICES='[{index = 0, name = "fake", memory_mb = 8192}]',
        ASRPRO_GPU__ACCOUNTING_ONLY="true",
    )
    yield s
    s.stop()


def transcribe(stack: Stack, audio: Path) -> str:
    client = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="unused", max_retries=0, timeout=120)
    with audio.open("rb") as fh:
        return client.audio.transcriptions.create(model="whisper-1", file=fh).text


async def test_cold_start_readoption_and_shutdown(
    docker_stack: Stack, docker_client: docker.DockerClient, deployment: str, shared_data: Path
) -> None:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{docker_stack.gateway}/health")).json()
    assert health["runtime"]["name"] == "docker"
    text = await asyncio.to_thread(transcribe, docker_stack, shared_data / "jfk.flac")
    assert word_error_rate(JFK_TEXT, text) <= 0.1
    [container] = containers_of(docker_client, deployment)
    async with httpx.AsyncClient() as http:
        gpu_before = (await http.get(f"{docker_stack.gateway}/api/gpu")).json()
    assert [(a["model"], a["memory_mb"]) for a in gpu_before["allocations"]] == [(MODEL, 600)]

    nc = await bus.connect(docker_stack.nats_url, name="t", user="client", password=docker_stack.client_password)
    try:
        sub = await nc.subscribe(subjects.events_of_model(MODEL))
        await nc.flush()  # subscribed on the server before anything is killed
        os.kill(docker_stack.pid_of("actor", "lifecycle"), signal.SIGKILL)
        # The supervisor restarts the lifecycle actor, which finds the running container and adopts it.
        deadline = time.monotonic() + 60
        while True:
            msg = await sub.next_msg(timeout=deadline - time.monotonic())
            event = decode_event(msg.data, msg.headers)
            if isinstance(event, ServerReady):
                break
            assert kind(event) not in ("starting", "stopped"), event
        assert event.adopted and event.container_id == container.id
    finally:
        await nc.close()
    text = await asyncio.to_thread(transcribe, docker_stack, shared_data / "jfk.flac")
    assert word_error_rate(JFK_TEXT, text) <= 0.1
    assert [c.id for c in containers_of(docker_client, deployment)] == [container.id]
    async with httpx.AsyncClient() as http:
        gpu_after = (await http.get(f"{docker_stack.gateway}/api/gpu")).json()
        ps = (await http.get(f"{docker_stack.gateway}/api/ps")).json()
    assert gpu_after["allocations"] == gpu_before["allocations"]  # the same allocation, not a second one
    assert [(m["model"], m["container_id"]) for m in ps["models"]] == [(MODEL, container.id)]

    assert docker_stack.stop() == 0
    assert containers_of(docker_client, deployment) == []
