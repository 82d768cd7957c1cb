"""Applications on the bus, as an attacker among them would try it: a second application (`mallory`, scope
transcribe) against the first (`alice`). It cannot read alice's replies or audio, overwrite or delete her
uploads, kill consumers, cancel her requests or forge events; adding and removing users (nats-server's config
reload) keeps requests in flight. Against a real nats-server with the rendered configuration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from asrpro.bootstrap import ensure_audio_bucket
from asrpro.nats_users import UserStore
from framework import bus
from schemas import codec, endpoints, subjects
from schemas.errors import AsrError
from schemas.events import BreakerChanged
from schemas.lifecycle import LifecycleStatusRequest
from schemas.transcribe import CancelTranscription, TranscribeRequest
from tests.conftest import JFK_TEXT, Nats, make_config
from tests.integration.test_proxy import MODEL
from tests.wer import word_error_rate

JSON = {"Content-Type": "application/json"}


class Violations:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc))


async def add_app(server: Nats, name: str, scope: str = "transcribe") -> None:
    store = UserStore(server.server.store_dir)
    if not any(app.name == name for app in store.load()):
        user = store.add(name, scope)  # type: ignore[arg-type]
        server.passwords[name] = user.password
        server.server.reload()
        admin = await server.connect("admin")
        try:
            await ensure_audio_bucket(admin, make_config(server, "admin"), name)
        finally:
            await admin.close()
    server.passwords[name] = next(a.password for a in store.load() if a.name == name)


async def connect(server: Nats, name: str, errors: Violations | None = None) -> Client:
    return await bus.connect(
        server.url, name=name, user=name, password=server.passwords[name], error_cb=errors.record if errors else None
    )


@pytest.fixture
async def apps(jetstream: Nats) -> AsyncIterator[tuple[Client, Client, Violations]]:
    for name in ("alice", "mallory"):
        for _ in range(50):  # the reload is asynchronous: the new user may take a moment to be known
            try:
                await add_app(jetstream, name)
                nc = await connect(jetstream, name)
                await nc.close()
                break
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.1)
    violations = Violations()
    alice = await connect(jetstream, "alice")
    mallory = await connect(jetstream, "mallory", violations)
    yield alice, mallory, violations
    await alice.close()
    await mallory.close()


async def test_mallory_reads_no_reply_of_alice(system, apps, jfk: bytes) -> None:
    alice, mallory, violations = apps
    stolen: list[str] = []

    async def steal(msg: Msg) -> None:
        stolen.append(msg.subject)

    for pattern in ("_INBOX.>", "_INBOX.alice.>", ">", "_INBOX.*.*"):
        await mallory.subscribe(pattern, cb=steal)
    await mallory.flush()
    result = await bus.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="secret.flac"), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    await asyncio.sleep(0.5)
    assert stolen == []
    assert sum("permissions violation" in v for v in violations.seen) >= 4


async def test_mallory_cannot_read_overwrite_or_delete_alices_audio(
    system,
    apps,
    jfk: bytes,
    monkeypatch,
    jetstream: Nats,
) -> None:
    alice, mallory, violations = apps
    bucket = subjects.audio_bucket("alice")
    store = await alice.jetstream().object_store(bucket)
    await store.put("recording.flac", jfk)
    # Every way in: the bucket's info, its objects by name or by stream sequence, a new consumer, a delete.
    with pytest.raises(Exception):  # noqa: B017 (nats-py raises a timeout or a JetStream error)
        await (await mallory.jetstream(timeout=1).object_store(bucket)).get("recording.flac")
    for subject, body in [
        (f"$JS.API.STREAM.MSG.GET.OBJ_{bucket}", b'{"seq": 1}'),
        (f"$JS.API.DIRECT.GET.OBJ_{bucket}", b'{"seq": 1}'),
        (f"$JS.API.CONSUMER.CREATE.OBJ_{bucket}", b'{"config": {}}'),
        (f"$JS.API.STREAM.PURGE.OBJ_{bucket}", b""),
        (f"$JS.API.STREAM.DELETE.OBJ_{bucket}", b""),
        ("$JS.API.STREAM.LIST", b""),
        (f"$JS.API.CONSUMER.DELETE.{subjects.EVENTS_STREAM}.anything", b""),
        (f"$JS.API.CONSUMER.LIST.{subjects.EVENTS_STREAM}", b""),
    ]:
        with pytest.raises(nats.errors.Error):
            await mallory.request(subject, body, timeout=1)
    await mallory.publish(f"$O.{bucket}.M.cmVjb3JkaW5nLmZsYWM=", b"{}")  # overwrite the meta of recording.flac
    await mallory.publish(f"$O.{bucket}.C.x", b"junk")
    await mallory.flush()
    # The proxy reads by name for whoever knows it: names are unguessable (a uuid) and only alice knows hers.
    with pytest.raises(AsrError) as err:
        await bus.request(
            mallory,
            endpoints.TRANSCRIBE.at(MODEL),
            TranscribeRequest(audio_ref="0123-guess.flac", audio_bucket=bucket),
            timeout=30,
        )
    assert err.value.code == "400"
    # alice's object is intact, and her own large upload still works end to end.
    # (read back as admin: applications put and delete their uploads but do not read them back — that would need
    # a consumer, and consumers can be pointed anywhere)
    admin = await jetstream.connect("admin")
    try:
        assert (await (await admin.jetstream().object_store(bucket)).get("recording.flac")).data == jfk
    finally:
        await admin.close()
    monkeypatch.setattr(alice, "_max_payload", 192 * 1024 + 1000)
    result = await bus.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="big.flac"), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1


async def test_mallory_cannot_cancel_alices_request_nor_forge_events(
    system,
    apps,
    jetstream: Nats,
    jfk: bytes,
) -> None:
    alice, mallory, _ = apps
    watcher = await jetstream.connect("admin")
    forged: list[str] = []

    async def on_event(msg: Msg) -> None:
        forged.append(msg.subject)

    await watcher.subscribe(f"{subjects.EVENTS_PREFIX}*.forged-by-mallory", cb=on_event)
    await watcher.flush()
    request = TranscribeRequest(audio=jfk + jfk[:0], filename="jfk.flac", request_id="alice-1")
    pending = asyncio.create_task(bus.transcribe(alice, MODEL, request, timeout=90))
    await asyncio.sleep(0.3)
    for token in ("", "0" * 32, request.cancel_token[:-1] + "x"):
        await mallory.publish(subjects.cancel("alice-1"), codec.encode(CancelTranscription(token=token)))
    event = BreakerChanged(model="forged-by-mallory", state="open")
    await mallory.publish(subjects.event("breaker", "forged-by-mallory"), msgspec.msgpack.encode(event))
    await mallory.flush()
    result = await pending
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    await asyncio.sleep(0.3)
    assert forged == []
    await watcher.close()


async def test_adding_and_removing_users_keeps_requests_in_flight(
    system,
    apps,
    jetstream: Nats,
    jfk: bytes,
    tmp_path: Path,
) -> None:
    alice, mallory, _ = apps
    long = jfk * 3
    pending = asyncio.create_task(
        bus.transcribe(alice, MODEL, TranscribeRequest(audio=long, filename="long.flac"), timeout=120)
    )
    await asyncio.sleep(0.5)
    await add_app(jetstream, "carol")  # a reload while alice waits
    store = UserStore(jetstream.server.store_dir)
    mallory.options["allow_reconnect"] = False  # closed by the server: it must end, not retry for ever
    store.remove("mallory")
    jetstream.server.reload()
    result = await pending
    assert "ask not what your country" in result.text.lower()
    for _ in range(50):  # the removed user's connection is closed by the server
        if not mallory.is_connected:
            break
        await asyncio.sleep(0.1)
    assert not mallory.is_connected
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            jetstream.url,
            user="mallory",
            password=jetstream.passwords["mallory"],
            allow_reconnect=False,
            connect_timeout=2,
        )
    carol = await connect(jetstream, "carol")
    assert carol.is_connected
    await carol.close()


async def test_no_actor_answers_or_acts_on_a_reply_subject_that_is_not_an_inbox(
    system, apps, jetstream: Nats, jfk: bytes
) -> None:
    """A request whose reply subject is, say, asr.lifecycle.stop would make the actor publish its answer there
    for the requester; a JetStream consumer pointed at a request subject redelivers events as requests."""
    alice, mallory, _ = apps
    await add_app(jetstream, "eve", "events")
    eve = await connect(jetstream, "eve")
    watcher = await jetstream.connect("admin")
    seen: list[str] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.subject)

    try:
        await bus.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="warm.flac"), timeout=90)
        await watcher.subscribe(subjects.LIFECYCLE_STOP, cb=on_msg)
        await watcher.flush()
        get = json.dumps({"id": MODEL}).encode()
        await mallory.publish(subjects.REGISTRY_GET, get, reply=subjects.LIFECYCLE_STOP, headers=JSON)
        await mallory.flush()
        # eve may follow events: she points a consumer of the event stream at asr.lifecycle.stop. Every event
        # carries `model`, which reads as StopServer{model}.
        await eve.jetstream().add_consumer(
            subjects.EVENTS_STREAM,
            ConsumerConfig(deliver_subject=subjects.LIFECYCLE_STOP, deliver_policy=DeliverPolicy.ALL),
        )
        await asyncio.sleep(1.5)
        assert len(seen) >= 2  # eve's redelivery reached asr.lifecycle.stop (under the events' own subjects)...
        status = await bus.request(watcher, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest(), timeout=10)
        assert [s.model for s in status.servers] == [MODEL], "...and no actor acted on it"
    finally:
        await eve.close()
        await watcher.close()
