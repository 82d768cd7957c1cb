"""Serving on this node: a request checked before any work, held in its model's queue, sent over HTTP to this
node's ready server of the model (found in the watched records, or ensured by this node's lifecycle actor), once
more to a fresh server when that one is gone, and reported in `transcribing` / `transcribed` / `failed` events —
whatever failed, the lifecycle actor must hear that the request is over."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import msgspec

from actors.proxy.audio import AudioStore
from actors.proxy.decoding import decoding_for
from actors.proxy.queue import ModelQueue, Priority
from actors.proxy.relay import Relay, Sent
from actors.proxy.speakers import attribute
from framework.actor import Actor
from framework.cancelling import retrieved
from framework.catalogue import Catalogue
from framework.kv_view import KvView
from framework.model_server import ModelServerClient, ServerGone
from schemas import endpoints, errors
from schemas.durations import parse_duration
from schemas.errors import AsrError, ErrorCode
from schemas.events import TranscriptionCompleted, TranscriptionFailed, TranscriptionStarted
from schemas.formats import render_text
from schemas.kv import SERVER
from schemas.lifecycle import EnsureServer, ServerStatus
from schemas.model_server import OpenedFrame, ResultFrame, SegmentFrame, TranscribeOptions
from schemas.registry import ModelInfo, check_transcriber, diarizer_needed, not_installed
from schemas.transcribe import Segment, TranscribeRequest, TranscriptionResult

LIFECYCLE_RESTART_WAIT_S = 10.0


class Serving:
    def __init__(
        self,
        actor: Actor,
        catalogue: Catalogue,
        model_server: ModelServerClient,
        server_records: KvView[ServerStatus],
        audio: AudioStore,
    ) -> None:
        self.actor, self.catalogue, self.model_server = actor, catalogue, model_server
        self.server_records, self.audio = server_records, audio
        self.config, self.log = actor.config, actor.log
        self.queues: dict[str, ModelQueue] = {}

    def queue(self, model: ModelInfo) -> ModelQueue:
        queue = self.queues.get(model.id)
        if queue is None:
            lifecycle = self.config.lifecycle
            queue = ModelQueue(model.id, model.parallel(lifecycle.max_parallel), model.max_queue or lifecycle.max_queue)
            self.queues[model.id] = queue
        return queue

    async def transcribe(self, msg: TranscribeRequest, model_id: str, sent: Sent | None = None) -> TranscriptionResult:
        try:
            return await self._transcribe(msg, model_id, sent or Sent())
        finally:
            if msg.audio_ref:
                # The upload was for this one request: free the space now rather than wait for the bucket's TTL.
                # Not sooner: if this node is lost meanwhile, the request is placed again and reads it again.
                self.actor.spawn(self.audio.drop(msg))

    async def _transcribe(
        self, msg: TranscribeRequest, model_id: str, sent: Sent, *, diarizing: bool = False
    ) -> TranscriptionResult:
        t0 = time.monotonic()
        deadline = t0 + (msg.timeout or self.config.gateway.request_timeout)
        cold = False
        relay = Relay(self.actor, msg, model_id, t0, sent)
        speakers: asyncio.Task[list[Segment]] | None = None
        try:
            try:
                keep_alive = parse_duration(msg.keep_alive)
            except ValueError as exc:
                raise AsrError(errors.BAD_REQUEST, str(exc)) from None
            model = self.catalogue.resolve_for(model_id, msg.task, msg.language)
            model_id = model.id
            if model.installed is False:
                raise not_installed(model)
            if not diarizing:
                check_transcriber(model)
            options = decoding_for(model, msg, self.catalogue.listing)
            # (Never for the diarizer's own request, which carries the known speakers too.)
            diarizer = None if diarizing else diarizer_needed(msg, model, self.catalogue.listing)
            if diarizer is not None:
                # The diarizer works beside the transcription (its own server and queue); the words' timestamps
                # are what its turns are matched to.
                speakers = asyncio.create_task(self._turns(msg, diarizer.id))
                speakers.add_done_callback(retrieved)
                relay.turns = speakers
            audio = await self.audio.read(msg)
            async with self.queue(model).slot(deadline, _priority(msg)) as queued_s:
                await self.actor.publish(
                    TranscriptionStarted(
                        model=model_id,
                        request_id=msg.request_id,
                        audio_bytes=len(audio),
                        keep_alive=keep_alive,
                        filename=msg.filename,
                        waiting=self.queue(model).waiting,
                    )
                )
                server = self._ready_server(model_id)
                if server is None:
                    server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=False)
                    cold = server.cold_start
                relay.model_id = model_id
                try:
                    forward = self._forward(server, options, msg.filename, audio, deadline, relay)
                    result = await _decoded(forward, relay.turns)
                except ServerGone as exc:
                    self.log.warning("%s: retrying on a fresh server", exc)
                    server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=True)
                    cold = cold or server.cold_start
                    try:
                        retry = _resumed(options, msg, relay.sent.until)
                        forward = self._forward(server, retry, msg.filename, audio, deadline, relay)
                        result = await _decoded(forward, relay.turns)
                    except ServerGone as exc2:
                        raise AsrError(errors.UNAVAILABLE, f"model server of {model_id} failed twice: {exc2}") from exc2
            if speakers is not None:  # the transcription's slot is free again while the diarizer finishes
                result = await self._with_speakers(result, msg, speakers, deadline)
        except (Exception, asyncio.CancelledError) as exc:
            # Whatever failed, the lifecycle actor must hear that this request is over (it holds the server busy).
            if isinstance(exc, asyncio.CancelledError):
                error = AsrError(ErrorCode.CANCELLED, "cancelled")
            elif isinstance(exc, AsrError):
                error = exc
            else:
                error = AsrError(errors.INTERNAL, f"internal error: {exc!r}")
            self.log.warning("transcription failed: %s %s", error.code, error.message, extra={"model": model_id})
            await self.actor.publish(
                TranscriptionFailed(
                    model=model_id,
                    request_id=msg.request_id,
                    code=error.code,
                    reason=error.message,
                    kind=error.kind,
                    filename=msg.filename,
                )
            )
            if error is exc or (diarizing and isinstance(exc, asyncio.CancelledError)):
                raise  # a diarization cancelled stays a cancellation: its awaiter's timeout or cancel is its own
            raise error from exc
        finally:
            if speakers is not None and not speakers.done():
                speakers.cancel()
        total = time.monotonic() - t0
        result.model = model_id
        result.timing.total_s = round(total, 4)
        result.timing.queue_s = round(queued_s, 4)
        result.timing.cold_start = cold
        result.timing.rtf = round(total / result.duration, 4) if result.duration else 0.0
        result.formatted = render_text(result, msg.response_format)
        self.log.info(
            "transcribed",
            extra={"model": model_id, "audio_s": result.duration, "total_s": result.timing.total_s, "cold": cold},
        )
        await self.actor.publish(
            TranscriptionCompleted(
                model=model_id,
                request_id=msg.request_id,
                audio_s=result.duration,
                total_s=result.timing.total_s,
                cold_start=cold,
                filename=msg.filename,
                result_length=len(result.text),
                queue_s=result.timing.queue_s,
                waiting=self.queue(model).waiting,
                first_text_s=relay.first_text_s,
            )
        )
        return result

    async def _turns(self, msg: TranscribeRequest, diarizer_id: str) -> list[Segment]:
        """Who spoke when in the request's audio: the diarizer's turns, as a request of its own to its model
        (queued, started, measured and reported like any other), over the whole recording."""
        turns = msgspec.structs.replace(
            msg,
            request_id=f"{msg.request_id}-speakers",
            diarize="none",
            response_format="verbose_json",
            timestamp_granularities=[],
            stream=False,
            task="transcribe",
            language=None,
            prompt=None,
            hotwords=None,
            batch_size=None,
            offset=0.0,
        )
        try:
            result = await self._transcribe(turns, diarizer_id, Sent(), diarizing=True)
        except AsrError as exc:
            raise AsrError(exc.code, f"diarization failed: {exc.message}", kind=exc.kind, param=exc.param) from exc
        return result.segments

    def _ready_server(self, model_id: str) -> ServerStatus | None:
        status = self.server_records.values.get(SERVER.key(self.actor.node_name, model_id))
        return status if status is not None and status.state == "ready" and status.url else None

    async def _ensure(
        self, model_id: str, request_id: str, keep_alive: float | None, deadline: float, *, restart: bool
    ) -> ServerStatus:
        # A lifecycle actor that is restarting (supervisor back-off) is waited for, briefly: requests ride
        # through its restart instead of failing.
        give_up = min(deadline, time.monotonic() + LIFECYCLE_RESTART_WAIT_S)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsrError(errors.TIMEOUT, f"request for {model_id} timed out before its model server was ready")
            try:
                return await self.actor.request(
                    endpoints.LIFECYCLE_ENSURE.on(self.actor.node_name),
                    EnsureServer(
                        model=model_id, request_id=request_id, restart=restart, keep_alive=keep_alive, timeout=remaining
                    ),
                    # lifecycle answers 503 itself at the deadline; the extra seconds cover a lifecycle that died.
                    timeout=remaining + 5,
                )
            except AsrError as exc:
                if exc.kind != ErrorCode.NO_RESPONDERS or time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.25)

    async def _forward(
        self,
        server: ServerStatus,
        options: TranscribeOptions,
        filename: str,
        audio: bytes,
        deadline: float,
        relay: Relay,
    ) -> TranscriptionResult:
        """The model server's frames as they come: progress for everyone, partial replies for a streaming
        requester, the result at the end; the whole of it bounded by the request's deadline."""
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                frames = self.model_server.stream(server.url, server.model, audio, filename, options, deadline)
                async for frame in frames:
                    if isinstance(frame, ResultFrame):
                        await relay.done(frame.result.duration)
                        return frame.result
                    if isinstance(frame, SegmentFrame):
                        await relay.segment(frame)
                    elif isinstance(frame, OpenedFrame):
                        await relay.opened()
        except TimeoutError:
            raise AsrError(errors.TIMEOUT, f"model server of {server.model} did not finish in time") from None
        raise AsrError(errors.INTERNAL, f"model server of {server.model} ended without a result")

    async def _with_speakers(
        self,
        result: TranscriptionResult,
        msg: TranscribeRequest,
        speakers: asyncio.Task[list[Segment]],
        deadline: float,
    ) -> TranscriptionResult:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                turns = await speakers
        except TimeoutError:
            raise AsrError(errors.TIMEOUT, "diarization did not finish in time") from None
        return attribute(result, turns, keep_words="word" in msg.timestamp_granularities)


