"""Applications on the bus, as an attacker among them would try it: a second application (`mallory`, scope
transcribe) against the first (`alice`). It cannot read alice's replies or audio, overwrite or delete her
uploads, kill consumers, cancel her requests or forge events; adding and removing users (nats-server's config
reload) keeps requests in flight. Against a real nats-server with the rendered configuration."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from asrpro import client as asr_client
from asrpro.nats_users import UserStore
from framework import bus
from framework.config import node_name
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
    result = await asr_client.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="secret.flac"), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    await asyncio.sleep(0.5)
    assert stolen == []
    assert sum("permissions violation" in v for v in violations.seen) >= 4


async def test_applications_get_no_jetstream_so_the_server_publishes_nothing_for_them(
    system,
    apps,
    jfk: bytes,
    monkeypatch,
    jetstream: Nats,
) -> None:
    """nats-server answers a JetStream API request itself, unchecked, on the reply subject the requester names: a
    direct get of stored bytes with reply asr.events.breaker.<model> forged an event, with reply
    $KV.ASR_SERVERS.<model> redirected every transcription. Applications get no JetStream at all."""
    alice, mallory, violations = apps
    watcher = await jetstream.connect("admin")
    landed: list[str] = []

    async def on_msg(msg: Msg) -> None:
        landed.append(msg.subject)

    await watcher.subscribe("asr.events.>", cb=on_msg)
    await watcher.subscribe("$KV.>", cb=on_msg)
    await watcher.flush()
    gateway_bucket = f"OBJ_{subjects.audio_bucket('gateway')}"
    forged = msgspec.msgpack.encode(BreakerChanged(model=MODEL, state="open", retry_at=9e9))
    for subject, body in [
        (f"$O.{subjects.audio_bucket('mallory')}.C.x", forged),
        (f"$JS.API.DIRECT.GET.{gateway_bucket}.$O.x.C.y", b""),
        (f"$JS.API.STREAM.MSG.GET.{gateway_bucket}", b'{"seq": 1}'),
        (f"$JS.API.STREAM.INFO.{subjects.EVENTS_STREAM}", b""),
        (f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}", b'{"config": {"deliver_subject": "asr.lifecycle.stop"}}'),
        ("$JS.API.STREAM.NAMES", b""),
        ("$JS.API.INFO", b""),
        (f"$JS.API.STREAM.DELETE.{gateway_bucket}", b""),
        ("$KV.ASR_SERVERS.whisper-tiny.en", b"{}"),
    ]:
        await mallory.publish(subject, body, reply=subjects.event("breaker", MODEL))
    await mallory.flush()
    await asyncio.sleep(0.5)
    assert landed == [], f"published for mallory: {landed}"
    assert sum("permissions violation" in v for v in violations.seen) >= 9
    # Large audio from an application: a clear 413 that names the way (inline audio works as before).
    monkeypatch.setattr(alice, "_max_payload", 192 * 1024 + 1000)
    with pytest.raises(AsrError) as err:
        await asr_client.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="big.flac"), timeout=90)
    assert err.value.code == "413" and "HTTP gateway" in err.value.message
    monkeypatch.undo()
    result = await asr_client.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="jfk.flac"), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    await watcher.close()


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
    pending = asyncio.create_task(asr_client.transcribe(alice, MODEL, request, timeout=90))
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


async def test_mallory_cannot_use_the_proxies_node_subjects_nor_the_placement_claims(
    system,
    apps,
    jetstream: Nats,
    jfk: bytes,
) -> None:
    """asr.via.<node> (the gateway's way in) and asr.forward.<node> (proxy to proxy) are for the gateway and the
    proxies; the placement claims and the users/keys bucket are not an application's to write or read."""
    _, mallory, violations = apps
    node = node_name(make_config(jetstream, "admin"))
    request = codec.encode(TranscribeRequest(audio=jfk, filename="x.flac"))
    for subject in (
        endpoints.VIA.on(node).at(MODEL).subject,
        endpoints.FORWARD.on(node).at(MODEL).subject,
        f"$KV.{subjects.SERVERS_BUCKET}._placing.{MODEL}",
        "$JS.API.DIRECT.GET.KV_ASR_ACCESS.$KV.ASR_ACCESS.users",
    ):
        before = len(violations.seen)
        with pytest.raises(nats.errors.Error):  # refused: no responders reached, no reply comes
            await mallory.request(subject, request, timeout=2)
        await mallory.flush()
        for _ in range(20):
            if len(violations.seen) > before:
                break
            await asyncio.sleep(0.05)
        assert any(subject.lower() in v.lower() for v in violations.seen[before:]), (subject, violations.seen[before:])


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
        asr_client.transcribe(alice, MODEL, TranscribeRequest(audio=long, filename="long.flac"), timeout=120)
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
        await asr_client.transcribe(alice, MODEL, TranscribeRequest(audio=jfk, filename="warm.flac"), timeout=90)
        await watcher.subscribe(subjects.LIFECYCLE_STOP, cb=on_msg)
        await watcher.flush()
        get = json.dumps({"id": MODEL}).encode()
        await mallory.publish(subjects.REGISTRY_GET, get, reply=subjects.LIFECYCLE_STOP, headers=JSON)
        await mallory.flush()
        # eve follows events (live); she may not create JetStream consumers at all.
        with pytest.raises(nats.errors.Error):
            await eve.jetstream(timeout=1).add_consumer(
                subjects.EVENTS_STREAM,
                ConsumerConfig(deliver_subject=subjects.LIFECYCLE_STOP, deliver_policy=DeliverPolicy.ALL),
            )
        await asyncio.sleep(1.5)
        assert seen == []  # nothing reached asr.lifecycle.stop...
        status = await bus.request(watcher, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest(), timeout=10)
        assert [s.model for s in status.servers] == [MODEL], "...and no actor acted on it"
    finally:
        await eve.close()
        await watcher.close()


async def test_a_client_connected_without_its_inbox_prefix_is_told_which_at_once(apps, jetstream: Nats) -> None:
    """nats-server refuses the subscription to _INBOX.> asynchronously (nats-py reports it to the error callback
    only): the client library says what to do instead of waiting for a reply that cannot arrive."""
    plain = await nats.connect(jetstream.url, user="alice", password=jetstream.passwords["alice"])  # no inbox_prefix
    try:
        started = time.monotonic()
        with pytest.raises(AsrError) as err:
            await asr_client.transcribe(plain, MODEL, TranscribeRequest(audio=b"RIFF", filename="a.wav"), timeout=30)
        assert err.value.code == "400" and 'inbox_prefix="_INBOX.alice"' in err.value.message
        assert time.monotonic() - started < 10  # told at once, not after the 30-s timeout
    finally:
        await plain.close()
