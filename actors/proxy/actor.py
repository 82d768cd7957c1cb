"""Model proxy actor: serves ``asr.transcribe.<model>`` and forwards audio to the model server.

A warm request costs no NATS round trip beyond the caller's own: the model name is resolved from the
watched catalogue, a ready server is found in the watched records of the lifecycle actors (KV ASR_SERVERS),
and the lifecycle actor learns of the activity from the `transcribing` / `transcribed` events. Only when no
server is ready (or the one found is gone) does the proxy ask its node's lifecycle actor to ensure one.

On a cluster a proxy talks HTTP only to its own node's servers (they listen on loopback): a request that another
node should serve (`routing.choose_node`) is handed to that node's proxies on ``asr.forward.<node>.<model>``.
They send a keepalive every KEEPALIVE_S while they work; one silent for SILENCE_S is taken for a lost node and the
request is placed again, once, elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from actors.proxy.decoding import decoding_for
from actors.proxy.queue import ModelQueue
from actors.proxy.routing import PLACING, choose_node, claim_key
from framework import bus, logs
from framework.actor import Actor, endpoint, on_message, send_keepalive, send_partial
from framework.catalogue import Catalogue
from framework.config import Config, start_budget
from framework.kv_view import KvView, heartbeats
from framework.model_server import ModelServerClient, ServerGone
from schemas import codec, endpoints, errors, subjects
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.events import TranscriptionCompleted, TranscriptionFailed, TranscriptionStarted
from schemas.formats import render_text
from schemas.lifecycle import EnsureServer, ServerStatus
from schemas.model_server import ResultFrame, SegmentFrame, TranscribeOptions
from schemas.nodes import NodeRecord, alive
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
KEEPALIVE_S = 1.0
# A node with no proxy on the bus while its heartbeat is fresh is tried again for this long before it counts as
# lost: its nats-server or proxy restarting takes a second or two, and placing its models elsewhere meanwhile
# would start copies of them.
NODE_GRACE_S = 5.0
CLAIM_WAIT_S = 10.0
# A node whose proxy sent nothing for this long is lost: far above a keepalive's period even on a busy machine.
SILENCE_S = 10.0


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
        self.nodes: KvView[NodeRecord] = heartbeats()
        self.servers_kv: KeyValue | None = None  # for placement claims
        self.lost: dict[str, float] = {}  # node -> until when it is not chosen (it went silent, or had no proxy)
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
        self.servers_kv = await self.connection.jetstream().key_value(subjects.SERVERS_BUCKET)
        await self.nodes.follow(self.connection, wait=2.0)

    async def teardown(self) -> None:
        await self.model_server.aclose()
        await self.catalogue.stop()
        await self.ready.stop()
        await self.nodes.stop()

    def _queue(self, model: ModelInfo) -> ModelQueue:
        queue = self.queues.get(model.id)
        if queue is None:
            lifecycle = self.config.lifecycle
            queue = ModelQueue(
                model.id, model.max_parallel or lifecycle.max_parallel, model.max_queue or lifecycle.max_queue
            )
            self.queues[model.id] = queue
        return queue

    @endpoint(endpoints.FORWARD, queue_group="asrpro-proxy")
    async def forwarded(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        """A request another node's proxy handed to this node: served here, with keepalives while it runs."""
        _node, model_id = subjects.node_and_model(subject)

        async def keep_alive() -> None:
            while await send_keepalive():
                await asyncio.sleep(KEEPALIVE_S)

        beating = asyncio.ensure_future(keep_alive())
        try:
            return await self._serve(msg, model_id, here=True)
        finally:
            beating.cancel()

    @endpoint(endpoints.TRANSCRIBE, queue_group="asrpro-proxy")
    async def transcribe(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        return await self._serve(msg, subjects.model_from_transcribe(subject), here=False)

    @endpoint(endpoints.VIA, queue_group="asrpro-proxy")
    async def via(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        """The HTTP gateway of this node: routed as any request, starting from here."""
        return await self._serve(msg, subjects.node_and_model(subject)[1], here=False)

    async def _serve(self, msg: TranscribeRequest, model_name: str, *, here: bool) -> TranscriptionResult:
        msg.request_id = logs.clean_request_id(msg.request_id) or logs.request_id.get() or logs.new_request_id()
        logs.request_id.set(msg.request_id)
        task = asyncio.current_task()
        key = (msg.request_id, msg.cancel_token)
        if task is not None:
            self.running[key] = task
        try:
            if here:
                return await self._transcribe(msg, model_name)
            return await self._route(msg, model_name)
        except AsrError as exc:
            if exc.kind in (bus.NO_RESPONDERS, bus.SILENT, bus.DROPPED):
                # Our own trouble reaching something: to our requester it is a plain 503, never "nobody serves
                # this subject" (a forwarding proxy would take this node for lost, a gateway would send again).
                exc.kind = ""
            raise
        except asyncio.CancelledError:
            if key not in self.cancelled:
                raise  # shutting down
            raise AsrError(
                CANCELLED, f"request {msg.request_id} was cancelled by its requester", kind="cancelled"
            ) from None
        finally:
            self.running.pop(key, None)
            self.cancelled.discard(key)

    # -- which node ------------------------------------------------------------------
    def _live_nodes(self) -> dict[str, NodeRecord]:
        now = time.monotonic()
        for node, until in list(self.lost.items()):
            if until <= now:
                del self.lost[node]
        nodes = alive(self.nodes.values.values(), self.config.node.dead_after)
        return {name: n for name, n in nodes.items() if name not in self.lost}

    async def _route(self, msg: TranscribeRequest, model_name: str) -> TranscriptionResult:
        """Serve here, or hand the request to the node that should serve it; a node lost on the way (no proxy
        there, or silent) is left out and the request placed again, once."""
        try:
            model = self.catalogue.resolve(model_name)
        except AsrError:
            return await self._transcribe(msg, model_name)  # the error, reported as for any request
        tried: set[str] = set()
        sent = Sent()  # streamed text relayed so far, across a second attempt
        for attempt in (1, 2):
            nodes = self._live_nodes()
            budget = start_budget(self.config)
            exclude = tried | set(self.lost)
            node, placed = choose_node(model, self.node_name, nodes, self.ready.values.values(), exclude, budget)
            claim = await self._claim(model.id, node, exclude) if placed else None
            if claim is not None:
                node = claim.node
            try:
                if node == self.node_name:
                    return await self._transcribe(msg, model.id, sent)
                return await self._hand_over_within_grace(node, model.id, msg, sent)
            except BaseException as exc:
                # A placement that failed is not a hint for others; one that worked stays one for its lifetime
                # (claim_valid_s): proxies whose view of the servers lags (a watch re-made after a server was
                # lost) still send the model's requests there instead of starting it again.
                if claim is not None and claim.revision:
                    self.spawn(self._unclaim(model.id, claim.revision))
                if not isinstance(exc, AsrError):
                    raise
                if node == self.node_name or attempt == 2:
                    raise
                if exc.kind == bus.DROPPED:
                    # Our own connection went (its server was lost): once reconnected, the request goes again
                    # (a transcription changes nothing: doing it twice is safe).
                    self.log.warning("connection lost with request %s: sending it again", msg.request_id)
                    await bus.reconnected(self.connection, bus.RECONNECT_WAIT_S)
                    continue
                if exc.kind not in (bus.NO_RESPONDERS, bus.SILENT):
                    raise
                self.log.warning("node %s lost with request %s: %s; placing it again", node, msg.request_id, exc)
                self.lost[node] = time.monotonic() + self.config.node.dead_after
                tried.add(node)
        raise AssertionError("unreachable")

    async def _claim(self, model_id: str, node: str, exclude: set[str]) -> Claim | None:
        """Claim the placement of a model that runs nowhere (see routing.claim_key): ours, or the node another
        proxy claimed it for a moment ago. While JetStream cannot answer (electing a leader after losing a server
        takes seconds) it is tried again for up to CLAIM_WAIT_S; then None: placed unclaimed, as on one host."""
        if self.servers_kv is None:
            return None
        give_up = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                return await self._claim_once(self.servers_kv, model_id, node, exclude)
            except KeyWrongLastSequenceError:
                continue  # another proxy wrote between our read and our write: read again
            except Exception as exc:
                if time.monotonic() > give_up:
                    self.log.warning("placement of %s not claimed: %s", model_id, exc)
                    return None
                await asyncio.sleep(0.5)

    async def _claim_once(self, kv: KeyValue, model_id: str, node: str, exclude: set[str]) -> Claim:
        key = claim_key(model_id)
        mine = msgspec.msgpack.encode(
            ServerStatus(model=model_id, state=PLACING, runtime="", node=node, started_at=time.time())
        )
        try:
            return Claim(node, await kv.create(key, mine))
        except KeyWrongLastSequenceError:
            entry = await kv.get(key)
        theirs = msgspec.msgpack.decode(entry.value or b"", type=ServerStatus)
        fresh = time.time() - (theirs.started_at or 0.0) < start_budget(self.config)
        if fresh and theirs.node not in exclude:
            return Claim(theirs.node, 0)
        return Claim(node, await kv.update(key, mine, last=entry.revision))

    async def _unclaim(self, model_id: str, revision: int) -> None:
        """The placement failed: the claim must not send others to that node."""
        if self.servers_kv is not None:
            with contextlib.suppress(Exception):
                await self.servers_kv.delete(claim_key(model_id), last=revision)

    async def _hand_over_within_grace(
        self, node: str, model_id: str, msg: TranscribeRequest, sent: Sent
    ) -> TranscriptionResult:
        give_up = time.monotonic() + NODE_GRACE_S
        while True:
            try:
                return await self._hand_over(node, model_id, msg, sent)
            except AsrError as exc:
                if exc.kind != bus.NO_RESPONDERS or time.monotonic() > give_up or node not in self._live_nodes():
                    raise
                await asyncio.sleep(0.5)

    async def _hand_over(self, node: str, model_id: str, msg: TranscribeRequest, sent: Sent) -> TranscriptionResult:
        """The request served by `node`'s proxies; their partial replies relayed to our requester."""
        subject = endpoints.FORWARD.on(node).at(model_id).subject
        timeout = (msg.timeout or self.config.gateway.request_timeout) + 5
        what = f"node {node} ({model_id})"
        replies = bus.stream_replies(
            self.connection, subject, codec.encode(msg), timeout=timeout, what=what, silence=SILENCE_S
        )
        async for reply in replies:
            message = bus.decode_streamed(reply, what)
            if isinstance(message, TranscriptionResult):
                return message
            if message.segment is None or message.segment.end > sent.until:
                sent.until = message.segment.end if message.segment is not None else sent.until
                await send_partial(message)
        raise AsrError(errors.INTERNAL, f"{what} ended without a result")

    # -- serving here ------------------------------------------------------------------
    async def _transcribe(self, msg: TranscribeRequest, model_id: str, sent: Sent | None = None) -> TranscriptionResult:
        try:
            return await self._transcribe_here(msg, model_id, sent or Sent())
        finally:
            if msg.audio_ref:
                # The upload was for this one request: free the space now rather than wait for the bucket's TTL.
                # Not sooner: if this node is lost meanwhile, the request is placed again and reads it again.
                self.spawn(self._drop_audio(msg))

    async def _transcribe_here(self, msg: TranscribeRequest, model_id: str, sent: Sent) -> TranscriptionResult:
        t0 = time.monotonic()
        deadline = t0 + (msg.timeout or self.config.gateway.request_timeout)
        cold = False
        relay = Relay(self, msg, model_id, t0, sent)
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
        status = self.ready.values.get(subjects.server_key(self.node_name, model_id))
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
                    endpoints.LIFECYCLE_ENSURE.on(self.node_name),
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
            audio = obj.data or b""
        else:
            audio = msg.audio
        if not audio:
            raise AsrError(errors.BAD_REQUEST, "no audio: the file is empty")
        return audio

    async def _drop_audio(self, msg: TranscribeRequest) -> None:
        if not _AUDIO_BUCKET.fullmatch(msg.audio_bucket or ""):
            return
        try:
            store = await self.connection.jetstream().object_store(msg.audio_bucket or "")
            await store.delete(msg.audio_ref or "")
        except Exception as exc:  # gone already, or the bus is down: the bucket's TTL removes it
            self.log.info("could not delete audio %s: %s", msg.audio_ref, exc)

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


@dataclass
class Sent:
    """How far a streaming requester's text has been relayed (the end of the last segment sent)."""

    until: float = -1.0


@dataclass(frozen=True)
class Claim:
    node: str
    revision: int  # of our own claim; 0 when the claim is another proxy's


class Relay:
    """Where a request's decoding shows: progress on asr.progress.<model> at most every PROGRESS_EVERY_S, and for
    a requester that asked to stream, each segment as a partial reply (once, even across a retry)."""

    def __init__(self, proxy: ModelProxy, msg: TranscribeRequest, model_id: str, started: float, sent: Sent) -> None:
        self.proxy, self.msg, self.model_id, self.started = proxy, msg, model_id, started
        self.sent = sent  # end of the last segment relayed, also by another node before a retry here
        self.last_progress = 0.0

    async def segment(self, frame: SegmentFrame) -> None:
        end = frame.segment.end
        if end <= self.sent.until:
            return  # already relayed before a retry on a fresh server
        self.sent.until = end
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
