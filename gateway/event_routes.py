"""The lifecycle event stream for browsers and dashboards: Server-Sent Events with replay from the
JetStream stream ASR_EVENTS, and asrpro's frontend WebSocket protocol ({type, data} messages)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Header, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from framework import bus
from gateway.connection import Connection, GatewayConnection
from gateway.status import system_status
from schemas import codec, errors, subjects
from schemas.errors import AsrError
from schemas.events import (
    Event,
    ServerCrashed,
    ServerFailed,
    ServerReady,
    ServerStarting,
    ServerStopped,
    TranscriptionCompleted,
    TranscriptionFailed,
    decode_event,
    kind,
)
from schemas.transcribe import TranscriptionProgress

router = APIRouter()
HEARTBEAT_S = 15.0
RETRY_MS = 2000  # how soon a browser's EventSource reconnects (it then sends Last-Event-ID and gets the gap)

# Events as asrpro's frontend names them.
FRONTEND_TYPES = {
    "starting": "container_status",
    "ready": "container_status",
    "stopped": "container_status",
    "failed": "container_status",
    "crashed": "container_status",
    "transcribing": "transcription_started",
    "transcribed": "transcription_completed",
    "transcription_failed": "transcription_error",
    "default_changed": "system_status",
}


# An integer `since` below this is a stream sequence, above it Unix seconds (2001-09-09 onwards): the stream
# keeps at most nats.events_max_msgs events, far fewer than a billion, so the two never meet.
SECONDS_FROM = 1_000_000_000


def replay_config(since: str | None, since_seq: int | None = None) -> ConsumerConfig:
    """`since_seq` is a stream sequence; `since` a sequence (an integer below SECONDS_FROM; 0 = from the start)
    or a time (Unix seconds, or ISO 8601); neither: live only."""
    if since_seq is not None:
        since = str(since_seq)
    if since is None:
        return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    bad = AsrError(
        errors.BAD_REQUEST, f"since={since[:40]!r}: give a sequence number, Unix seconds or an ISO 8601 time"
    )
    try:
        seq = int(since)
    except ValueError:
        pass
    else:
        if not 0 <= seq < 2**63:
            raise bad
        try:
            if seq >= SECONDS_FROM and since_seq is None:
                when = datetime.fromtimestamp(seq, UTC)
                return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=when)
        except (OverflowError, OSError, ValueError):  # beyond the years a datetime can hold
            raise bad from None
        if seq <= 1:
            return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq)
    try:
        when = datetime.fromtimestamp(float(since), UTC)
    except (OverflowError, OSError, ValueError):
        try:
            when = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise bad from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=when)


def _after(last_event_id: str) -> int:
    """The stream sequence after the last event a reader saw (`id:` is the sequence)."""
    try:
        seq = int(last_event_id.strip())
    except ValueError:
        seq = -1
    if not 0 <= seq < 2**63 - 1:
        message = f"Last-Event-ID {last_event_id[:40]!r} is not an event id of this stream (a sequence number)"
        raise AsrError(errors.BAD_REQUEST, message, param="Last-Event-ID")
    return seq + 1


def event_json(event: Event) -> dict[str, Any]:
    body: dict[str, Any] = msgspec.to_builtins(event)
    return body


@router.get("/v1/events")
async def events(
    request: Request,
    conn: Connection,
    since: str | None = None,
    since_seq: int | None = None,
    model: str | None = None,
    progress: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The lifecycle stream as Server-Sent Events (replayed `since`, then live); with `progress=true`, live
    `progress` events of transcriptions beside them (progress is not history: never replayed, no `id`).
    A reconnecting EventSource sends `Last-Event-ID`: the stream resumes after that event, whatever `since` says,
    so the reader gets the gap instead of silence."""
    if last_event_id is not None and last_event_id.strip():
        since_seq = _after(last_event_id)
    config = replay_config(since, since_seq)
    if model is not None:
        model = conn.catalogue.resolve(model).id  # 404 for what is not a model (and never an invalid subject)
    subject = subjects.events_of_model(model) if model else subjects.EVENTS_ALL
    nc = conn.client
    inbox: asyncio.Queue[Msg] = asyncio.Queue(maxsize=10_000)

    async def queued(msg: Msg) -> None:
        if msg.subject.startswith(subjects.PROGRESS_PREFIX) and not bus.published_directly(msg):
            return
        with contextlib.suppress(asyncio.QueueFull):  # a stalled reader loses messages, not the gateway
            inbox.put_nowait(msg)

    subs: list[Subscription] = [
        await nc.jetstream().subscribe(
            subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config, cb=queued
        )
    ]
    if progress:
        subs.append(await nc.subscribe(subjects.progress(model) if model else subjects.PROGRESS_ALL, cb=queued))

    async def stream() -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            while not await request.is_disconnected():
                try:
                    msg = await asyncio.wait_for(inbox.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, codec.DecodeError):
                    if msg.subject.startswith(subjects.PROGRESS_PREFIX):
                        report = codec.decode(msg.data, TranscriptionProgress)
                        yield f"event: progress\ndata: {json.dumps(msgspec.to_builtins(report))}\n\n"
                        continue
                    event = decode_event(msg.data, msg.headers)
                    seq = msg.metadata.sequence.stream
                    yield f"id: {seq}\nevent: {kind(event)}\ndata: {json.dumps(event_json(event))}\n\n"
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def frontend_message(event: Event) -> dict[str, Any]:
    """asrpro's frontend shape, `{type, data}`, with the fields its sidecar sent (filename, model, error,
    result_length, processing_time, container_id, status) beside this system's own."""
    data = event_json(event)
    data["status"] = data.pop("type")
    if isinstance(event, TranscriptionCompleted):
        data["processing_time"] = event.total_s
    elif isinstance(event, TranscriptionFailed):
        data["error"] = event.reason
    elif isinstance(event, ServerReady | ServerStopped | ServerStarting | ServerFailed | ServerCrashed):
        data["container_id"] = getattr(event, "container_id", None) or event.model
    return {"type": FRONTEND_TYPES.get(kind(event), "system_status"), "data": data}


