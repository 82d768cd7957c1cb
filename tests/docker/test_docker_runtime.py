"""The docker runtime against a real Docker Engine and the images `asrpro images build` makes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
import httpx
import pytest

from actors.gpu import GpuAllocator
from actors.lifecycle import Lifecycle
from actors.registry import Registry
from bench.conversation import conversation, error_rate
from framework import bus
from schemas import endpoints
from schemas.errors import AsrError
from schemas.events import ServerFailed
from schemas.lifecycle import LifecycleStatusRequest
from tests.conftest import JFK_TEXT, REPO, ensure
from tests.docker.conftest import containers_of
from tests.wer import word_error_rate

pytestmark = pytest.mark.docker

MODEL = "whisper-tiny.en"


async def start_lifecycle(start_actor, deployment: str, **env: str) -> Lifecycle:
    await start_actor(Registry, **env)
    await start_actor(GpuAllocator)
    return await start_actor(Lifecycle, ASRPRO_LIFECYCLE__RUNTIME="docker", ASRPRO_DOCKER__DEPLOYMENT=deployment, **env)


async def test_container_is_hardened_and_serves(
    model_images, docker_client: docker.DockerClient, deployment, start_actor, proxy_nc, events
) -> None:
    log = await events(MODEL)
    await start_lifecycle(start_actor, deployment, ASRPRO_LIFECYCLE__INACTIVITY_TIMEOUT="3")
    status = await ensure(proxy_nc)
    assert status.runtime == "docker" and status.container_id and status.url.startswith("http://127.0.0.1:")
    [container] = containers_of(docker_client, deployment)
    attrs = docker_client.api.inspect_container(container.id)
    # The model server's host pid (what NVML reports): the gpu actor measures the container by it.
    assert status.pid is not None and status.pid == attrs["State"]["Pid"] and status.pid > 1
    host = attrs["HostConfig"]
    assert [b["HostIp"] for b in host["PortBindings"]["9000/tcp"]] == ["127.0.0.1"]
    assert attrs["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False and host["PidsLimit"] == 4096 and host["Memory"] == 4 * 2**30
    assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])
    assert attrs["Config"]["Labels"]["asrpro.model"] == MODEL
    assert attrs["Config"]["Image"] == model_images[MODEL]
    # The idle timeout removes the container, and the events say so.
    stopped = await log.wait_for("stopped", timeout=30)
    assert stopped.reason == "idle"
    assert log.types() == ["starting", "ready", "stopped"]
    assert containers_of(docker_client, deployment) == []


async def test_whisper_base_is_served_from_weights_mounted_read_only(
    model_images, docker_client: docker.DockerClient, deployment, start_actor, proxy_nc, shared_data: Path
) -> None:
    """The second real model: its weights pulled on the host (the test command does), mounted into its container."""
    await start_lifecycle(start_actor, deployment)
    status = await ensure(proxy_nc, "whisper-base")
    assert status.runtime == "docker" and status.container_id
    [container] = containers_of(docker_client, deployment)
    [mount] = docker_client.api.inspect_container(container.id)["Mounts"]
    assert mount["Destination"] == "/models/whisper-base" and mount["RW"] is False
    assert mount["Source"] == str((REPO / "models" / "whisper-base").resolve())
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(
            f"{status.url}/transcribe",
            content=(shared_data / "jfk.flac").read_bytes(),
            params={"filename": "jfk.flac", "response_format": "verbose_json"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "whisper-base" and reply.json()["language"] == "en"
    assert word_error_rate(JFK_TEXT, reply.json()["text"]) <= 0.1


async def test_the_diarizer_runs_in_a_container_of_its_own(
    model_images, docker_client: docker.DockerClient, deployment, start_actor, proxy_nc, tmp_path: Path
) -> None:
    """A diarizer is a model like the others: its own image (numpy and PyAV, no PyTorch), its weights mounted
    read-only, speaker turns over the same HTTP contract."""
    await start_lifecycle(start_actor, deployment)
    status = await ensure(proxy_nc, "diarizer-resemblyzer")
    assert status.runtime == "docker" and status.container_id
    [container] = containers_of(docker_client, deployment)
    assert docker_client.api.inspect_container(container.id)["Config"]["Image"] == model_images["diarizer-resemblyzer"]
    [mount] = docker_client.api.inspect_container(container.id)["Mounts"]
    assert mount["Destination"] == "/models/diarizer-resemblyzer" and mount["RW"] is False
    talk = conversation(tmp_path, speakers=2, seconds=25, seed=3)
    async with httpx.AsyncClient(timeout=60) as http:
        reply = await http.post(
            f"{status.url}/transcribe", content=talk.mono.read_bytes(), params={"filename": talk.mono.name}
        )
    assert reply.status_code == 200, reply.text
    turns = [(s["start"], s["end"], s["speaker"]) for s in reply.json()["segments"]]
    assert {s for *_, s in turns} == {"A", "B"} and error_rate(talk.turns, turns) <= 0.1, turns


async def test_missing_image_with_pull_policy_never_is_a_prompt_503(
    docker_client, deployment, start_actor, proxy_nc, events
) -> None:
    log = await events(MODEL)
    await start_lifecycle(
        start_actor,
        deployment,
        ASRPRO_DOCKER__PULL_POLICY="never",
        ASRPRO_MODELS__WHISPER_TINY_EN__IMAGE="asrpro/no-such-image:0.0.0",
    )
    t0 = time.monotonic()
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc)
    assert time.monotonic() - t0 < 10
    assert err.value.code == "503" and "asrpro/no-such-image:0.0.0" in err.value.message
    assert "pull_policy = never" in err.value.message
    failed = await log.wait_for("failed")
    assert isinstance(failed, ServerFailed) and "asrpro/no-such-image:0.0.0" in failed.reason


async def test_unreachable_daemon_is_a_503_with_the_reason(start_actor, proxy_nc, jetstream, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    await start_lifecycle(start_actor, "unreachable", ASRPRO_DOCKER__CONTAINER_TIMEOUT="10")
    t0 = time.monotonic()
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc)
    assert time.monotonic() - t0 < 10
    assert err.value.code == "503" and "Docker daemon unreachable" in err.value.message
    # docker was asked for: nothing ran as a local process instead.
    gateway = await jetstream.connect("gateway")
    try:
        status = await bus.request(gateway, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
        assert status.runtime == "docker" and status.servers == []
    finally:
        await gateway.close()


async def test_auto_falls_back_to_local_and_says_why(start_actor, jetstream, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    await start_actor(Registry)
    await start_actor(Lifecycle, ASRPRO_LIFECYCLE__RUNTIME="auto")
    gateway = await jetstream.connect("gateway")
    try:
        status = await bus.request(gateway, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
        assert status.runtime == "local"
        assert "auto" in status.runtime_reason and "Docker daemon unreachable" in status.runtime_reason
    finally:
        await gateway.close()


async def test_parakeet_without_weights_says_what_is_missing(
    model_images, docker_client, deployment, start_actor, proxy_nc, events, tmp_path: Path
) -> None:
    assert model_images["parakeet-tdt-0.6b"] == "asrpro/parakeet-tdt-0.6b:0.1.0"
    log = await events("parakeet-tdt-0.6b")
    os.chmod(tmp_path, 0o755)  # readable by the container's user; what is missing is the model files
    (tmp_path / "vocab.txt").write_text("a 0\n")  # looks installed, but the ONNX files are not there
    (tmp_path / "config.json").write_text('{"features_size": 128}')
    for name in ("vocab.txt", "config.json"):
        os.chmod(tmp_path / name, 0o644)
    await start_lifecycle(start_actor, deployment, ASRPRO_MODELS__PARAKEET_TDT_0_6B__WEIGHTS=str(tmp_path))
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "parakeet-tdt-0.6b")
    message = err.value.message
    assert err.value.code == "503" and "weights not found: looked in /models/parakeet-tdt-0.6b" in message
    assert "encoder-model.onnx" in message and str(tmp_path) in message
    failed = await log.wait_for("failed")
    assert "encoder-model.onnx" in failed.reason
    assert containers_of(docker_client, deployment) == []  # the failed container was removed


async def test_parakeet_weights_directory_missing_on_host(
    model_images, deployment, start_actor, proxy_nc, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere"
    await start_lifecycle(start_actor, deployment, ASRPRO_MODELS__PARAKEET_TDT_0_6B__WEIGHTS=str(missing))
    with pytest.raises(AsrError) as err:
        await ensure(proxy_nc, "parakeet-tdt-0.6b")
    assert (err.value.code, err.value.kind) == ("404", "model_not_installed")
    assert str(missing) in err.value.message and "asrpro models pull parakeet-tdt-0.6b" in err.value.message


async def test_killed_container_is_reported_crashed_at_once(
    model_images, docker_client, deployment, start_actor, proxy_nc, events
) -> None:
    log = await events(MODEL)
    await start_lifecycle(start_actor, deployment)
    status = await ensure(proxy_nc)
    docker_client.containers.get(status.container_id).kill()
    crashed = await log.wait_for("crashed", timeout=15)
    assert crashed.exit_code == 137 and "SIGKILL" in crashed.reason
    again = await ensure(proxy_nc)  # the next request gets a fresh container
    assert again.container_id != status.container_id and again.cold_start
    assert [c.id for c in containers_of(docker_client, deployment)] == [again.container_id]


async def test_auto_uses_local_when_the_images_are_not_built(docker_client, start_actor, jetstream) -> None:
    await start_actor(Registry)
    await start_actor(
        Lifecycle, ASRPRO_LIFECYCLE__RUNTIME="auto", ASRPRO_MODELS__WHISPER_TINY_EN__IMAGE="asrpro/not-built:0"
    )
    gateway = await jetstream.connect("gateway")
    try:
        status = await bus.request(gateway, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
        assert status.runtime == "local" and "image asrpro/not-built:0 is not built" in status.runtime_reason
    finally:
        await gateway.close()


async def test_the_first_gpu_refusal_of_an_engine_without_the_nvidia_toolkit_is_the_gpus_fault(
    model_images, docker_client: docker.DockerClient, deployment, start_actor, proxy_nc, events
) -> None:
    """This Docker Engine has no NVIDIA Container Toolkit: its real refusal ("could not select device driver") of a
    GPU placement is `cause: gpu` at the very first start — no breaker counts it — and it names the fix."""
    if any("nvidia" in name for name in docker_client.info().get("Runtimes", {})):
        pytest.skip("this Docker Engine has the NVIDIA runtime")
    log = await events(MODEL)
    gpu = '[{index = 0, name = "Stand-in", memory_mb = 16384, uuid = "GPU-5a4d1c2e", capability = "8.6"}]'
    env = {
        "ASRPRO_GPU__DEVICES": gpu,
        "ASRPRO_GPU__DRIVER_CUDA": '"12.4"',  # read as TOML: a string
        "ASRPRO_MODELS__WHISPER_TINY_EN__GPU_MEMORY_MB": "1000",
        "ASRPRO_MODELS__WHISPER_TINY_EN__CPU_FALLBACK": "false",
        # The CPU image, unlabelled, stands in for the CUDA one: dockerd refuses the device request before it runs.
        "ASRPRO_MODELS__WHISPER_TINY_EN__CUDA_IMAGE": model_images[MODEL],
    }
    await start_actor(Registry, **env)
    await start_actor(GpuAllocator, **env)
    await start_actor(Lifecycle, ASRPRO_LIFECYCLE__RUNTIME="docker", ASRPRO_DOCKER__DEPLOYMENT=deployment, **env)
    try:
        with pytest.raises(AsrError) as err:
            await ensure(proxy_nc)
        assert (err.value.code, err.value.kind) == ("503", "gpu_unusable")
        assert "NVIDIA Container Toolkit" in err.value.message and "could not select device driver" in err.value.message
        failed = await log.wait_for("failed")
        assert isinstance(failed, ServerFailed) and failed.cause == "gpu"
        assert containers_of(docker_client, deployment) == []
        # Remembered: the next start is refused before any container is made, still the GPU's fault.
        with pytest.raises(AsrError) as again:
            await ensure(proxy_nc)
        assert again.value.kind == "gpu_unusable"
        await log.wait_for("failed", count=2)
        assert [e.cause for e in log.events if isinstance(e, ServerFailed)] == ["gpu", "gpu"]
    finally:
        for volume in docker_client.volumes.list(filters={"name": "asrpro-cuda-cache-"}):
            if volume.attrs.get("Labels", {}).get("asrpro.deployment") == deployment:
                volume.remove(force=True)
