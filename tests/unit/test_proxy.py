"""The model proxy in memory: a warm request found in the watched records, streamed partial replies, progress,
validation before any work, and a failure reported to the lifecycle actor whatever it was."""

from __future__ import annotations

import msgspec
import pytest

from actors.proxy import ModelProxy
from actors.registry import catalogue
from framework.catalogue import Catalogue
from framework.collaborators import worker_factory
from framework.config import node_name
from framework.kv_view import KvView
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
    cfg = config()
    listing = ModelList(models=list(catalogue(cfg).values()), default_model=MODEL)
    server_records: KvView[ServerStatus] = KvView(kv_records.SERVER, ">")
    node = node_name(cfg)
    server_records.values[subjects.server_key(node, MODEL)] = ServerStatus(
        model=MODEL, state="ready", runtime="fake", url=f"http://{MODEL}.fake", node=node
    )
    servers = FakeModelServer()
    bus = MemoryBus()
    proxy = worker_factory(
        ModelProxy,
        cfg,
        catalogue=Catalogue(listing),
        model_server=servers.client(),
        server_records=server_records,
    )
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
    deltas = [codec.decode(data, TranscriptionDelta) for _, data, headers in bus.partials]
    assert all(headers[codec.PARTIAL_HEADER] == "1" for _, _, headers in bus.partials)
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
