"""Live transcription: OpenAI's Realtime transcription sessions through the whole stack, from the official `openai`
SDK's realtime client, a plain WebSocket speaking the beta shape, and an application on NATS."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import openai
import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from asrpro.pcm import read_pcm16
from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate, words

pytestmark = pytest.mark.e2e
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(
        tmp_path_factory.mktemp("realtime"),
        ASRPRO_REALTIME__MAX_SESSIONS="2",
        ASRPRO_REALTIME__IDLE_TIMEOUT="8",
        ASRPRO_REALTIME__SEND_QUEUE="64",
    )
    yield s
    assert s.stop() == 0


def _pcm(path: Path, rate: int = 24000, pad_s: float = 1.5) -> np.ndarray:
    """The recording as 16-bit mono at `rate`, with silence after it (the VAD's end of speech)."""
    speech = read_pcm16(path, rate)
    return np.concatenate([np.zeros(rate // 2, np.int16), speech, np.zeros(int(rate * pad_s), np.int16)])


def _chunks(pcm: np.ndarray, rate: int = 24000, ms: int = 100) -> list[str]:
    step = rate * ms // 1000
    return [base64.b64encode(pcm[i : i + step].astype("<i2").tobytes()).decode() for i in range(0, len(pcm), step)]


def _ulaw(pcm: np.ndarray) -> np.ndarray:
    """G.711 mu-law of 16-bit samples (the telephone's encoding), as bytes in an int16 array's clothing."""
    x = np.clip(pcm.astype(np.int32), -32635, 32635)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + 0x84
    exponent = np.floor(np.log2(np.maximum(x, 1))).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def _check_items(events: list[dict[str, Any]]) -> str:
    """Each item's deltas make the text of its completed transcript (the final decode: it may correct a word the
    partial decodes got wrong, which costs two edits when one word becomes two: "my" heard as "am I" in CI, 0.33 of a
    six-word item); the transcripts joined."""
    transcripts = []
    for done in [e for e in events if e["type"] == COMPLETED]:
        deltas = "".join(e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == done["item_id"])
        corrected = max(0.25, 2 / max(1, len(words(done["transcript"]))))  # a quarter, or one word corrected
        assert word_error_rate(done["transcript"], deltas) <= corrected, (deltas, done["transcript"])
        assert done["usage"]["type"] == "duration" and done["usage"]["seconds"] > 0
        transcripts.append(done["transcript"])
    return " ".join(transcripts)


def test_the_openai_sdk_transcribes_live_speech_with_server_vad(stack: Stack, shared_data: Path) -> None:
    async def run() -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(base_url=f"{stack.gateway}/v1", api_key="unused")
        events: list[dict[str, Any]] = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            created = await conn.recv()
            assert created.type == "session.created"
            await conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1", "language": "en"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                        }
                    },
                }
            )
            chunks = _chunks(_pcm(shared_data / "jfk.flac"))

            async def speak() -> None:
                for chunk in chunks:  # at real time, as a microphone sends it
                    await conn.input_audio_buffer.append(audio=chunk)
                    await asyncio.sleep(0.1)

            speaking = asyncio.ensure_future(speak())
            async for event in conn:
                events.append(event.model_dump(exclude_none=True))
                if speaking.done() and event.type == COMPLETED and _all_committed_done(events):
                    break
            await speaking
        return events

    events = asyncio.run(asyncio.wait_for(run(), 120))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session.updated"
    assert events[0]["session"]["audio"]["input"]["transcription"]["model"] == "whisper-tiny.en"
    assert kinds.count("input_audio_buffer.speech_started") == kinds.count("input_audio_buffer.committed") >= 2
    assert "input_audio_buffer.speech_stopped" in kinds
    text = _check_items(events)
    assert word_error_rate(JFK_TEXT, text) < 0.25, text
    assert any(e["type"] == DELTA for e in events), "no delta"


def _all_committed_done(events: list[dict[str, Any]]) -> bool:
    committed = {e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"}
    done = {e["item_id"] for e in events if e["type"] in (COMPLETED, DELTA.replace("delta", "failed"))}
    return bool(committed) and committed <= done


async def _beta_session(url: str, max_size: int | None = 2**20, **headers: str) -> Any:
    return await websockets.connect(
        url,
        additional_headers={"OpenAI-Beta": "realtime=v1", **headers},
        subprotocols=[Subprotocol("realtime")],
        max_size=max_size,
    )


async def _until(ws: Any, kind: str, seen: list[dict[str, Any]], timeout: float = 60) -> dict[str, Any]:
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        seen.append(event)
        if event["type"] == kind:
            return event


def test_a_plain_websocket_in_the_beta_shape_commits_itself_with_g711(stack: Stack, shared_data: Path) -> None:
    url = stack.gateway.replace("http", "ws") + "/v1/realtime?intent=transcription"

    async def run() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with await _beta_session(url) as ws:
            assert ws.subprotocol == "realtime"
            update = {
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": None,
            }
            unknown = {"input_audio_transcription": {"model": "no-such-model"}}
            await ws.send(json.dumps({"type": "transcription_session.update", "session": unknown}))
            await ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
            updated = await _until(ws, "transcription_session.updated", seen)
            assert updated["session"]["input_audio_format"] == "g711_ulaw"
            assert updated["session"]["turn_detection"] is None
            # Mistakes first: each an error event, the session still open.
            await ws.send("{not json")
            await ws.send(json.dumps({"type": "conversation.item.create", "event_id": "e1"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            ulaw = _ulaw(_pcm(shared_data / "jfk.flac", rate=8000, pad_s=0.2))
            for i in range(0, len(ulaw), 800):
                audio = base64.b64encode(ulaw[i : i + 800].tobytes()).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await _until(ws, COMPLETED, seen)
        return seen

    seen = asyncio.run(asyncio.wait_for(run(), 120))
    errors = [e["error"] for e in seen if e["type"] == "error"]
    assert [e["code"] for e in errors] == [
        "invalid_value",
        "invalid_json",
        "invalid_value",
        "invalid_value",
        "input_audio_buffer_commit_empty",
    ]
    assert "no-such-model" in errors[0]["message"]
    assert errors[0]["param"] == "session.input_audio_transcription.model"  # in the shape the client spoke
    assert errors[2]["event_id"] == "e1" and errors[2]["param"] == "type"
    assert word_error_rate(JFK_TEXT, _check_items(seen)) < 0.25


def test_audio_faster_than_real_time_is_all_heard_and_bad_settings_or_frames_get_errors(
    stack: Stack, shared_data: Path
) -> None:
    """A client pushing a file as fast as its socket goes (8,800 appends of 5 ms, far more than the bus holds for a
    session that has not taken them yet): every sample is heard — the gateway reads the next frame once the actor
    took the last. A frame larger than the bus carries, and a language the model lacks, get error events; the
    session goes on."""
    url = stack.gateway.replace("http", "ws") + "/v1/realtime?intent=transcription"
    jfk = read_pcm16(shared_data / "jfk.flac", 24000)
    pcm = np.concatenate([jfk] * 4)
    appends = [json.dumps({"type": "input_audio_buffer.append", "audio": chunk}) for chunk in _chunks(pcm, ms=5)]
    assert len(appends) > 8000

    async def run() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async with await _beta_session(url, max_size=None) as ws:
            update = {"input_audio_transcription": {"language": "fr"}, "turn_detection": None}
            await ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
            update = {"input_audio_transcription": {"language": "en"}, "turn_detection": None}
            await ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
            await _until(ws, "transcription_session.updated", seen)
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA" * 2_300_000}))  # 9.2 MB
            for append in appends:
                await ws.send(append)
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await _until(ws, COMPLETED, seen, timeout=120)
        return seen

    seen = asyncio.run(asyncio.wait_for(run(), 240))
    errors = [e["error"] for e in seen if e["type"] == "error"]
    assert [(e["code"], e["param"]) for e in errors] == [
        ("invalid_value", "session.input_audio_transcription.language"),
        ("input_audio_buffer_too_large", "audio"),
    ], errors
    [done] = [e for e in seen if e["type"] == COMPLETED]
    assert done["usage"]["seconds"] == pytest.approx(len(pcm) / 24000, abs=0.05)  # nothing lost on the way
    assert word_error_rate(" ".join([JFK_TEXT] * 4), done["transcript"]) < 0.25, done["transcript"]


def test_sessions_beyond_the_limit_are_refused_at_connect(stack: Stack) -> None:
    url = stack.gateway.replace("http", "ws") + "/v1/realtime?intent=transcription"

    async def run() -> dict[str, Any]:
        first, second = await _beta_session(url), await _beta_session(url)
        try:
            for ws in (first, second):
                assert json.loads(await ws.recv())["type"] == "transcription_session.created"
            # Counted where operators look (/api/ps, from the live actor's events).
            async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as http:
                for _ in range(50):
                    listed = (await http.get("/api/ps")).json()["live_sessions"]
                    if listed == {"whisper-tiny.en": 2}:
                        break
                    await asyncio.sleep(0.2)
            assert listed == {"whisper-tiny.en": 2}
            async with await _beta_session(url) as third:
                refused = json.loads(await asyncio.wait_for(third.recv(), 10))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(third.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            return refused
        finally:
            await first.close()
            await second.close()

    refused = asyncio.run(run())
    assert refused["type"] == "error"
    assert refused["error"]["code"] == "session_limit_reached"
    assert refused["error"]["type"] == "server_error"

    async def after() -> str:
        # The closed sessions freed their places.
        for _ in range(50):
            async with await _beta_session(url) as ws:
                event = json.loads(await ws.recv())
                if event["type"] != "error":
                    return str(event["type"])
            await asyncio.sleep(0.2)
        return "still refused"

    assert asyncio.run(after()) == "transcription_session.created"


def test_an_idle_session_is_closed_and_a_client_that_does_not_read_loses_its_session(stack: Stack) -> None:
    url = stack.gateway.replace("http", "ws") + "/v1/realtime?intent=transcription"

    async def idle() -> tuple[dict[str, Any], int | None]:
        async with await _beta_session(url) as ws:
            await ws.recv()  # created
            said = json.loads(await asyncio.wait_for(ws.recv(), 30))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return said, closed.value.rcvd.code if closed.value.rcvd else None

    said, _ = asyncio.run(idle())
    assert said["type"] == "error" and said["error"]["code"] == "session_idle_timeout"

    def flood() -> int | None:
        """A thousand bad events, each answered by an 8-kB error event (its event_id echoed) that this client never
        reads (a raw socket with a small receive buffer): the server's queue for it fills (realtime.send_queue = 64
        here) and the session is closed with code 1008. The server reads no more frames then (a send that stays
        blocked says so: what the kernel's buffers hold of the rest varies with the machine's load); then
        everything is read: the close frame comes last, sent once this client reads again."""
        protocol = ClientProtocol(parse_uri(url), max_size=None)
        host, port = url.split("//")[1].split("/")[0].split(":")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((host, int(port)))
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            while protocol.state is not State.OPEN:
                protocol.receive_data(sock.recv(4096))
                protocol.events_received()
            junk = json.dumps({"type": "no.such.event", "event_id": "x" * 8000})  # each error event repeats it
            sock.settimeout(15)
            for _ in range(1000):
                protocol.send_text(junk.encode())
                try:
                    sock.sendall(b"".join(protocol.data_to_send()))
                except TimeoutError:
                    break  # the server stopped reading: the session is closed
            else:
                time.sleep(12)
            sock.settimeout(30)
            while True:
                data = sock.recv(2**20)
                protocol.receive_data(data) if data else protocol.receive_eof()
                protocol.events_received()
                if not data or protocol.close_rcvd is not None:
                    return protocol.close_rcvd.code if protocol.close_rcvd else None

    assert flood() == 1008


def test_an_application_opens_a_session_over_nats_and_only_it_can_feed_it(stack: Stack, shared_data: Path) -> None:
    from framework import bus
    from schemas import codec
    from schemas.live import LiveEvent, LiveOpen

    async def run() -> list[dict[str, Any]]:
        nc = await nats.connect(
            stack.nats_url, user="client", password=stack.client_password, inbox_prefix="_INBOX.client"
        )
        events: list[dict[str, Any]] = []
        try:
            opening = LiveOpen(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
            replies = bus.stream_replies(
                nc, "asr.live.app.client.open", codec.encode(opening), timeout=120, what="live", silence=20
            )
            first = codec.decode((await anext(replies)).data, LiveEvent)
            assert first.event["type"] == "session.created"
            assert first.input.startswith("asr.live.app.client.in.")
            # Each event a request (docs/realtime.md): answered once the session took it, the flow control.
            for chunk in _chunks(_pcm(shared_data / "jfk.flac", pad_s=0.2)):
                await nc.request(
                    first.input, json.dumps({"type": "input_audio_buffer.append", "audio": chunk}).encode(), timeout=20
                )
            await nc.request(first.input, json.dumps({"type": "input_audio_buffer.commit"}).encode(), timeout=20)
            async for msg in replies:
                event = codec.decode(msg.data, LiveEvent).event
                events.append(event)
                if event["type"] == COMPLETED:
                    break
            # Another subject than its own is refused by the server: the application may not feed other sessions.
            errors: list[Exception] = []

            async def on_error(exc: Exception) -> None:
                errors.append(exc)

            spy = await nats.connect(
                stack.nats_url,
                user="client",
                password=stack.client_password,
                inbox_prefix="_INBOX.client",
                error_cb=on_error,
            )
            await spy.publish("asr.live.in.sess_anyone", b"{}")
            await spy.publish("asr.live.app.other.in.sess_anyone", b"{}")
            await spy.flush()
            await asyncio.sleep(0.5)
            await spy.close()
            assert sum("permissions violation" in str(e).lower() for e in errors) == 2, errors
        finally:
            await nc.close()
        return events

    events = asyncio.run(asyncio.wait_for(run(), 120))
    assert word_error_rate(JFK_TEXT, _check_items(events)) < 0.25
