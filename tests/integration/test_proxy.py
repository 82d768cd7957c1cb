"""Audio sent straight to asr.transcribe.<model> by a plain NATS client (the `client` user)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from asrpro import client as asr_client
from framework import bus
from schemas import codec, endpoints, subjects
from schemas.errors import AsrError
from schemas.lifecycle import LifecycleStatusRequest
from schemas.metrics import SnapshotRequest
from schemas.transcribe import TranscribeRequest, TranscriptionResult
from tests.conftest import JFK_TEXT
from tests.wer import word_error_rate

MODEL = "whisper-tiny.en"


@pytest.fixture(scope="session")
def long_audio(shared_data: Path, tmp_path_factory) -> bytes:
    """jfk.flac four times over (44 s): long enough to kill its server mid-request."""
    out = tmp_path_factory.mktemp("audio") / "jfk4.wav"
    src = str(shared_data / "jfk.flac")
    subprocess.run(["sox", src, src, src, src, "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    return out.read_bytes()


async def test_plain_nats_client_transcribes_msgpack(system, client: Client, jfk: bytes) -> None:
    request = TranscribeRequest(audio=jfk, filename="jfk.flac", response_format="srt")
    reply = await client.request(subjects.transcribe(MODEL), msgspec.msgpack.encode(request), timeout=90)
    result = msgspec.msgpack.decode(reply.data, type=TranscriptionResult)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    assert result.model == MODEL and abs(result.duration - 11.0) < 0.1 and result.segments
    assert result.formatted and "-->" in result.formatted
    assert result.timing.total_s > 0 and result.timing.rtf > 0


async def test_plain_nats_client_transcribes_json(system, client: Client, jfk: bytes) -> None:
    """What a client in another language sends: JSON with the audio in base64, to the OpenAI alias."""
    body = json.dumps({"audio": base64.b64encode(jfk).decode(), "filename": "jfk.flac", "response_format": "text"})
    reply = await client.request(
        subjects.transcribe("whisper-1"), body.encode(), headers={"Content-Type": "application/json"}, timeout=90
    )
    result = json.loads(reply.data)
    assert word_error_rate(JFK_TEXT, result["formatted"]) <= 0.1
    assert result["model"] == MODEL


async def test_large_audio_goes_through_the_object_store(
    system, client: Client, jfk: bytes, monkeypatch, jetstream
) -> None:
    # Pretend the server's limit is tiny so the jfk recording must take the object-store path. Only the gateway
    # has a bucket: an application is told to use the gateway.
    for nc in (client,):
        monkeypatch.setattr(nc, "_max_payload", 192 * 1024 + 1000)
        with pytest.raises(AsrError) as err:
            await asr_client.transcribe(nc, MODEL, TranscribeRequest(audio=jfk, filename="jfk.flac"), timeout=90)
        assert err.value.code == "413" and "HTTP gateway" in err.value.message
    gateway = await jetstream.connect("gateway")
    monkeypatch.setattr(gateway, "_max_payload", 192 * 1024 + 1000)  # still fits a 128 KiB chunk
    try:
        result = await asr_client.transcribe(
            gateway, MODEL, TranscribeRequest(audio=jfk, filename="jfk.flac"), timeout=90
        )
    finally:
        await gateway.close()
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    admin = await jetstream.connect("admin")  # listing a bucket is not the client user's business
    try:
        store = await admin.jetstream().object_store(subjects.audio_bucket("gateway"))
        for _ in range(100):  # up to ~10 s: the proxy deletes the upload once it has read it
            try:
                left = [o for o in await store.list(ignore_deletes=True) if o.name.endswith("jfk.flac")]
            except Exception:  # nats-py raises NotFoundError for an empty bucket
                left = []
            if not left:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the uploaded audio was not deleted from the object store")
    finally:
        await admin.close()


async def test_audio_ref_that_does_not_exist_is_a_clear_error(system, client: Client) -> None:
    with pytest.raises(AsrError) as err:
        await bus.request(
            client,
            endpoints.TRANSCRIBE.at(MODEL),
            TranscribeRequest(audio_ref="nope", audio_bucket="ASR_AUDIO_gateway"),
        )
    assert err.value.code == "400" and "audio_ref 'nope' not found" in err.value.message
    with pytest.raises(AsrError) as err:  # a bucket that is no one's audio bucket is not read at all
        await bus.request(
            client,
            endpoints.TRANSCRIBE.at(MODEL),
            TranscribeRequest(audio_ref="catalogue", audio_bucket="ASR_SETTINGS"),
        )
    assert err.value.code == "400" and "audio_bucket" in err.value.message


async def test_bad_input_gets_clear_errors_and_proxy_keeps_serving(system, client: Client, jfk: bytes) -> None:
    cases = [
        (TranscribeRequest(audio=b""), "400", "empty"),
        (TranscribeRequest(audio=b"this is not audio at all", filename="notes.wav"), "400", "could not decode audio"),
        # An invalid format on purpose: the proxy must refuse it.
        (TranscribeRequest(audio=jfk, response_format="docx"), "400", "'docx' - at `$.response_format`"),  # type: ignore[arg-type]
    ]
    for request, code, text in cases:
        with pytest.raises(AsrError) as err:
            await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), request, timeout=90)
        assert err.value.code == code and text in err.value.message, err.value.message
    reply = await client.request(subjects.transcribe(MODEL), b"\x00garbage", timeout=10)
    assert reply.headers is not None
    assert reply.headers[codec.ERROR_CODE_HEADER] == "400"
    result = await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=jfk), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1


async def test_killed_server_next_request_still_succeeds(system, client: Client, jfk: bytes, jetstream) -> None:
    first = await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=jfk), timeout=90)
    status = await bus.request(client, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    pid = status.servers[0].pid
    assert pid and first.text
    os.kill(pid, signal.SIGKILL)
    result = await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=jfk), timeout=90)
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1
    status = await bus.request(client, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    assert status.servers[0].pid != pid


async def test_server_killed_mid_request_is_retried(system, client: Client, long_audio: bytes, events) -> None:
    log = await events(MODEL)
    warm = TranscribeRequest(audio=long_audio[:100_000], filename="warm.wav")
    await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), warm, timeout=90)
    status = await bus.request(client, endpoints.LIFECYCLE_STATUS, LifecycleStatusRequest())
    pid = status.servers[0].pid
    assert pid is not None
    request = TranscribeRequest(audio=long_audio, filename="jfk4.wav")
    pending = asyncio.ensure_future(asr_client.transcribe(client, MODEL, request, timeout=120))
    # The proxy announces it just before it forwards the audio to the (warm) server: from then on the kill
    # lands mid-request. (A kill before it would test the next request after a crash instead.)
    await log.wait_for("transcribing", count=2)
    assert not pending.done(), "the request finished before the kill: make the audio longer"
    os.kill(pid, signal.SIGKILL)
    result = await pending
    assert abs(result.duration - 44.0) < 0.5 and result.text.lower().count("fellow americans") >= 3
    await log.wait_for("crashed")


async def test_metrics_count_requests_through_the_proxy(system, client: Client, jfk: bytes, jetstream) -> None:
    await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=jfk), timeout=90)
    with pytest.raises(AsrError):
        await bus.request(client, endpoints.TRANSCRIBE.at(MODEL), TranscribeRequest(audio=b"x"))
    gateway = await jetstream.connect("gateway")
    try:
        for _ in range(200):  # up to ~10 s: the events reach metrics through the JetStream stream
            snap = await bus.request(gateway, endpoints.METRICS_SNAPSHOT, SnapshotRequest())
            counters = snap.models.get(MODEL)
            if counters and counters.requests >= 2:
                break
            await asyncio.sleep(0.05)
        assert counters is not None
        assert (counters.requests, counters.client_errors, counters.errors) == (2, 1, 0)  # b"x" is the client's fault
        assert (counters.starts, counters.ready, counters.cancelled) == (1, 1, 0)
        assert counters.audio_seconds == pytest.approx(11.0, abs=0.1)
    finally:
        await gateway.close()


async def test_a_checkpointed_job_decode_cut_short_resumes_from_its_checkpoint(
    system, client: Client, long_audio: bytes
) -> None:
    """The durable jobs' decode through the real proxy and model server: cut short after its first checkpoint (the
    worker decoding it killed), then resumed from it with `offset`: only the rest is decoded again, and the text
    reads as the uninterrupted decode's."""
    from actors.jobs.checkpoints import decode_with_checkpoints
    from schemas.jobs import JobCheckpoint

    request = TranscribeRequest(audio=long_audio, filename="jfk4.wav", response_format="verbose_json")

    def decode(message: TranscribeRequest):
        return asr_client.transcribe_stream(client, MODEL, message, timeout=120)

    async def ignore(_: JobCheckpoint) -> None:
        return None

    whole = await decode_with_checkpoints(request, None, decode, ignore, every_s=10.0)
    saved: list[JobCheckpoint] = []

    class Killed(Exception):
        pass

    async def save(checkpoint: JobCheckpoint) -> None:
        saved.append(checkpoint)
        if len(saved) == 1:
            raise Killed  # the worker dies right after its first checkpoint is stored

    with pytest.raises(Killed):
        await decode_with_checkpoints(request, None, decode, save, every_s=10.0)
    first = saved[0]
    assert 10.0 <= first.seek <= 30.0 and first.segments  # where the decode's first 30-s window ended
    offsets: list[float] = []

    def resumed_decode(message: TranscribeRequest):
        offsets.append(message.offset)
        return decode(message)

    result = await decode_with_checkpoints(request, first, resumed_decode, ignore, every_s=10.0)
    assert offsets == [first.seek]
    assert abs(result.duration - 44.0) < 0.5 and result.segments[0].start == whole.segments[0].start
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    # What was checkpointed stays as it was; the rest is decoded from the checkpoint on, once.
    kept = len(first.segments)
    assert [s.text for s in result.segments[:kept]] == [s.text for s in first.segments]
    assert all(s.start >= first.seek - 0.01 for s in result.segments[kept:])
    # Not word for word the uninterrupted decode's: two decodes of this audio by tiny.en differ by themselves (their
    # first words: "And so" or "So,"; a temperature fallback samples). A resume that repeated or skipped a 30-s
    # window would add or lose two of its four sentences: the word count says so.
    ratio = len(result.text.split()) / len(whole.text.split())
    assert 0.85 <= ratio <= 1.15, (whole.text, result.text)
    assert word_error_rate(whole.text, result.text) <= 0.3, (whole.text, result.text)
