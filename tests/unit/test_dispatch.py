"""Typed dispatch: entrypoints are checked against the contract when the class is defined, requests and events
reach a handler only with the types it declared, and every failure is an error reply (never a dead actor)."""

from __future__ import annotations

import msgspec
import pytest

from framework import bus
from framework.actor import Actor, EndpointSpec, endpoint, entrypoints, on_event
from framework.memory_bus import MemoryBus
from schemas import codec, endpoints
from schemas.errors import AsrError, ErrorCode
from schemas.events import EVENT_TYPES, BreakerChanged, Event, ServerCrashed, ServerReady, ServerUnhealthy, subject_of
from schemas.gpu import GpuStatusRequest
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList
from schemas.subjects import matches
from tests.unit.fakes import config


class Echo(Actor):
    name = "echo"

    def __init__(self) -> None:
        super().__init__(config())
        self.failures: list[ServerCrashed | ServerUnhealthy] = []
        self.everything: list[Event] = []

    @endpoint(endpoints.REGISTRY_GET)
    async def get(self, msg: GetModel) -> ModelInfo:
        if msg.id == "boom":
            raise RuntimeError("kaput")
        if msg.id == "missing":
            raise AsrError("404", "no such model")
        return ModelInfo(id=msg.id, name=msg.id, family="whisper", size="", engine="faster-whisper")

    @on_event(ServerCrashed, ServerUnhealthy)
    async def failed(self, event: ServerCrashed | ServerUnhealthy) -> None:
        self.failures.append(event)

    @on_event(*EVENT_TYPES)
    async def seen(self, event: Event) -> None:
        self.everything.append(event)


async def served() -> tuple[MemoryBus, Echo]:
    memory = MemoryBus()
    echo = Echo()
    await memory.start(echo)
    return memory, echo


def test_an_endpoint_must_take_what_its_subject_carries() -> None:
    with pytest.raises(TypeError, match="must take GetModel"):

        class Wrong(Actor):
            @endpoint(endpoints.REGISTRY_GET)
            async def get(self, msg: ListModels) -> ModelInfo:
                raise NotImplementedError


def test_an_endpoint_must_return_its_subjects_reply() -> None:
    with pytest.raises(TypeError, match="must return ModelInfo"):

        class Wrong(Actor):
            @endpoint(endpoints.REGISTRY_GET)
            async def get(self, msg: GetModel) -> ModelList:
                raise NotImplementedError


def test_on_event_takes_event_types_only_and_the_annotation_must_accept_them() -> None:
    with pytest.raises(TypeError, match="not event types"):
        on_event(GetModel)  # type: ignore[arg-type]  # not an event type, on purpose
    with pytest.raises(TypeError, match="is annotated"):

        class Wrong(Actor):
            @on_event(ServerCrashed, ServerReady)
            async def seen(self, event: ServerCrashed) -> None: ...


def test_event_subjects_come_from_the_tags() -> None:
    assert subject_of(ServerCrashed) == "asr.events.crashed.>"
    assert subject_of(BreakerChanged, "whisper-tiny.en") == "asr.events.breaker.whisper-tiny.en"


async def test_request_reply_with_the_declared_types() -> None:
    memory, _ = await served()
    model = await memory.request(endpoints.REGISTRY_GET, GetModel(id="whisper-base"))
    assert isinstance(model, ModelInfo) and model.id == "whisper-base"


async def test_errors_become_replies_with_their_code() -> None:
    memory, _ = await served()
    with pytest.raises(AsrError) as err:
        await memory.request(endpoints.REGISTRY_GET, GetModel(id="missing"))
    assert (err.value.code, err.value.message, err.value.kind) == ("404", "no such model", "not_found")
    with pytest.raises(AsrError) as err:
        await memory.request(endpoints.REGISTRY_GET, GetModel(id="boom"))
    assert err.value.code == "500" and "kaput" in err.value.message


