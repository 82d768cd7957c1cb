"""WS /v1/realtime?intent=transcription: OpenAI's Realtime transcription sessions, carried to the live actor.

The gateway only carries: it opens the session on its node's live actor (asr.live.open.<node>), sends each
client frame as it came on the session's input subject, and each event of the reply stream to the client. A
client that stops reading fills a bounded queue and loses the session (the actor is told, its slot freed);
a session the actor refuses (too many open, an unknown model) is an `error` event, then the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import msgspec
import nats.errors
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from framework import bus
from framework.cancelling import retrieved
from framework.config import Config, node_name
from gateway import client_secrets
from gateway.connection import GatewayConnection
from schemas import codec, endpoints, errors, live
from schemas.errors import AsrError
from schemas.live import LiveEvent, LiveOpen, Shape

log = logging.getLogger("asrpro.gateway")
router = APIRouter()
SUBPROTOCOL = "realtime"
SILENCE_S = 20.0  # the live actor sends a keepalive every 5 s: silent this long, it is taken for lost
RESEND_S = 0.25  # between tries of a frame that found no session listening
CANCEL_WAIT_S = 1.0  # for the session's tasks to end once cancelled, before the socket is closed
FRAME_HEADROOM = 4096  # a client frame travels as one bus message: this much of it is left to the headers


def _shape(ws: WebSocket) -> Shape:
    """The beta's shape for clients that ask for it (OpenAI-Beta: realtime=v1), else the current one."""
    beta = ws.headers.get("openai-beta", "")
    return "beta" if "realtime=v1" in beta.replace(" ", "") else "ga"


