"""The model proxy in memory: a warm request found in the watched records, streamed partial replies, progress,
validation before any work, and a failure reported to the lifecycle actor whatever it was."""

from __future__ import annotations

import msgspec
import pytest

from actors.proxy import ModelProxy
from actors.registry import catalogue
from framework.collaborators import worker_factory
from framework.config import node_name
from framework.memory_bus import MemoryBus
from schemas import codec, endpoints, subjects
from schemas import kv as kv_records
from schemas.errors import AsrError
from schemas.events import TranscriptionCompleted, TranscriptionFailed, TranscriptionStarted
from schemas.lifecycle import ServerStatus
from schemas.registry import ModelList
from schemas.transcribe import TranscribeRequest, TranscriptionDelta, TranscriptionProgress
from tests.unit.fakes import FakeModelServer, config

MODEL = "whisper-tiny.en"


async def start() -> tuple[MemoryBus, ModelProxy, FakeModelServer]:
    """A proxy on the in-memory bus, finding the catalogue and a ready server in the KV as it would on NATS."""
    cfg = config()
    bus = MemoryBus()
    listing = ModelList(models=list(catalogue(cfg).values()), default_model=MODEL)
    settings = await bus.kv(kv_records.CATALOGUE.bucket)
    await settings.put(kv_records.CATALOGUE.key(), kv_records.CATALOGUE.encode(listing))
    node = node_name(cfg)
    ready = ServerStatus(model=MODEL, state="ready", runtime="fake", url=f"http://{MODEL}.fake", node=node)
    servers_kv = await bus.kv(kv_records.SERVER.bucket)
    await servers_kv.put(kv_records.SERVER.key(node, MODEL), kv_records.SERVER.encode(ready))
    servers = FakeModelServer()
    proxy = worker_factory(ModelProxy, cfg, model_server=servers.client())
    await bus.start(proxy)
    return bus, proxy, servers


async def test_a_warm_request_is_one_round_trip_and_two_events() -> None:
    bus, _, servers = await start()
    result = await bus.request(endpoints.TRANSCRIBE.at("whisper-1"), TranscribeRequest(audio=b"RIFF", request_id="r1"))
    assert result.model == MODEL and result.text.startswith("part 0")
    assert [type(e) for e in bus.events] == [TranscriptionStarted, TranscriptionCompleted]  # no ensure was needed
    assert [r.url.path for r in servers.requests] == ["/transcribe"] and not bus.partials


async def test_a_streaming_requester_gets_partials_then_the_result_and_everyone_gets_progress() -> None:
    bus, _, _ = await start()
    progress: list[TranscriptionProgress] = []

    async def listen(subject: str, data: bytes, headers: dict[str, str]) -> None:
        progress.append(msgspec.msgpack.decode(data, type=TranscriptionProgress))

    bus.listeners.append((subjects.PROGRESS_ALL, listen))
    message = TranscribeRequest(audio=b"RIFF", request_id="s1", stream=True, filename="a.wav")
    result = await bus.request(endpoints.TRANSCRIBE.at(MODEL), message)
    opened, *deltas = [codec.decode(data, TranscriptionDelta) for _, data, headers in bus.partials]
    assert all(headers[codec.PARTIAL_HEADER] == "1" for _, _, headers in bus.partials)
    # First: admitted and the audio opened (a front door starts its stream on it), then each segment.
    assert (opened.text, opened.segment, opened.progress) == ("", None, 0.0)
    assert [d.text for d in deltas] == [
        " part 0 by whisper-tiny.en",
        " part 1 by whisper-tiny.en",
        " part 2 by whisper-tiny.en",
    ]
    assert [round(d.progress, 2) for d in deltas] == [0.33, 0.67, 1.0]
    assert "".join(d.text for d in deltas).strip() == result.text
    # At most every 0.5 s, and the end: the first segment and the final 1.0 here.
    assert [p.progress for p in progress][-1] == 1.0 and progress[0].filename == "a.wav"
    assert len(progress) <= 3


async def test_bad_requests_are_refused_before_any_work_and_reported() -> None:
    bus, _, servers = await start()
    for message, text in (
        (TranscribeRequest(audio=b"x", language="de"), "knows only en"),
        (TranscribeRequest(audio=b"x", task="translate"), "cannot translate"),
        (TranscribeRequest(audio=b"x", keep_alive="soon"), "not a duration"),
    ):
        with pytest.raises(AsrError, match=text) as err:
            await bus.request(endpoints.TRANSCRIBE.at(MODEL), message)
        assert err.value.code == "400"
    assert not servers.requests
    assert [type(e) for e in bus.events] == [TranscriptionFailed] * 3


async def test_an_unexpected_failure_is_still_reported_to_the_lifecycle_actor() -> None:
    bus, _, servers = await start()

    def boom(_: object) -> object:
        raise RuntimeError("kaput")

    servers.respond = boom  # type: ignore[assignment]
    with pytest.raises(AsrError) as err:
        await bus.request(endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=b"x", request_id="f1"))
    assert err.value.code == "500" and "kaput" in err.value.message
    failed = bus.events[-1]
    assert isinstance(failed, TranscriptionFailed) and failed.request_id == "f1"