def progress_message(report: TranscriptionProgress) -> dict[str, Any]:
    """asrpro's frontend shape: progress as an integer percentage, beside the exact figures."""
    data = msgspec.to_builtins(report)
    data.update(fraction=report.progress, progress=round(report.progress * 100), status="transcribing")
    return {"type": "transcription_progress", "data": data}


@router.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    conn: GatewayConnection = ws.app.state.connection
    await ws.accept()
    queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=1000)

    async def on_msg(msg: Msg) -> None:
        if not bus.published_directly(msg):
            return
        with contextlib.suppress(asyncio.QueueFull):  # a stalled browser loses events, not the gateway
            queue.put_nowait(msg)

    try:
        sub = await conn.client.subscribe(subjects.EVENTS_ALL, cb=on_msg)
        progress_sub = await conn.client.subscribe(subjects.PROGRESS_ALL, cb=on_msg)
    except AsrError as exc:
        await ws.send_json({"type": "system_status", "data": {"status": "unhealthy", "reason": exc.message}})
        await ws.close(code=1011)
        return
    await ws.send_json({"type": "system_status", "data": await system_status(conn)})

    async def forward() -> None:
        while True:
            msg = await queue.get()
            with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError, codec.DecodeError):
                if msg.subject.startswith(subjects.PROGRESS_PREFIX):
                    await ws.send_json(progress_message(codec.decode(msg.data, TranscriptionProgress)))
                else:
                    await ws.send_json(frontend_message(decode_event(msg.data, msg.headers)))

    sender = asyncio.create_task(forward())
    try:
        while True:
            text = await ws.receive_text()
            try:
                message = json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                # One bad frame is the sender's problem, not a reason to drop the connection.
                await ws.send_json({"type": "error", "data": {"message": 'not a JSON message: send {"type": ...}'}})
                continue
            kind_ = message.get("type") if isinstance(message, dict) else None
            if kind_ == "ping":
                await ws.send_json({"type": "pong", "data": message.get("data")})
            elif kind_ in ("system_status", "get_status"):
                await ws.send_json({"type": "system_status", "data": await system_status(conn)})
            else:
                await ws.send_json({"type": "error", "data": {"message": f"unknown message type {kind_!r}"}})
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        sender.cancel()
        for subscription in (sub, progress_sub):
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
