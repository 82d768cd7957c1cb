"""Docker tests need a real Docker Engine and the model images. In CI (CI=true) a missing
daemon fails these tests; elsewhere they are skipped with the reason."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from actors import images
from actors.runtimes.docker import DEPLOYMENT_LABEL, daemon_problem
from tests.conftest import REPO, make_config

IMAGE_MODELS = ["whisper-tiny.en", "parakeet-tdt-0.6b"]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    problem = daemon_problem()
    if problem:
        message = f"these tests need a Docker Engine: {problem}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_images(docker_client: docker.DockerClient, jetstream) -> dict[str, str]:
    """Build (or find up to date) the whisper and parakeet images, the way a user does."""
    config = make_config(jetstream, "admin")
    return images.build(config, IMAGE_MODELS, REPO / ".asrpro" / "images")


@pytest.fixture
def deployment(docker_client: docker.DockerClient) -> Iterator[str]:
    """A deployment label of its own per test; its containers are removed afterwards, whatever happened."""
    name = f"test-{secrets.token_hex(4)}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"{DEPLOYMENT_LABEL}={name}"}):
        container.remove(force=True)


def containers_of(client: docker.DockerClient, deployment: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{DEPLOYMENT_LABEL}={deployment}"})


__all__ = ["Path", "containers_of"]
