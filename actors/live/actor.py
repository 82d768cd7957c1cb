"""The live actor: each session a long request (schemas/live.py) whose reply is the stream of its events.

The session's client events arrive on a subject of their own; its utterances are decoded through the proxies of
this node (priority "live": first in every model's queue), partial decodes greedy, the final one with the model's
decoding. It holds no decoding slot between decodes, and the model stays loaded while the session lasts (each
decode is activity).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import wave
from typing import Any

import numpy as np
from nats.aio.msg import Msg

from actors.live.audio_in import RATE
from actors.live.protocol import ProtocolError, Settings, new_id, session_event
from actors.live.session import Limits, Piece, Session
from asrpro import client
from framework.actor import Actor, endpoint, send_keepalive, send_partial
from framework.config import Config
from schemas import endpoints, errors, live, subjects
from schemas.errors import AsrError
from schemas.events import LiveSessionClosed, LiveSessionOpened
from schemas.languages import check_language
from schemas.live import LiveClosed, LiveEvent, LiveOpen, Shape
from schemas.registry import GetModel, ModelInfo, check_transcriber
from schemas.transcribe import Segment, TranscribeRequest, Word

KEEPALIVE_S = 5.0  # the opener takes a session silent for three of these for lost
# Client events taken but not yet handled. An event sent as a request is answered once taken (the gateway sends
# the next one then: a client faster than the session waits, nothing is lost); events merely published (a NATS
# client that does not wait for the answers) beyond PENDING_EVENTS more are dropped by the bus as a slow
# consumer's, logged (docs/realtime.md tells NATS clients to send each event as a request).
INBOX_EVENTS = 1024
INBOX_BYTES = 32 * 2**20  # and at most this much of them: a client's 8-MB appends must not pile up in memory
PENDING_EVENTS = 4096
CLOSE_WAIT_S = 30.0  # what is committed is still finished when a session ends, for at most this long


class Inbox:
    """A session's client events taken but not yet handled, bounded in number and in bytes: `put` waits for room."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=INBOX_EVENTS)
        self._bytes = 0
        self._room = asyncio.Condition()

    async def put(self, event: Msg) -> None:
        async with self._room:
            # One event larger than the bound is still taken, alone.
            await self._room.wait_for(lambda: self._bytes == 0 or self._bytes + len(event.data) <= INBOX_BYTES)
            self._bytes += len(event.data)
        await self._queue.put(event)

    async def get(self) -> Msg:
        event = await self._queue.get()
        async with self._room:
            self._bytes -= len(event.data)
            self._room.notify_all()
        return event


