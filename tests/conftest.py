"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client

from actors import bus
from actors.base import Actor
from actors.bootstrap import ensure_jetstream
from actors.config import Config, load_config
from actors.nats_server import USERS, NatsServer

# ../shared/data beside the repository: real recordings with known transcripts (see its README.md).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"test audio not found: expected the directory {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA


# --- a real nats-server for the whole session ---------------------------------------------------


REPO = Path(__file__).resolve().parents[1]
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@dataclass
class Nats:
    url: str
    passwords: dict[str, str]
    server: NatsServer

    async def connect(self, user: str = "client") -> Client:
        return await bus.connect(self.url, name=f"test-{user}", user=user, password=self.passwords[user])


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nats]:
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    store = tmp_path_factory.mktemp("nats")
    server = NatsServer(str(REPO / "nats.conf"), str(store), passwords, port=-1)
    url = server.start()
    yield Nats(url=url, passwords=passwords, server=server)
    server.stop()


def make_config(nats: Nats, user: str, **env: str) -> Config:
    """The repo's configuration, connected as `user`, with ASRPRO_* overrides given as keyword arguments."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    environ.update(
        {"ASRPRO_NATS__URL": nats.url, "ASRPRO_NATS__USER": user, "ASRPRO_NATS__PASSWORD": nats.passwords[user]}
    )
    environ.update(env)
    return load_config(REPO / "asrpro.toml", environ=environ)


@pytest.fixture(scope="session")
async def jetstream(nats_server: Nats) -> Nats:
    nc = await nats_server.connect("admin")
    await ensure_jetstream(nc, make_config(nats_server, "admin"))
    await nc.close()
    return nats_server


@pytest.fixture
async def start_actor(jetstream: Nats) -> AsyncIterator[Callable[..., object]]:
    """Start an actor in this process, connected as its own NATS user; stopped after the test."""
    started: list[Actor] = []

    async def start(cls: type[Actor], *args: object, **env: str) -> Actor:
        actor = cls(make_config(jetstream, cls.name, **env), *args)  # type: ignore[call-arg]
        await actor.start()
        started.append(actor)
        return actor

    yield start
    for actor in reversed(started):
        await actor.stop()


@pytest.fixture
async def client(jetstream: Nats) -> AsyncIterator[Client]:
    """A plain NATS application, connected as the `client` user."""
    nc = await jetstream.connect("client")
    yield nc
    await nc.close()