def _subprotocol(ws: WebSocket) -> str | None:
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    conn: GatewayConnection = ws.app.state.connection
    config: Config = ws.app.state.config
    subprotocol = _subprotocol(ws)
    shape = _shape(ws)
    model = ws.query_params.get("model", "")
    state = ws.scope.get("state", {})
    # A client secret's session settings apply first; the client's own session.update can change them after.
    opening = LiveOpen(
        model=model, shape=shape, owner=state.get("api_owner") or "local", session=state.get("realtime_session") or {}
    )
    try:
        nc = conn.client
        rpc = endpoints.LIVE_OPEN.on(node_name(config))
        replies = bus.stream_replies(
            nc,
            rpc.subject,
            codec.encode(opening),
            timeout=config.realtime.max_session_s + 60,
            what="the live session",
            silence=SILENCE_S,
        )
        first = await anext(replies)
        bus.raise_for_error(first.headers, first.data)
        created = codec.decode(first.data, LiveEvent, codec.content_type(first.headers))
    except AsrError as exc:
        # Refused before it began: said as OpenAI says it, in an `error` event, then closed.
        await ws.accept(subprotocol=subprotocol)
        await ws.send_json(live.refusal(exc))
        await ws.close(code=1013 if exc.kind == errors.ErrorCode.SESSION_LIMIT else 1011, reason=exc.message[:120])
        return
    await ws.accept(subprotocol=subprotocol)
    outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=config.realtime.send_queue)
    outgoing.put_nowait(created.event)
    input_subject = created.input
    ended = asyncio.Event()
    reason = ["client gone"]

    async def from_actor() -> None:
        """The session's events, queued for the client; a full queue is a client that does not read."""
        try:
            async for msg in replies:
                if not (msg.headers and msg.headers.get(codec.PARTIAL_HEADER)):
                    bus.raise_for_error(msg.headers, msg.data)
                    break  # LiveClosed: the session ended (idle, too long, shutdown); its last event says why
                event = codec.decode(msg.data, LiveEvent, codec.content_type(msg.headers)).event
                try:
                    outgoing.put_nowait(event)
                except asyncio.QueueFull:
                    reason[0] = "slow client"
                    log.warning("realtime client not reading: session closed", extra={"input": input_subject})
                    sending.cancel()  # it may be stuck in a send the client never reads
                    break
        except (AsrError, msgspec.DecodeError, codec.DecodeError) as exc:
            message = exc.message if isinstance(exc, AsrError) else str(exc)
            lost = live.error_event("server_error", f"the session was lost: {message}", kind="server_error")
            with contextlib.suppress(asyncio.QueueFull):
                outgoing.put_nowait(lost)
            reason[0] = "lost"
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                outgoing.put_nowait(None)
            ended.set()

    async def to_client() -> None:
        while (event := await outgoing.get()) is not None:
            await ws.send_json(event)

    async def from_client() -> None:
        # Each frame is a request, the next one read once the actor has taken it: a client that sends faster than
        # its session decodes is slowed down by TCP, and no event is dropped on the way.
        largest = nc.max_payload - FRAME_HEADROOM
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if len(data) > largest:
                too_large = f"an event may hold at most {largest} bytes here (the bus's message size): send less audio"
                with contextlib.suppress(asyncio.QueueFull):  # a client that does not read: from_actor ends it
                    outgoing.put_nowait(live.error_event(live.BUFFER_TOO_LARGE, too_large, "audio"))
                continue
            try:
                while not await _taken(nc, input_subject, data):
                    if ended.is_set():
                        # The session ended on the actor's side: its last events go out, then the socket closes.
                        await asyncio.Event().wait()
                    await asyncio.sleep(RESEND_S)  # the actor's connection is back within seconds, or it ended
            except AsrError as exc:
                reason[0] = "lost"
                lost = live.error_event("server_error", f"the session was lost: {exc.message}", kind="server_error")
                with contextlib.suppress(asyncio.QueueFull):
                    outgoing.put_nowait(lost)
                    outgoing.put_nowait(None)  # the socket closes once that is sent
                await asyncio.Event().wait()

    sending = asyncio.ensure_future(to_client())
    receiving = asyncio.ensure_future(from_client())
    tasks = [sending, receiving, asyncio.ensure_future(from_actor())]
    try:
        # The session ends when the client goes, or once its last event was sent (or could not be).
        await asyncio.wait([sending, receiving], return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        if not ended.is_set():
            # Tell the actor the client went (or would not read): it ends the session and frees what it held.
            with contextlib.suppress(Exception):
                await nc.publish(input_subject, b"", headers={live.CLOSE_HEADER: reason[0]})
        for task in tasks:
            task.cancel()
            task.add_done_callback(retrieved)
        # Not waited for to the end: a receive under way may not end at its cancel until the socket is closed (seen
        # with a client that neither reads nor stops sending), and the close below must not wait for it.
        await asyncio.wait(tasks, timeout=CANCEL_WAIT_S)
        closing = getattr(replies, "aclose", None)  # the generator's subscription goes with it
        if closing is not None:
            with contextlib.suppress(Exception):
                await closing()
        with contextlib.suppress(Exception):
            await ws.close(code={"slow client": 1008, "lost": 1011}.get(reason[0], 1000))


async def _taken(nc: Any, subject: str, data: bytes) -> bool:
    """Whether the live actor took the frame: False while nobody listens on the session's subject (its session
    ended, or the actor's connection is being made again). An actor that holds the frame SILENCE_S without taking
    it has lost the session: AsrError."""
    try:
        await nc.request(subject, data, timeout=SILENCE_S)
    except nats.errors.NoRespondersError:
        return False
    except nats.errors.TimeoutError:
        raise AsrError(errors.UNAVAILABLE, f"the live session took no event for {SILENCE_S:g} s") from None
    return True


@router.post("/v1/realtime/client_secrets")
async def client_secret(request: Request) -> dict[str, Any]:
    """OpenAI's ephemeral client secret: a token a browser may hold to open live transcription sessions until it
    expires (gateway/client_secrets.py), with the session settings given here applied to each session it opens."""
    if "json" not in request.headers.get("content-type", ""):
        # Not text/plain: a web page may send that to any site without asking first.
        raise AsrError(errors.UNSUPPORTED_MEDIA, "send JSON: Content-Type application/json")
    try:
        body = codec.decode(await request.body(), client_secrets.Request, codec.JSON)
    except codec.DecodeError as exc:
        raise AsrError(errors.BAD_REQUEST, f"expected a JSON object {{expires_after, session}}: {exc}") from None
    seconds = _expiry(body.expires_after)
    session = _session(body.session)
    state = request.scope.get("state", {})
    value, expires_at = client_secrets.mint(
        state.get("api_key_digest", ""), session, seconds, state["client_secret_key"]
    )
    shown = {**session, "type": "transcription", "object": "realtime.transcription_session"}
    return {"value": value, "expires_at": expires_at, "session": {"id": f"sess_{secrets.token_hex(10)}", **shown}}


def _expiry(value: Any) -> int:
    if value is None:
        return client_secrets.DEFAULT_S
    if not isinstance(value, dict):
        raise AsrError(errors.BAD_REQUEST, "expires_after must be an object", param="expires_after")
    if value.get("anchor", "created_at") != "created_at":
        raise AsrError(errors.BAD_REQUEST, 'expires_after.anchor must be "created_at"', param="expires_after.anchor")
    seconds = value.get("seconds", client_secrets.DEFAULT_S)
    low, high = client_secrets.SHORTEST_S, client_secrets.LONGEST_S
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not low <= seconds <= high:
        message = f"expires_after.seconds must be a whole number from {low} to {high}"
        raise AsrError(errors.BAD_REQUEST, message, param="expires_after.seconds")
    return seconds


def _session(value: Any) -> dict[str, Any]:
    """The session settings a secret carries: a transcription session's (validated in full by the live actor when
    a session opens with them, as a session.update's are)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AsrError(errors.BAD_REQUEST, "session must be an object", param="session")
    if value.get("type", "transcription") != "transcription":
        message = 'session.type must be "transcription": this server transcribes, it holds no conversations'
        raise AsrError(errors.BAD_REQUEST, message, param="session.type")
    if len(msgspec.json.encode(value)) > client_secrets.MAX_SESSION_BYTES:
        message = f"session is over {client_secrets.MAX_SESSION_BYTES} bytes"
        raise AsrError(errors.BAD_REQUEST, message, param="session")
    return {k: v for k, v in value.items() if k != "type"}
