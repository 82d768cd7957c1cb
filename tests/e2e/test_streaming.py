"""Streamed transcriptions (OpenAI's SSE over HTTP, partial replies over NATS), progress, and cancellation."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import nats
import openai
import pytest
import websockets
from nats.aio.msg import Msg

from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
MODEL = "whisper-tiny.en"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # One request at a time on the model: a cancelled request must free the only slot.
    s = start_stack(tmp_path_factory.mktemp("streaming"), ASRPRO_MODELS__WHISPER_TINY_EN__MAX_PARALLEL="1")
    yield s
    assert s.stop() == 0


SENTENCES = [
    "The library opens at nine in the morning and closes at six in the evening.",
    "Our train was delayed by twenty minutes because of a signal failure near the station.",
    "She planted tomatoes, peppers and three kinds of basil in the garden behind the house.",
    "The committee will publish its final report on the second of March next year.",
    "Please turn off the lights and lock the back door before you leave the office.",
    "A warm front is expected to bring light rain to the northern coast by tomorrow night.",
    "He repaired the old bicycle with a new chain, two tires and a brighter lamp.",
    "The museum is showing paintings from the early nineteenth century until the end of June.",
    "Children under twelve travel for free when they are accompanied by an adult.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Engineers tested the bridge for a whole week before it was opened to traffic.",
    "We watched the sunset from the top of the hill while the city lights came on.",
    "The orchestra rehearsed the symphony twice before the concert on Saturday evening.",
    "Remember to water the plants on the balcony while we are away on holiday.",
]


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About a minute of synthesised speech with no repetition (so that decoding at temperature 0 settles and
    a streamed and an unstreamed run decode the same), several 30-s windows of decoding."""
    tmp = tmp_path_factory.mktemp("long")
    parts = []
    for i, sentence in enumerate(SENTENCES):
        raw = tmp / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), sentence], check=True)
        parts.append(str(raw))
    out = tmp / "long.wav"
    subprocess.run(["sox", *parts, "-r", "16000", "-c", "1", str(out)], check=True)
    duration = float(subprocess.run(["soxi", "-D", str(out)], capture_output=True, text=True, check=True).stdout)
    assert duration >= 40, duration
    return out.read_bytes()


@pytest.fixture(scope="module")
def oai(stack: Stack, shared_data: Path) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="unused", max_retries=0, timeout=300)
    with (shared_data / "jfk.flac").open("rb") as fh:  # warm: the model server is up before the timing tests
        client.audio.transcriptions.create(model=MODEL, file=fh)
    return client


def test_the_openai_client_streams_deltas_then_done(oai: openai.OpenAI, long_audio: bytes) -> None:
    t0 = time.monotonic()
    seen: list[tuple[float, str, str]] = []
    for event in oai.audio.transcriptions.create(model=MODEL, file=("long.wav", long_audio), stream=True):
        text = str(getattr(event, "delta", None) or getattr(event, "text", ""))
        seen.append((time.monotonic() - t0, str(event.type), text))
    deltas = [s for s in seen if s[1] == "transcript.text.delta"]
    done = [s for s in seen if s[1] == "transcript.text.done"]
    assert len(deltas) >= 3 and len(done) == 1 and seen[-1] == done[0]
    assert deltas[0][0] < 0.7 * done[0][0], f"the first text came late: {deltas[0][0]:.1f} s of {done[0][0]:.1f} s"
    whole = oai.audio.transcriptions.create(model=MODEL, file=("long.wav", long_audio))
    assert done[0][2] == whole.text
    assert word_error_rate(" ".join(d[2] for d in deltas), whole.text) < 0.05
    assert word_error_rate(" ".join(SENTENCES), whole.text) < 0.25


def test_streaming_goes_with_json_or_text_only(stack: Stack, shared_data: Path) -> None:
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        data={"stream": "true", "response_format": "srt"},
    )
    assert (
        reply.status_code == 400 and "stream=true goes with response_format json, text or diarized_json" in reply.text
    )


def test_a_stream_that_cannot_start_is_an_http_error_before_any_event(oai: openai.OpenAI, stack: Stack) -> None:
    """The gateway decodes no audio: it answers 200 and starts the stream only once the proxy's first partial says
    the request was admitted and its audio opened. Before that, an error is a status the SDK raises at once."""
    with pytest.raises(openai.BadRequestError, match="could not decode audio") as bad:
        oai.audio.transcriptions.create(model=MODEL, file=("x.wav", b"not audio at all" * 100), stream=True)
    assert (bad.value.status_code, bad.value.code, bad.value.param) == (400, "unsupported_audio", "file")
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.audio.transcriptions.create(model="whisper-huge", file=("x.wav", b"RIFF"), stream=True)
    assert unknown.value.code == "model_not_found"
    reply = httpx.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("x.wav", b"not audio at all" * 100)},
        data={"stream": "true", "model": MODEL},
        timeout=60,
    )
    assert reply.status_code == 400 and reply.headers["content-type"].startswith("application/json")