async def _decoded(
    forward: Coroutine[Any, Any, TranscriptionResult], turns: asyncio.Task[list[Segment]] | None
) -> TranscriptionResult:
    """The model server's result (`forward`, built by `Serving._forward`), and with diarize=speakers a diarizer
    (`turns`) that fails ends the request at once: a bad known speaker's sample is not reported after an hour of
    transcription. Given the coroutine rather than its arguments, so that `_forward`'s signature has one home."""
    if turns is None:
        return await forward
    task = asyncio.ensure_future(forward)
    try:
        await asyncio.wait({task, turns}, return_when=asyncio.FIRST_EXCEPTION)
        if turns.done() and not turns.cancelled() and turns.exception() is not None:
            raise turns.exception()  # type: ignore[misc]
        return await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _resumed(options: TranscribeOptions, msg: TranscribeRequest, relayed_until: float) -> TranscribeOptions:
    """The options of a retry after the server died mid-decode. A job's decode (streamed, batch) resumes after the
    last segment relayed: its worker assembles the text from the streamed segments (actors/jobs/checkpoints.py), so
    re-decoding what it already has would only cost time — half an hour of CPU for a recording killed half-way
    through two hours. Any other request starts again: its requester takes the final result's text as it is."""
    if msg.priority != "batch" or not msg.stream or relayed_until <= options.offset:
        return options
    return msgspec.structs.replace(options, offset=relayed_until)


def _priority(msg: TranscribeRequest) -> Priority:
    """The request's place in the queue. "live" (realtime sessions) arrives only through asr.via.<node>.<model>,
    which only the gateway and the live actor may publish: the proxy's public subject lowers it (actor.py)."""
    return msg.priority