class Live(Actor):
    name = "live"
    max_concurrency = 1024  # sessions are long requests; realtime.max_sessions is the limit that speaks

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config.realtime
        self.sessions: dict[str, Session] = {}

    @endpoint(endpoints.LIVE_OPEN)
    async def open(self, msg: LiveOpen) -> LiveClosed:
        session_id = new_id("sess")
        return await self._run(msg, msg.owner, session_id, subjects.live_in(session_id))

    @endpoint(endpoints.LIVE_APP_OPEN)
    async def app_open(self, msg: LiveOpen, subject: str) -> LiveClosed:
        user = subjects.app_of_live_subject(subject)
        session_id = new_id("sess")
        return await self._run(msg, subjects.nats_owner(user), session_id, subjects.live_app(user, f"in.{session_id}"))

    async def _run(self, msg: LiveOpen, owner: str, session_id: str, input_subject: str) -> LiveClosed:
        if len(self.sessions) >= self.cfg.max_sessions:
            raise AsrError(
                errors.ErrorCode.SESSION_LIMIT,
                f"{self.cfg.max_sessions} live sessions are open on this node (realtime.max_sessions): try again later",
            )
        settings = Settings(model=msg.model)
        try:
            settings.apply(msg.session, msg.shape)
        except ProtocolError as exc:
            raise AsrError(errors.BAD_REQUEST, exc.message, param=exc.param) from None
        info = await self._model(settings.model)
        check_language(settings.language, info.id, info.languages)
        inbox = Inbox()

        async def received(event: Msg) -> None:
            await inbox.put(event)  # waits while the session is behind by INBOX_EVENTS or INBOX_BYTES
            if event.reply:  # the sender's flow control: it sends the next event once this one is taken
                await event.respond(b"")

        sub = await self.connection.subscribe(input_subject, cb=received, pending_msgs_limit=PENDING_EVENTS)

        async def emit(event: dict[str, Any]) -> None:
            await send_partial(LiveEvent(event=event))

        models = {settings.model: info}

        async def resolve(candidate: Settings, shape: Shape) -> str:
            where = "session.audio.input.transcription" if shape == "ga" else "session.input_audio_transcription"
            name = candidate.model
            try:
                if name not in models:
                    models[name] = await self._model(name)
                check_language(candidate.language, models[name].id, models[name].languages)
            except AsrError as exc:
                raise ProtocolError(live.INVALID_EVENT, exc.message, f"{where}.{exc.param or 'model'}") from None
            return models[name].id

        async def transcribe(audio: np.ndarray, final: bool, current: Settings, prompt: str | None) -> list[Piece]:
            return await self._transcribe(models.get(current.model, info), owner, audio, final, current, prompt)

        limits = Limits(partial_every_s=self.cfg.partial_every_s, max_buffer_s=self.cfg.max_buffer_s)
        session = Session(session_id, msg.shape, settings, emit, transcribe, info.id, limits, resolve)
        self.sessions[session_id] = session
        self.log.info("session opened", extra={"session": session_id, "model": info.id, "owner": owner})
        await self.publish(LiveSessionOpened(model=info.id, session=session_id))
        opened = time.monotonic()
        created = session_event("created", msg.shape, settings.render(session_id, msg.shape, info.id))
        await send_partial(LiveEvent(event={"event_id": new_id("event"), **created}, input=input_subject))
        reason = "closed"
        try:
            reason = await self._serve(session, inbox)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self.sessions.pop(session_id, None)
            try:
                await asyncio.wait_for(session.close(), CLOSE_WAIT_S)
            except (TimeoutError, asyncio.CancelledError):
                session.abort()
            self.log.info(
                "session closed",
                extra={"session": session_id, "reason": reason, "audio_s": round(session.audio_s, 2)},
            )
            closed = LiveSessionClosed(
                model=info.id,
                session=session_id,
                reason=reason,
                audio_s=round(session.audio_s, 3),
                duration_s=round(time.monotonic() - opened, 3),
                utterances=session.utterances,
                delta_latency_s=[round(s, 4) for s in session.delta_latency[-1000:]],
            )
            await self.publish(closed)
        return LiveClosed(reason=reason)

    async def _serve(self, session: Session, inbox: Inbox) -> str:
        """Client events in order until the client goes, falls idle, or the session reaches its length."""
        opened = time.monotonic()
        next_keepalive = opened + KEEPALIVE_S
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                if time.monotonic() - opened > self.cfg.max_session_s:
                    await session.emit(
                        live.error_event(live.SESSION_IDLE, "the session reached realtime.max_session_s")
                    )
                    return "too long"
                getting = asyncio.ensure_future(inbox.get())
                done, _ = await asyncio.wait({getting, stopping}, timeout=KEEPALIVE_S, return_when="FIRST_COMPLETED")
                if getting not in done:
                    getting.cancel()
                    if stopping in done:
                        await session.emit(live.error_event("server_shutting_down", "the server is shutting down"))
                        return "shutdown"
                    await send_keepalive()
                    next_keepalive = time.monotonic() + KEEPALIVE_S
                    if time.monotonic() - session.last_activity > self.cfg.idle_timeout:
                        message = f"no client event for {self.cfg.idle_timeout:g} s (realtime.idle_timeout)"
                        await session.emit(live.error_event(live.SESSION_IDLE, message))
                        return "idle"
                    continue
                msg = getting.result()
                if msg.headers and msg.headers.get(live.CLOSE_HEADER):
                    return msg.headers[live.CLOSE_HEADER] or "client gone"
                await session.handle(msg.data)
                if time.monotonic() >= next_keepalive:
                    # A client that keeps talking may go long without an event back (no words agreed yet): the
                    # opener takes a session silent for SILENCE_S for lost.
                    await send_keepalive()
                    next_keepalive = time.monotonic() + KEEPALIVE_S
        finally:
            stopping.cancel()

    async def _model(self, name: str) -> ModelInfo:
        """The model a session transcribes with: OpenAI's names (gpt-4o-transcribe, whisper-1) mean the default."""
        info = await self.request(endpoints.REGISTRY_GET, GetModel(id=name or "whisper-1"), timeout=10.0)
        check_transcriber(info)
        if info.installed is False:
            raise AsrError(
                errors.ErrorCode.MODEL_NOT_INSTALLED,
                f"model {info.id} is not installed: asrpro models pull {info.id}",
                param="model",
            )
        return info

    async def _transcribe(
        self, info: ModelInfo, owner: str, audio: np.ndarray, final: bool, settings: Settings, prompt: str | None
    ) -> list[Piece]:
        request = TranscribeRequest(
            audio=_wav(audio),
            filename="live.wav",
            language=settings.language,
            prompt=prompt or settings.prompt,
            priority="live",
            beam_size=None if final else self.cfg.partial_beam_size,
            # The final decode's word times say where its text really ends (session._rest).
            timestamp_granularities=["word"] if final else [],
            request_id=f"live-{owner}-{new_id('d')}"[:64],
            timeout=60.0,
        )
        try:
            result = await client.transcribe(self.connection, info.id, request, timeout=65.0, via=self.node_name)
        except asyncio.CancelledError:
            # A partial decode overtaken (its utterance committed or cleared): the proxy frees its slot at once,
            # for the final decode that follows, rather than finish a decode nobody reads.
            await asyncio.shield(client.cancel(self.connection, request, "live partial overtaken"))
            raise
        return _pieces(result.segments, result.words or [])


def _pieces(segments: list[Segment], words: list[Word]) -> list[Piece]:
    """The decode's segments, each ending where its last word ends (words in order, matched to segments by time)."""
    pieces, n = [], 0
    for segment in segments:
        end = None
        while n < len(words) and words[n].start < segment.end:
            end = words[n].end
            n += 1
        pieces.append(Piece(segment.end if end is None else min(end, segment.end), segment.text))
    return pieces


def _wav(audio: np.ndarray) -> bytes:
    """16-kHz mono PCM16 WAV: what the model server opens fastest."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return out.getvalue()