async def test_a_plain_nats_client_streams_or_not(stack: Stack, shared_data: Path) -> None:
    nc = await nats.connect(stack.nats_url, user="client", password=stack.client_password, inbox_prefix="_INBOX.client")
    body = {"audio": base64.b64encode((shared_data / "jfk.flac").read_bytes()).decode(), "filename": "jfk.flac"}
    json_headers = {"Content-Type": "application/json"}
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        streamed = json.dumps({**body, "stream": True}).encode()
        await nc.publish(f"asr.transcribe.{MODEL}", streamed, reply=inbox, headers=json_headers)
        partials, final = [], None
        while final is None:
            msg = await sub.next_msg(timeout=60)
            if msg.headers and msg.headers.get("Asr-Partial"):
                partials.append(json.loads(msg.data))
            else:
                final = json.loads(msg.data)
        # The first partial: admitted, the audio opened (no text yet); then one per decoded segment.
        opened, *partials = partials
        assert (opened["text"], opened.get("segment"), opened["progress"]) == ("", None, 0.0)
        assert partials and all(p["model"] == MODEL and 0 < p["progress"] <= 1 for p in partials)
        assert "".join(p["text"] for p in partials).strip() == final["text"]
        # Without stream: exactly one reply, as before.
        reply = await nc.request(f"asr.transcribe.{MODEL}", json.dumps(body).encode(), headers=json_headers, timeout=60)
        assert not (reply.headers or {}).get("Asr-Partial") and json.loads(reply.data)["text"] == final["text"]
    finally:
        await nc.close()


async def test_progress_is_published_for_every_request(stack: Stack, long_audio: bytes) -> None:
    nc = await nats.connect(stack.nats_url, user="client", password=stack.client_password, inbox_prefix="_INBOX.client")
    reports: list[dict[str, object]] = []

    async def on_msg(msg: Msg) -> None:
        reports.append(msgspec.msgpack.decode(msg.data))

    await nc.subscribe("asr.progress.>", cb=on_msg)
    await nc.flush()
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            reply = await http.post(
                f"{stack.gateway}/v1/audio/transcriptions",
                files={"file": ("long.wav", long_audio)},
                headers={"X-Request-Id": "progress-1"},
            )
        assert reply.status_code == 200
        await asyncio.sleep(0.3)
    finally:
        await nc.close()
    mine = [r for r in reports if r["request_id"] == "progress-1"]
    assert len(mine) >= 2 and mine[-1]["progress"] == 1.0 and mine[-1]["filename"] == "long.wav"
    fractions = [float(r["progress"]) for r in mine]  # type: ignore[arg-type]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1


async def test_the_websocket_shows_transcription_progress(stack: Stack, shared_data: Path) -> None:
    ws_url = stack.gateway.replace("http://", "ws://") + "/ws"
    async with websockets.connect(ws_url) as ws:
        await ws.recv()  # system_status
        async with httpx.AsyncClient(timeout=120) as http:
            await http.post(
                f"{stack.gateway}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
            )
        for _ in range(50):
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "transcription_progress":
                data = message["data"]
                assert data["filename"] == "jfk.flac" and isinstance(data["progress"], int)
                assert 0 <= data["progress"] <= 100 and data["status"] == "transcribing"
                return
    pytest.fail("no transcription_progress on /ws")


def test_a_client_that_goes_away_mid_stream_frees_the_slot(stack: Stack, long_audio: bytes, shared_data: Path) -> None:
    # The stream of a long file is abandoned after its first delta; the next request, which can only run once
    # the only slot is free, does not wait for the rest of the long decode.
    with httpx.Client(timeout=300) as http:
        t0 = time.monotonic()
        with http.stream(
            "POST",
            f"{stack.gateway}/v1/audio/transcriptions",
            files={"file": ("long.wav", long_audio)},
            data={"stream": "true"},
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data:") and "transcript.text.delta" in line:
                    break
        first = time.monotonic() - t0
        t1 = time.monotonic()
        reply = http.post(
            f"{stack.gateway}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", (shared_data / "jfk.flac").read_bytes())},
        )
        waited = time.monotonic() - t1
    assert reply.status_code == 200
    # The whole long decode takes about three times the first window; the next request waits at most the window
    # under way when the client left.
    assert waited < 1.5 * first + 3, f"the next request waited {waited:.1f} s (first delta after {first:.1f} s)"


async def test_a_nats_requester_can_cancel(stack: Stack, long_audio: bytes) -> None:
    nc = await nats.connect(stack.nats_url, user="client", password=stack.client_password, inbox_prefix="_INBOX.client")
    try:
        body = {
            "audio": base64.b64encode(long_audio).decode(),
            "filename": "long.wav",
            "request_id": "cancel-me",
            "cancel_token": "only-i-know-this",  # a cancel must carry it: others may guess the request id
        }
        request = asyncio.ensure_future(
            nc.request(
                f"asr.transcribe.{MODEL}",
                json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                timeout=120,
            )
        )
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        cancel = b'{"reason": "changed my mind", "token": "only-i-know-this"}'
        await nc.publish("asr.cancel.cancel-me", cancel, headers={"Content-Type": "application/json"})
        reply = await request
        assert time.monotonic() - t0 < 10
        assert reply.headers is not None and reply.headers["Nats-Service-Error-Code"] == "499"
        assert "cancelled" in json.loads(reply.data)["message"]
    finally:
        await nc.close()


def test_server_sent_events_show_progress_when_asked(stack: Stack, shared_data: Path) -> None:
    seen: list[str] = []
    ready = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"{stack.gateway}/v1/events?progress=true&model={MODEL}", timeout=15) as response:
            ready.set()
            for line in response.iter_lines():
                seen.append(line)
                if line.startswith("data:") and len(seen) > 1 and seen[-2] == "event: progress":
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert ready.wait(10)
    time.sleep(0.3)  # the subscriptions are made before the response starts; a margin for the server's side
    jfk = (shared_data / "jfk.flac").read_bytes()
    assert httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", jfk)}).status_code == 200
    reader.join(15)
    assert "event: progress" in seen, seen[-10:]
    data = json.loads(seen[seen.index("event: progress") + 1].removeprefix("data: "))
    assert data["model"] == MODEL and 0 < data["progress"] <= 1 and data["filename"] == "jfk.flac"
