"""Fixtures shared by every test suite."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import docker
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from actors.lifecycle.runtimes.docker import DEPLOYMENT_LABEL, daemon_problem
from asrpro import images
from asrpro.bootstrap import ensure_jetstream
from asrpro.nats_server import USERS, NatsServer, new_password
from framework import bus
from framework.actor import Actor
from framework.config import Config, load_config
from schemas import endpoints, subjects
from schemas.events import Event, decode_event, kind
from schemas.lifecycle import EnsureServer, ServerStatus
from tests.wer import word_error_rate

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
    passwords = {user: new_password() for user in USERS}
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
    # Tests of the local runtime stay local even where a Docker daemon answers; docker tests say so.
    environ["ASRPRO_LIFECYCLE__RUNTIME"] = "local"
    environ.update(env)
    return load_config(environ.pop("ASRPRO_CONFIG", REPO / "asrpro.toml"), environ=environ)


@pytest.fixture(scope="session")
async def jetstream(nats_server: Nats) -> Nats:
    nc = await nats_server.connect("admin")
    await ensure_jetstream(nc, make_config(nats_server, "admin"))
    await nc.close()
    return nats_server


async def reset_state(nats: Nats) -> None:
    nc = await nats.connect("admin")
    try:
        js = nc.jetstream()
        for bucket in (subjects.GPU_BUCKET, subjects.SERVERS_BUCKET, subjects.SETTINGS_BUCKET, subjects.JOBS_BUCKET):
            await js.purge_stream(f"KV_{bucket}")
        await js.purge_stream(subjects.EVENTS_STREAM)
        # Jobs: no queued job of an earlier test, no consumer bound to one.
        await js.purge_stream("OBJ_" + subjects.audio_bucket(subjects.JOBS_AUDIO_OWNER))
        for stream in (subjects.JOBS_STREAM, subjects.JOBS_WEBHOOK_STREAM):
            await js.purge_stream(stream)
            for consumer in await js.consumers_info(stream):
                await js.delete_consumer(stream, consumer.name)
    finally:
        await nc.close()


async def discoverable(server: Nats, actor: Actor) -> None:
    """Wait until the actor answers its nats.micro PING from another connection, as clients will reach it."""
    assert actor._service is not None
    subject = f"$SRV.PING.asrpro-{actor.name}.{actor._service.id}"
    nc = await server.connect("admin")
    try:
        for _ in range(100):
            try:
                await nc.request(subject, b"", timeout=0.2)
                return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                await asyncio.sleep(0.05)
        raise AssertionError(f"{actor.name} never answered {subject}")
    finally:
        await nc.close()


async def instances(server: Nats, name: str, quiet: float = 0.5) -> set[str]:
    """The ids of the instances of actor `name` that answer a nats.micro PING now (each one answers)."""
    nc = await server.connect("admin")
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(f"$SRV.PING.asrpro-{name}", b"", reply=inbox)
        found: set[str] = set()
        while True:
            try:
                msg = await sub.next_msg(timeout=quiet)
            except nats.errors.TimeoutError:
                return found
            if msg.data:  # not the server's "no responders" status (empty, with a 503 header)
                found.add(json.loads(msg.data)["id"])
    finally:
        await nc.close()


@pytest.fixture
async def start_actor(jetstream: Nats) -> AsyncIterator[Callable[..., object]]:
    """Start an actor in this process, connected as its own NATS user; stopped after the test.

    The durable state (GPU allocations, server records) is wiped first: each test starts from nothing."""
    await reset_state(jetstream)
    started: list[Actor] = []

    async def start(cls: type[Actor], *args: object, **env: str) -> Actor:
        actor = cls(make_config(jetstream, cls.name, **env), *args)
        await actor.start()
        started.append(actor)
        await discoverable(jetstream, actor)
        return actor

    yield start
    for actor in reversed(started):
        await actor.stop()


@pytest.fixture
async def proxy_nc(jetstream: Nats) -> AsyncIterator[Client]:
    """Connected as the model proxy: what may ask lifecycle to ensure a server."""
    nc = await jetstream.connect("proxy")
    yield nc
    await nc.close()


class EnsureFields(TypedDict, total=False):
    """EnsureServer's optional fields, as keyword arguments of `ensure`."""

    request_id: str
    restart: bool
    keep_alive: float | None
    timeout: float | None
    probe: bool


