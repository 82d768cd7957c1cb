"""The jobs worker: takes queued jobs off the work queue, owners in turn, and decodes each with checkpoints.

The queue is the JetStream stream ASR_JOB_QUEUE (work-queue retention), one subject and one durable pull consumer
per owner, so that one owner's thousand jobs wait behind each other, not in front of another owner's one. A job's
message is acknowledged only once its record says it ended; while it decodes the worker tells JetStream it is in
progress, so a crash of the worker (or of its node) is a redelivery after ack_wait, which resumes from the job's
last checkpoint. A redelivered job whose record says it ended is acknowledged and nothing else: a job completes
once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from actors.jobs.checkpoints import decode_with_checkpoints
from asrpro import client
from framework.cancelling import still_running
from schemas import subjects
from schemas.errors import AsrError
from schemas.jobs import ENDED, JobCheckpoint, JobRecord
from schemas.transcribe import TranscribeRequest

if TYPE_CHECKING:
    from actors.jobs.actor import Jobs
    from actors.jobs.notifier import Notifier
    from actors.jobs.store import JobStore

BEAT_S = 10.0  # well inside jobs.ack_wait (at least 3 beats)
IDLE_S = 1.0  # between looks at an empty queue
# 4xx from the proxy: the job itself is wrong (its audio does not decode, its language is unknown): no retry.
CLIENT_ERRORS = ("400", "404", "413", "415")


class Cancelled(Exception):
    pass


class JobWorker:
    def __init__(self, actor: Jobs, store: JobStore, notifier: Notifier) -> None:
        self.actor = actor
        self.store = store
        self.notifier = notifier
        self.cfg = actor.config.jobs
        self.slots = asyncio.Semaphore(max(1, self.cfg.max_running))
        self.subscriptions: dict[str, Any] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.stopping = False

    async def stop(self) -> None:
        """The actor stops: decodes under way end here unacknowledged, so JetStream gives them to the next worker,
        which resumes them from their checkpoints."""
        self.stopping = True
        for task in list(self.running.values()):
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=5)
        # Not left to the connection's drain: a pull subscription whose fetch was cancelled would hold it for its
        # whole drain timeout (30 s), past the supervisor's patience.
        for subscription in self.subscriptions.values():
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def cancelled(self, job_id: str) -> None:
        task = self.running.get(job_id)
        if task is not None:
            task.cancel()

    async def run(self) -> None:
        while still_running():  # framework.cancelling: a lost cancellation ends it too
            try:
                took = await self._round()
            except Exception as exc:  # the bus is down, the stream is being made: look again soon
                self.actor.log.warning("job queue: %s", exc)
                took = False
            if not took:
                await asyncio.sleep(IDLE_S)

    async def _owners(self) -> list[str]:
        """The owners with jobs waiting: the queue's subjects that hold messages."""
        js = self.actor.connection.jetstream()
        try:
            info = await js.stream_info(subjects.JOBS_STREAM, subjects_filter=subjects.JOBS_QUEUE_ALL)
        except NotFoundError:
            return []
        found = info.state.subjects or {}
        return sorted(s.removeprefix(subjects.JOBS_QUEUE_PREFIX) for s, count in found.items() if count)

    async def _round(self) -> bool:
        """One job of each owner with jobs waiting, in turn, as slots free up; False when none waited."""
        took = False
        for owner in await self._owners():
            await self.slots.acquire()
            try:
                message = await self._next(owner)
            except Exception as exc:  # this owner's consumer only: the others are still served
                self.slots.release()
                self.subscriptions.pop(owner, None)  # made again next round (deleted, or its server restarted)
                self.actor.log.warning("job queue of %s: %s", owner, exc)
                continue
            if message is None:
                self.slots.release()
                continue
            took = True
            job_id = message.data.decode()
            if job_id in self.running:  # redelivered while it still decodes here (beats lost): left to this one
                self.slots.release()
                continue
            task = asyncio.ensure_future(self._process(job_id, message))
            self.running[job_id] = task
            task.add_done_callback(self._finished(job_id))
        return took

    def _finished(self, job_id: str) -> Any:
        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(job_id, None)
            self.slots.release()

        return done

    async def _next(self, owner: str) -> Any:
        subscription = self.subscriptions.get(owner)
        if subscription is None:
            js = self.actor.connection.jetstream()
            config = ConsumerConfig(ack_wait=self.cfg.ack_wait, max_ack_pending=1000)
            subscription = await js.pull_subscribe(
                subjects.job_queue(owner), durable=f"jobs-{owner}", stream=subjects.JOBS_STREAM, config=config
            )
            self.subscriptions[owner] = subscription
        try:
            [message] = await subscription.fetch(1, timeout=0.2)
        except TimeoutError:
            return None
        return message

    async def _process(self, job_id: str, message: Any) -> None:
        record = await self.store.get(job_id)
        if record is None or record.status in ENDED:  # cancelled while queued, or done before a crash lost the ack
            await message.ack()
            return
        attempt = message.metadata.num_delivered

        def start(r: JobRecord) -> None:
            if r.status in ENDED:  # cancelled since it was read: a cancel is never undone
                return
            r.status, r.attempts, r.error = "running", attempt, None
            r.started_at = r.started_at or time.time()
            r.resumed_from = r.checkpoint.seek if r.checkpoint else 0.0

        record = await self.store.change(job_id, start)
        if record.status in ENDED:
            await message.ack()
            return
        self.actor.log.info("job running", extra={"job": job_id, "attempt": attempt, "owner": record.owner})
        beat = asyncio.ensure_future(self._beat(job_id, message))
        try:
            result = await self._decode(record)
        except asyncio.CancelledError:
            beat.cancel()
            if self.stopping:
                with contextlib.suppress(Exception):
                    await message.nak()  # to the next worker at once, not after ack_wait
                raise
            current = await self.store.get(job_id)
            if current is None or current.status in ENDED:
                await message.ack()  # cancelled by its owner: its record says so already
                self.actor.log.info("job cancelled", extra={"job": job_id})
            else:
                await message.nak()
            return
        except Exception as exc:
            beat.cancel()
            await self._failed(job_id, message, attempt, exc)
            return
        beat.cancel()
        await self.store.put_result(record, result)

        def complete(r: JobRecord) -> None:
            if r.status not in ENDED:
                r.status, r.finished_at = "completed", time.time()
                r.audio_seconds = r.processed_seconds = result.duration
                r.checkpoint = None  # the result holds it all now

        record = await self.store.change(job_id, complete)
        if record.status == "completed":
            await self.notifier.ended(record)  # queued before the ack: a crash between them re-sends, never loses it
        await message.ack()
        if not self.cfg.keep_audio:
            await self.store.drop_audio(record)
        self.actor.log.info("job completed", extra={"job": job_id, "audio_s": result.duration})

    async def _decode(self, record: JobRecord) -> Any:
        request = msgspec.structs.replace(
            record.request,
            audio_ref=record.audio_object,
            audio_bucket=subjects.audio_bucket(subjects.JOBS_AUDIO_OWNER),
            keep_audio=True,
            priority="batch",  # after interactive requests, on all slots but one (actors/proxy/queue.py)
            request_id=f"{record.id}-{record.attempts}",
            # The proxy's deadline for the whole decode (its default is the gateway's request_timeout).
            timeout=min(self.cfg.decode_timeout, 86400.0),
        )
        nc = self.actor.connection

        def decode(message: TranscribeRequest) -> Any:
            return client.transcribe_stream(nc, record.model, message, timeout=self.cfg.decode_timeout)

        async def save(checkpoint: JobCheckpoint) -> None:
            def keep(r: JobRecord) -> None:
                r.checkpoint = checkpoint
                r.processed_seconds = checkpoint.seek
                r.audio_seconds = max(r.audio_seconds, checkpoint.duration)

            if (await self.store.change(record.id, keep)).status == "cancelled":
                raise asyncio.CancelledError

        try:
            return await decode_with_checkpoints(
                request, record.checkpoint, decode, save, every_s=self.cfg.checkpoint_every
            )
        except asyncio.CancelledError:
            # The proxy decoding it stops too (the cancel token travels with every resumed request).
            await asyncio.shield(client.cancel(nc, request, "job cancelled or its worker stopping"))
            raise

    async def _beat(self, job_id: str, message: Any) -> None:
        """In progress, every BEAT_S, while the job decodes; a cancel made on another node stops it here."""
        while True:
            await asyncio.sleep(min(BEAT_S, self.cfg.ack_wait / 3))
            try:
                await message.in_progress()
                record = await self.store.get(job_id)
            except Exception as exc:  # a hiccup of the bus: beat again next time, never stop beating
                self.actor.log.info("job %s heartbeat: %s", job_id, exc)
                continue
            if record is not None and record.status == "cancelled":
                self.cancelled(job_id)
                return

    async def _failed(self, job_id: str, message: Any, attempt: int, exc: Exception) -> None:
        why = exc.message if isinstance(exc, AsrError) else f"{type(exc).__name__}: {exc}"
        final = attempt >= self.cfg.max_deliveries or (isinstance(exc, AsrError) and exc.code in CLIENT_ERRORS)

        def fail(r: JobRecord) -> None:
            if r.status in ENDED:
                return
            r.error = why
            r.error_code = exc.kind.value if isinstance(exc, AsrError) and exc.kind else None
            client_error = isinstance(exc, AsrError) and exc.code.startswith("4")
            r.error_type = "invalid_request_error" if client_error else "server_error"
            if final:
                r.status, r.finished_at = "failed", time.time()
            else:
                r.status = "queued"

        record = await self.store.change(job_id, fail)
        if final and record.status == "failed":
            await self.notifier.ended(record)
        if final:
            await message.term()
            self.actor.log.warning("job failed", extra={"job": job_id, "attempt": attempt, "error": why})
        else:
            backoff = self.cfg.retry_backoff
            delay = backoff[min(attempt - 1, len(backoff) - 1)] if backoff else 0.0
            await message.nak(delay=delay)
            self.actor.log.warning(
                "job attempt failed: retrying", extra={"job": job_id, "attempt": attempt, "error": why, "delay": delay}
            )
