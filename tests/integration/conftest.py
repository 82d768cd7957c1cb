"""Fixtures of the integration tier: the whole actor system in this process on the session's nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from actors.gpu import GpuAllocator
from actors.lifecycle import Lifecycle
from actors.metrics import Metrics
from actors.proxy import ModelProxy
from actors.registry import Registry
from tests.conftest import Nats


@pytest.fixture
async def system(start_actor):
    await start_actor(Registry)
    await start_actor(GpuAllocator)
    await start_actor(Metrics)
    lifecycle = await start_actor(Lifecycle)
    await start_actor(ModelProxy)
    return lifecycle


@pytest.fixture(scope="session")
def jfk(shared_data: Path) -> bytes:
    return (shared_data / "jfk.flac").read_bytes()


@pytest.fixture
async def gateway_nc(jetstream: Nats) -> AsyncIterator[Client]:
    """A connection as the `gateway` user: what the HTTP routes send, sent by a test."""
    nc = await jetstream.connect("gateway")
    yield nc
    await nc.close()
