"""Jobs actor: durable transcription jobs. A submission's audio moves into the jobs' own bucket (no time-to-live),
its record into ASR_JOBS, its id onto the work queue (one subject per owner); the worker (actors/jobs/worker.py)
decodes queued jobs with checkpoints. Every query names the owner the gateway checked: another owner's job is not
found, whatever its id."""

from __future__ import annotations

import asyncio
import re
import secrets
import time

import msgspec

from actors.jobs import webhooks
from actors.jobs.notifier import Notifier
from actors.jobs.probe import NotAudio, probe
from actors.jobs.store import JobStore
from actors.jobs.worker import JobWorker
from framework.actor import Actor, endpoint
from framework.config import Config
from schemas import endpoints, errors, subjects
from schemas.errors import AsrError, ErrorCode
from schemas.jobs import (
    ENDED,
    JOB_ID,
    JobPage,
    JobQuery,
    JobRecord,
    JobResult,
    ListJobs,
    SecretQuery,
    SubmitJob,
    WebhookSecret,
)

OWNER = subjects.OWNER_NAME  # an owner is one subject token: its queue is asr.jobs.queue.<owner>
SWEEP_EVERY_S = 3600.0  # retention: ended jobs past jobs.retention are deleted this often


class Jobs(Actor):
    name = "jobs"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config.jobs
        self.store: JobStore | None = None
        self.worker: JobWorker | None = None
        self.notifier: Notifier | None = None

    async def setup(self) -> None:
        self.store = JobStore(self.transport)
        self.notifier = Notifier(self, self.store)
        self.worker = JobWorker(self, self.store, self.notifier)
        self.loop(self.worker.run())
        self.loop(self.notifier.run())
        self.loop(self._sweeping())

    async def teardown(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.notifier is not None:
            await self.notifier.stop()

    def _store(self) -> JobStore:
        if self.store is None:
            raise AsrError(errors.UNAVAILABLE, "the jobs actor is starting")
        return self.store

    @endpoint(endpoints.JOBS_SUBMIT)
    async def submit(self, msg: SubmitJob) -> JobRecord:
        store = self._store()
        if not re.fullmatch(OWNER, msg.owner):
            raise AsrError(errors.BAD_REQUEST, f"owner {msg.owner!r} is not a valid owner name")
        request = msg.request
        if msg.webhook_url is not None:  # before anything is stored: a refused URL leaves nothing behind
            await webhooks.check_url(msg.webhook_url, self.cfg.webhook_allowed_hosts)
        if not request.audio_ref or request.audio_bucket != subjects.audio_bucket("gateway"):
            raise AsrError(errors.BAD_REQUEST, "a job's audio must be staged in the gateway's bucket", param="file")
        queued = [j for j in await store.all() if j.owner == msg.owner and j.status == "queued"]
        if len(queued) >= self.cfg.max_queued_per_app:
            raise AsrError(
                errors.OVERLOADED,
                f"{len(queued)} jobs of yours are queued already "
                f"(jobs.max_queued_per_app = {self.cfg.max_queued_per_app})",
                retry_after=60.0,
                kind=ErrorCode.RATE_LIMIT_EXCEEDED,
            )
        staged = await self.transport.object_store(request.audio_bucket)
        try:
            audio = (await staged.get(request.audio_ref)).data or b""
        except Exception as exc:
            raise AsrError(errors.BAD_REQUEST, f"the uploaded audio is gone ({exc})", param="file") from exc
        try:
            seconds = await self._opened(audio, request.filename)
            await self._check_room(len(audio))
        except AsrError:
            await staged.delete(request.audio_ref)  # refused: nothing of it stays
            raise
        job_id = "job_" + secrets.token_hex(16)
        kept = msgspec.structs.replace(request, audio=b"", audio_ref=None, audio_bucket=None, stream=False)
        record = JobRecord(
            id=job_id,
            owner=msg.owner,
            model=msg.model,
            request=kept,
            created_at=time.time(),
            metadata=msg.metadata,
            audio_object="audio-" + secrets.token_hex(16),
            result_object="result-" + secrets.token_hex(16),
            audio_seconds=seconds,
            webhook_url=msg.webhook_url,
        )
        await store.put_audio(record, audio)
        try:
            await staged.delete(request.audio_ref)
        except Exception as exc:  # its bucket's TTL removes it
            self.log.info("could not delete the staged audio %s: %s", request.audio_ref, exc)
        try:
            await store.create(record)
            # Queued last: a job on the queue always has its record and audio. JetStream acknowledges the publish.
            await self.connection.jetstream().publish(subjects.job_queue(msg.owner), job_id.encode())
        except Exception as exc:  # never queued: nothing of it may stay (a record that never runs, orphan audio)
            await store.forget(record)
            raise AsrError(errors.UNAVAILABLE, f"the job could not be queued: {exc!r}") from exc
        self.log.info("job queued", extra={"job": job_id, "owner": msg.owner, "model": msg.model})
        return record

    @staticmethod
    async def _opened(audio: bytes, filename: str) -> float:
        """The recording's length; 400 now, before the 202, when it is empty or not audio."""
        if not audio:
            raise AsrError(errors.BAD_REQUEST, f"the file {filename!r} is empty", param="file")
        try:
            return await asyncio.to_thread(probe, audio)
        except NotAudio as exc:
            raise AsrError(
                errors.BAD_REQUEST,
                f"the file {filename!r} is not audio this service can decode: {exc}",
                param="file",
                kind=ErrorCode.UNSUPPORTED_AUDIO,
            ) from exc

    async def _check_room(self, adding: int) -> None:
        """507 before anything is stored when jobs hold jobs.storage_max_gb already."""
        bucket = await self.connection.jetstream().stream_info(
            "OBJ_" + subjects.audio_bucket(subjects.JOBS_AUDIO_OWNER)
        )
        held, limit = bucket.state.bytes or 0, int(self.cfg.storage_max_gb * 2**30)
        if held + adding > limit:
            raise AsrError(
                errors.INSUFFICIENT_STORAGE,
                f"jobs hold {held / 2**30:.2f} GB of the {self.cfg.storage_max_gb:g} GB they may "
                "(jobs.storage_max_gb): wait for jobs to end and be deleted (jobs.retention)",
                kind=ErrorCode.STORAGE_FULL,
            )

    async def sweep(self) -> int:
        """Delete ended jobs older than jobs.retention: record, audio, result. Returns how many."""
        cutoff = time.time() - self.cfg.retention
        store = self._store()
        gone = 0
        for job in await store.all():
            if job.status in ENDED and (job.finished_at or job.created_at) < cutoff:
                await store.forget(job)
                gone += 1
        if gone:
            self.log.info("deleted %d ended jobs older than jobs.retention", gone)
        return gone

    async def _sweeping(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await self.sweep()
            except Exception as exc:
                self.log.warning("job retention sweep failed: %s", exc)

    async def _owned(self, query: JobQuery) -> JobRecord:
        record = await self._store().get(query.id) if JOB_ID.fullmatch(query.id) else None
        if record is None or (record.owner != query.owner and not query.admin):
            raise AsrError(errors.NOT_FOUND, f"no job {query.id!r}", param="job_id", kind=ErrorCode.JOB_NOT_FOUND)
        return record

    @endpoint(endpoints.JOBS_GET)
    async def get(self, query: JobQuery) -> JobRecord:
        return await self._owned(query)

    @endpoint(endpoints.JOBS_RESULT)
    async def result(self, query: JobQuery) -> JobResult:
        record = await self._owned(query)
        if record.status != "completed":
            problem = f"job {record.id} is {record.status}, not completed"
            raise AsrError(errors.CONFLICT, problem, param="job_id", kind=ErrorCode.JOB_NOT_COMPLETED)
        return JobResult(job=record, result=await self._store().result(record))

    @endpoint(endpoints.JOBS_LIST)
    async def list_jobs(self, query: ListJobs) -> JobPage:
        jobs = [
            j
            for j in await self._store().all()
            if (query.admin or j.owner == query.owner) and (query.status is None or j.status == query.status)
        ]
        jobs.sort(key=lambda j: (j.created_at, j.id), reverse=True)  # newest first
        if query.after:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(query.after) + 1 :] if query.after in ids else []
        limit = max(1, min(query.limit, 100))
        return JobPage(jobs=jobs[:limit], has_more=len(jobs) > limit)

    @endpoint(endpoints.JOBS_CANCEL)
    async def cancel(self, query: JobQuery) -> JobRecord:
        record = await self._owned(query)
        if record.status in ENDED:
            return record

        def cancel(r: JobRecord) -> None:
            if r.status not in ENDED:
                r.status, r.finished_at = "cancelled", time.time()

        before = record.status
        record = await self._store().change(record.id, cancel)
        if self.worker is not None:
            self.worker.cancelled(record.id)  # a decode under way here stops at once; elsewhere at its next beat
        if record.status == "cancelled" and before not in ENDED and self.notifier is not None:
            await self.notifier.ended(record)
        return record

    @endpoint(endpoints.JOBS_SECRET)
    async def webhook_secret(self, query: SecretQuery) -> WebhookSecret:
        """The owner's webhook signing secret (whsec_...), to verify the signatures of its jobs' webhooks."""
        if self.notifier is None:
            raise AsrError(errors.UNAVAILABLE, "the jobs actor is starting")
        return WebhookSecret(secret=webhooks.shown_secret(await self.notifier.secret(query.owner)))