async def test_malformed_and_hostile_requests_get_400_json_asked_gets_json() -> None:
    _, echo = await served()
    spec = next(s for _, s in entrypoints(echo) if isinstance(s, EndpointSpec))
    deep = 100_000
    hostile = [
        (b"\xc1garbage", {}),
        (msgspec.msgpack.encode({"id": 5}), {}),
        # An extra field nested very deeply, msgpack and JSON: refused, not a RecursionError (500).
        (b"\x82\xa2id\xa1x\xa5extra" + b"\x91" * deep + b"\x00", {}),
        (b'{"id": "x", "extra": ' + b"[" * deep + b"]" * deep + b"}", {codec.CONTENT_TYPE: codec.JSON}),
    ]
    for data, headers_in in hostile:
        reply, headers = await echo.dispatch(echo.get, spec, "asr.registry.get", data, headers_in)
        assert headers[codec.ERROR_CODE_HEADER] == "400", (data[:20], headers)
        with pytest.raises(AsrError):
            bus.decode_reply(endpoints.REGISTRY_GET, headers, reply)
    json_headers = {codec.CONTENT_TYPE: codec.JSON}
    reply, headers = await echo.dispatch(echo.get, spec, "asr.registry.get", b'{"id": "x"}', json_headers)
    assert headers[codec.CONTENT_TYPE] == codec.JSON and msgspec.json.decode(reply)["id"] == "x"


async def test_events_reach_only_the_handlers_of_their_type() -> None:
    memory, echo = await served()
    await echo.publish(ServerCrashed(model="m", runtime="local", reason="SIGKILL"))
    await echo.publish(ServerReady(model="m", runtime="local", url="u"))
    # A message of the wrong type on a subject is dropped, not handed to a handler that did not ask for it.
    await memory.publish("asr.events.crashed.m", codec.encode(ServerReady(model="m", runtime="local", url="u")))
    await memory.publish("asr.events.crashed.m", b"\xc1not an event")
    assert [type(e) for e in echo.failures] == [ServerCrashed]
    # ... nor to any other: a payload whose type is not its subject's is a forgery (or a mistake).
    assert [type(e) for e in echo.everything] == [ServerCrashed, ServerReady]
    assert echo.failures[0].source == echo.instance


async def test_no_responders_is_a_clear_503() -> None:
    memory = MemoryBus()
    with pytest.raises(AsrError) as err:
        await memory.request(endpoints.GPU_STATUS, GpuStatusRequest())
    assert err.value.code == "503" and err.value.kind == ErrorCode.NO_RESPONDERS


def test_subject_matching() -> None:
    assert matches("asr.transcribe.>", "asr.transcribe.whisper-tiny.en")
    assert not matches("asr.transcribe.>", "asr.transcribe")
    assert matches("asr.events.*.m", "asr.events.ready.m") and not matches("asr.events.*.m", "asr.events.ready.n")
    assert endpoints.TRANSCRIBE.at("whisper-tiny.en").subject == "asr.transcribe.whisper-tiny.en"
    with pytest.raises(ValueError):
        endpoints.GPU_STATUS.at("x")


def test_numbers_are_bounded_at_the_schema_so_nats_and_http_agree() -> None:
    from schemas.lifecycle import EnsureServer
    from schemas.transcribe import TranscribeRequest

    for bad in ({"temperature": float("nan")}, {"temperature": 2.0}, {"timeout": float("inf")}, {"timeout": -1.0}):
        with pytest.raises(codec.DecodeError):
            codec.decode(msgspec.msgpack.encode(bad), TranscribeRequest)
    for bad_ensure in ({"model": "m", "keep_alive": float("inf")}, {"model": "m", "keep_alive": 1e12}):
        with pytest.raises(codec.DecodeError):
            codec.decode(msgspec.msgpack.encode(bad_ensure), EnsureServer)
    assert codec.decode(msgspec.msgpack.encode({"temperature": 0.2, "timeout": 30.0}), TranscribeRequest).timeout == 30