async def ensure(nc: Client, model: str = "whisper-tiny.en", **fields: Unpack[EnsureFields]) -> ServerStatus:
    """asr.lifecycle.ensure, as the proxy sends it; cold starts included in the wait."""
    request = EnsureServer(model=model, **fields)
    return await bus.request(nc, endpoints.LIFECYCLE_ENSURE, request, timeout=120)


@pytest.fixture
async def client(jetstream: Nats) -> AsyncIterator[Client]:
    """A plain NATS application, connected as the `client` user."""
    nc = await jetstream.connect("client")
    yield nc
    await nc.close()


class EventLog:
    """Lifecycle events of one model as a plain NATS subscriber sees them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        self.events.append(decode_event(msg.data, msg.headers))
        self._changed.set()

    def types(self) -> list[str]:
        return [kind(e) for e in self.events]

    async def wait_for(self, type_: str, count: int = 1, timeout: float = 30.0) -> Event:
        async def seen() -> Event:
            while True:
                matching = [e for e in self.events if kind(e) == type_]
                if len(matching) >= count:
                    return matching[count - 1]
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), timeout)


@pytest.fixture
async def events(client: Client) -> AsyncIterator[Callable[[str], Awaitable[EventLog]]]:
    subs = []

    async def follow(model: str) -> EventLog:
        log = EventLog()
        subs.append(await client.subscribe(subjects.events_of_model(model), cb=log.on_msg))
        # subscribe() only queues the SUB: a round trip makes sure the server has it, so no event
        # published (on another connection) after follow() returns is missed.
        await client.flush()
        return log

    yield follow
    for sub in subs:
        await sub.unsubscribe()


# --- Docker: a real Engine and the images, for tests/docker and the chaos suite -------------------

IMAGE_MODELS = ["whisper-tiny.en", "whisper-base", "parakeet-tdt-0.6b", "diarizer-resemblyzer"]


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


def repeated_jfk(shared_data: Path, out: Path, times: int) -> bytes:
    src = str(shared_data / "jfk.flac")
    # -D: no dither, the same samples every run (sox dithers with random noise by default).
    subprocess.run(["sox", "-D", *[src] * times, "-r", "16000", "-c", "1", str(out)], check=True)
    return out.read_bytes()


@pytest.fixture(scope="session")
def meeting(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """jfk.flac six times over (66 s): long enough for a job's checkpoints and a crash between them."""
    return repeated_jfk(shared_data, tmp_path_factory.mktemp("jobs-audio") / "jfk6.flac", 6)


@pytest.fixture(scope="session")
def long_meeting(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """jfk.flac twelve times over (132 s, five VAD chunks): time to stop a whole stack between a job's first
    checkpoint (taken when its second window begins) and its end."""
    return repeated_jfk(shared_data, tmp_path_factory.mktemp("jobs-audio") / "jfk12.flac", 12)


def assert_whole_meeting(text: str, times: int = 6) -> None:
    """A transcript of `meeting` (jfk `times` over) that reads as one decode of it: each repetition once. A resume
    that decoded again what its checkpoint held would say "fellow Americans" more than `times` times, one that
    skipped a window (two or more repetitions) fewer than `times` - 1. Not "exactly": tiny.en's decode of this
    audio is not the same from run to run on a CPU (same process settings, different texts: "fellow Americas", a
    repetition's first words missing), so its word error rate against what was said is bounded where one lost
    11-s repetition of six (0.17) still passes and a lost window of two does not."""
    said = text.lower().count("fellow americ")
    assert times - 1 <= said <= times and word_error_rate(" ".join([JFK_TEXT] * times), text) <= 0.2, text
