"""Model proxy actor: serves ``asr.transcribe.<model>`` and forwards audio to the model server.

A warm request costs no NATS round trip beyond the caller's own: the model name is resolved from the
watched catalogue, a ready server is found in the watched records of the lifecycle actor (KV ASR_SERVERS),
and the lifecycle actor learns of the activity from the `transcribing` / `transcribed` events. Only when no
server is ready (or the one found is gone) does the proxy ask the lifecycle actor to ensure one."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from actors.proxy.decoding import decoding_for
from actors.proxy.queue import ModelQueue
from framework import bus, logs
from framework.actor import Actor, endpoint, on_message, send_partial
from framework.catalogue import Catalogue
from framework.config import Config
from framework.kv_view import KvView
from framework.model_server import ModelServerClient, ServerGone
from schemas import endpoints, errors, subjects
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.events import TranscriptionCompleted, TranscriptionFailed, TranscriptionStarted
from schemas.formats import render_text
from schemas.lifecycle import EnsureServer, ServerStatus
from schemas.model_server import ResultFrame, SegmentFrame, TranscribeOptions
from schemas.registry import ModelInfo, not_installed
from schemas.transcribe import (
    CancelTranscription,
    TranscribeRequest,
    TranscriptionDelta,
    TranscriptionProgress,
    TranscriptionResult,
)

_CATALOGUE_WAIT_S = 60.0
PROGRESS_EVERY_S = 0.5
CANCELLED = "499"  # the requester gave up (nginx's "client closed request")
LIFECYCLE_RESTART_WAIT_S = 10.0


class ModelProxy(Actor):
    """One queue group for every model: many proxies share the load."""

    name = "proxy"
    max_concurrency = 256

    def __init__(
        self,
        config: Config,
        *,
        catalogue: Catalogue | None = None,
        model_server: ModelServerClient | None = None,
        ready: KvView[ServerStatus] | None = None,
    ) -> None:
        super().__init__(config)
        self.catalogue = catalogue or Catalogue()
        self.model_server = model_server or ModelServerClient(timeout=config.gateway.request_timeout)
        # The lifecycle actors' records of running servers, by model id.
        self.ready: KvView[ServerStatus] = ready or KvView(subjects.SERVERS_BUCKET, ">", ServerStatus)
        self.queues: dict[str, ModelQueue] = {}
        # (request id, cancel token) -> the task serving it: ids are chosen by callers and may repeat or be guessed.
        self.running: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.cancelled: set[tuple[str, str]] = set()

    async def setup(self) -> None:
        if self.nc is None:
            return
        # Before the service is discoverable: a proxy that answers $SRV.PING can resolve every model
        # (/health relies on it).
        await self.catalogue.follow(self.connection, wait=_CATALOGUE_WAIT_S)
        if self.catalogue.listing is None:
            raise RuntimeError(f"no model catalogue within {_CATALOGUE_WAIT_S:g} s: {self.catalogue.unknown_reason()}")
        await self.ready.follow(self.connection)

    async def teardown(self) -> None:
        await self.model_server.aclose()
        await self.catalogue.stop()
        await self.ready.stop()

    def _queue(self, model: ModelInfo) -> ModelQueue:
        queue = self.queues.get(model.id)
        if queue is None:
            lifecycle = self.config.lifecycle
            queue = ModelQueue(
                model.id, model.max_parallel or lifecycle.max_parallel, model.max_queue or lifecycle.max_queue
            )
            self.queues[model.id] = queue
        return queue

    @endpoint(endpoints.TRANSCRIBE, queue_group="asrpro-proxy")
    async def transcribe(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        msg.request_id = logs.clean_request_id(msg.request_id) or logs.request_id.get() or logs.new_request_id()
        logs.request_id.set(msg.request_id)
        task = asyncio.current_task()
        key = (msg.request_id, msg.cancel_token)
        if task is not None:
            self.running[key] = task
        try:
            return await self._transcribe(msg, subject)
        except asyncio.CancelledError:
            if key not in self.cancelled:
                raise  # shutting down
            raise AsrError(
                CANCELLED, f"request {msg.request_id} was cancelled by its requester", kind="cancelled"
            ) from None
        finally:
            self.running.pop(key, None)
            self.cancelled.discard(key)

    async def _transcribe(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        t0 = time.monotonic()
        deadline = t0 + (msg.timeout or self.config.gateway.request_timeout)
        model_id = subjects.model_from_transcribe(subject)
        cold = False
        relay = Relay(self, msg, model_id, t0)
        try:
            try:
                keep_alive = parse_duration(msg.keep_alive)
            except ValueError as exc:
                raise AsrError(errors.BAD_REQUEST, str(exc)) from None
            model = self.catalogue.resolve(model_id)
            model_id = model.id
            if model.installed is False:
                raise not_installed(model)
            options = decoding_for(model, msg, self.catalogue.listing)
            audio = await self._audio(msg)
            async with self._queue(model).slot(deadline) as queued_s:
                await self.publish(
                    TranscriptionStarted(
                        model=model_id,
                        request_id=msg.request_id,
                        audio_bytes=len(audio),
                        keep_alive=keep_alive,
                        filename=msg.filename,
                        waiting=self._queue(model).waiting,
                    )
                )
                server = self._ready_server(model_id)
                if server is None:
                    server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=False)
                    cold = server.cold_start
                relay.model_id = model_id
                try:
                    result = await self._forward(server, options, msg.filename, audio, deadline, relay)
                except ServerGone as exc:
                    self.log.warning("%s: retrying on a fresh server", exc)
                    server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=True)
                    cold = cold or server.cold_start
                    try:
                        result = await self._forward(server, options, msg.filename, audio, deadline, relay)
                    except ServerGone as exc2:
                        raise AsrError(errors.UNAVAILABLE, f"model server of {model_id} failed twice: {exc2}") from exc2
        except (Exception, asyncio.CancelledError) as exc:
            # Whatever failed, the lifecycle actor must hear that this request is over (it holds the server busy).
            if isinstance(exc, asyncio.CancelledError):
                error = AsrError(CANCELLED, "cancelled", kind="cancelled")
            elif isinstance(exc, AsrError):
                error = exc
            else:
                error = AsrError(errors.INTERNAL, f"internal error: {exc!r}")
            self.log.warning("transcription failed: %s %s", error.code, error.message, extra={"model": model_id})
            await self.publish(
                TranscriptionFailed(
                    model=model_id,
                    request_id=msg.request_id,
                    code=error.code,
                    reason=error.message,
                    filename=msg.filename,
                )
            )
            if error is exc:
                raise
            raise error from exc
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
        await self.publish(
            TranscriptionCompleted(
                model=model_id,
                request_id=msg.request_id,
                audio_s=result.duration,
                total_s=result.timing.total_s,
                cold_start=cold,
                filename=msg.filename,
                result_length=len(result.text),
                queue_s=result.timing.queue_s,
                waiting=self._queue(model).waiting,
            )
        )
        return result

    def _ready_server(self, model_id: str) -> ServerStatus | None:
        status = self.ready.values.get(model_id)
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
                return await self.request(
                    endpoints.LIFECYCLE_ENSURE,
                    EnsureServer(
                        model=model_id, request_id=request_id, restart=restart, keep_alive=keep_alive, timeout=remaining
                    ),
                    # lifecycle answers 503 itself at the deadline; the extra seconds cover a lifecycle that died.
                    timeout=remaining + 5,
                )
            except AsrError as exc:
                if exc.kind != bus.NO_RESPONDERS or time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.25)

    async def _audio(self, msg: TranscribeRequest) -> bytes:
        if msg.audio_ref:
            bucket = msg.audio_bucket or ""
            if not _AUDIO_BUCKET.fullmatch(bucket):
                raise AsrError(
                    errors.BAD_REQUEST, f"audio_ref needs audio_bucket (the sender's ASR_AUDIO_<user>), not {bucket!r}"
                )
            try:
                store = await self.connection.jetstream().object_store(bucket)
                obj = await store.get(msg.audio_ref)
            except Exception as exc:
                raise AsrError(
                    errors.BAD_REQUEST, f"audio_ref '{msg.audio_ref}' not found in bucket {bucket}: {exc}"
                ) from exc
            # The upload was for this one request: free the space now rather than wait for the bucket's TTL.
            self.spawn(store.delete(msg.audio_ref))
            audio = obj.data or b""
        else:
            audio = msg.audio
        if not audio:
            raise AsrError(errors.BAD_REQUEST, "no audio: the file is empty")
        return audio

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
        except TimeoutError:
            raise AsrError(errors.TIMEOUT, f"model server of {server.model} did not finish in time") from None
        raise AsrError(errors.INTERNAL, f"model server of {server.model} ended without a result")

    @on_message(subjects.CANCEL_ALL, CancelTranscription)
    async def on_cancel(self, cancellation: CancelTranscription, subject: str) -> None:
        request_id = subject[len(subjects.CANCEL_PREFIX) :]
        # Only the requester knows the token: another application cannot cancel a request by guessing its id.
        task = self.running.get((request_id, cancellation.token)) if cancellation.token else None
        if task is not None:
            self.log.info("cancelled by its requester", extra={"cancelled": request_id})
            self.cancelled.add((request_id, cancellation.token))
            task.cancel()


_AUDIO_BUCKET = re.compile(re.escape(subjects.AUDIO_BUCKET_PREFIX) + subjects.USER_NAME)


class Relay:
    """Where a request's decoding shows: progress on asr.progress.<model> at most every PROGRESS_EVERY_S, and for
    a requester that asked to stream, each segment as a partial reply (once, even across a retry)."""

    def __init__(self, proxy: ModelProxy, msg: TranscribeRequest, model_id: str, started: float) -> None:
        self.proxy, self.msg, self.model_id, self.started = proxy, msg, model_id, started
        self.sent_until = -1.0  # end of the last segment relayed
        self.last_progress = 0.0

    async def segment(self, frame: SegmentFrame) -> None:
        end = frame.segment.end
        if end <= self.sent_until:
            return  # already relayed before a retry on a fresh server
        self.sent_until = end
        progress = min(1.0, end / frame.duration) if frame.duration else 0.0
        if self.msg.stream:
            delta = TranscriptionDelta(
                request_id=self.msg.request_id,
                model=self.model_id,
                text=frame.segment.text,
                segment=frame.segment,
                words=frame.words,
                progress=round(progress, 4),
                elapsed_s=round(time.monotonic() - self.started, 3),
            )
            await send_partial(delta)
        now = time.monotonic()
        if now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            await self._progress(progress, end, frame.duration)

    async def done(self, duration: float) -> None:
        await self._progress(1.0, duration, duration)

    async def _progress(self, progress: float, done_s: float, duration: float) -> None:
        report = TranscriptionProgress(
            model=self.model_id,
            request_id=self.msg.request_id,
            progress=round(progress, 4),
            done_s=round(done_s, 3),
            duration=round(duration, 3),
            elapsed_s=round(time.monotonic() - self.started, 3),
            filename=self.msg.filename,
        )
        await self.proxy.send(subjects.progress(self.model_id), report)
