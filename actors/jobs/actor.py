"""Jobs actor: durable transcription jobs. A submission's audio moves into the jobs' own bucket (no time-to-live),
its record into ASR_JOBS, its id onto the work queue (one subject per owner); the worker (actors/jobs/worker.py)
decodes queued jobs with checkpoints. Every query names the owner the gateway checked: another owner's job is not
found, whatever its id."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from pathlib import Path

import msgspec

from actors.jobs import webhooks
from actors.jobs.notifier import Notifier
from actors.jobs.probe import NotAudio, probe
from actors.jobs.store import JobStore
from actors.jobs.uploads import CHUNK_MAX, IDLE_S, Uploads
from actors.jobs.worker import JobWorker
from framework.actor import Actor, endpoint
from framework.config import Config
from framework.transport import read_object
from schemas import codec, endpoints, errors, subjects
from schemas.errors import AsrError, ErrorCode
from schemas.jobs import (
    ENDED,
    JOB_ID,
    AppJobQuery,
    AppListJobs,
    AppSubmit,
    JobPage,
    JobQuery,
    JobRecord,
    JobResult,
    ListJobs,
    PublicJob,
    PublicPage,
    PublicResult,
    SecretQuery,
    SubmitJob,
    UploadAck,
    UploadChunk,
    UploadDone,
    UploadTicket,
    WebhookSecret,
    job_request_ok,
    public,
)
from schemas.registry import GetModel, check_transcriber, not_installed
from schemas.transcribe import TranscribeRequest

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
        self.uploads = Uploads(int(self.cfg.max_upload_mb * 2**20))

    async def setup(self) -> None:
        self.store = JobStore(self.transport, on_change=self.state_changed)
        self.notifier = Notifier(self, self.store)
        self.worker = JobWorker(self, self.store, self.notifier)
        self.loop(self.worker.run())
        self.loop(self.notifier.run())
        self.loop(self._sweeping())
        self.loop(self._expiring())

    async def teardown(self) -> None:
        self.uploads.close()
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
        """From the gateway: the audio staged in its bucket, the owner the API key it checked."""
        request = msg.request
        job_request_ok(request)
        await self._admissible(msg.owner, msg.webhook_url)
        if not request.audio_ref or request.audio_bucket != subjects.audio_bucket("gateway"):
            raise AsrError(errors.BAD_REQUEST, "a job's audio must be staged in the gateway's bucket", param="file")
        staged = await self.transport.object_store(request.audio_bucket)
        # Copied through a spool file, never whole in memory: a recording may be gigabytes.
        spool = self.uploads.dir / ("staged-" + secrets.token_hex(8))
        try:
            try:
                with spool.open("wb") as sink:
                    await read_object(staged, request.audio_ref, into=sink)
            except Exception as exc:
                raise AsrError(errors.BAD_REQUEST, f"the uploaded audio is gone ({exc})", param="file") from exc
            job_id = "job_" + secrets.token_hex(16)
            size = spool.stat().st_size
            return await self._accept(job_id, msg.owner, msg.model, request, spool, size, msg.metadata, msg.webhook_url)
        finally:  # stored in the jobs' bucket, or refused: neither copy is needed any more
            spool.unlink(missing_ok=True)
            try:
                await staged.delete(request.audio_ref)
            except Exception as exc:  # its bucket's TTL removes it
                self.log.info("could not delete the staged audio %s: %s", request.audio_ref, exc)

    async def _admissible(self, owner: str, webhook_url: str | None) -> None:
        """What is checked before any audio is stored: the owner's name, its queue's length, the webhook URL."""
        if not re.fullmatch(OWNER, owner):
            raise AsrError(errors.BAD_REQUEST, f"owner {owner!r} is not a valid owner name")
        if webhook_url is not None:
            await webhooks.check_url(webhook_url, self.cfg.webhook_allowed_hosts)
        queued = [j for j in await self._store().all() if j.owner == owner and j.status == "queued"]
        if len(queued) >= self.cfg.max_queued_per_app:
            raise AsrError(
                errors.OVERLOADED,
                f"{len(queued)} jobs of yours are queued already "
                f"(jobs.max_queued_per_app = {self.cfg.max_queued_per_app})",
                retry_after=60.0,
                kind=ErrorCode.RATE_LIMIT_EXCEEDED,
            )

    async def _accept(
        self,
        job_id: str,
        owner: str,
        model: str,
        request: TranscribeRequest,
        audio: bytes | Path,
        size: int,
        metadata: dict[str, str],
        webhook_url: str | None,
    ) -> JobRecord:
        """Open the audio (400 when it is not audio), check the room (507), store audio and record, then queue."""
        store = self._store()
        seconds = await self._opened(audio, request.filename, size)
        await self._check_room(size)
        kept = msgspec.structs.replace(request, audio=b"", audio_ref=None, audio_bucket=None, stream=False)
        record = JobRecord(
            id=job_id,
            owner=owner,
            model=model,
            request=kept,
            created_at=time.time(),
            metadata=metadata,
            audio_object="audio-" + secrets.token_hex(16),
            result_object="result-" + secrets.token_hex(16),
            audio_seconds=seconds,
            webhook_url=webhook_url,
        )
        try:
            await store.put_audio(record, audio)
            await store.create(record)
            # Queued last: a job on the queue always has its record and audio. JetStream acknowledges the publish.
            await self.connection.jetstream().publish(subjects.job_queue(owner), job_id.encode())
        except Exception as exc:  # never queued: nothing of it may stay (a record that never runs, orphan audio)
            await store.forget(record)
            raise AsrError(errors.UNAVAILABLE, f"the job could not be queued: {exc!r}") from exc
        self.log.info("job queued", extra={"job": job_id, "owner": owner, "model": model})
        await self.state_changed(record)
        return record

    async def state_changed(self, record: JobRecord) -> None:
        """The job's state to its owner (and admin applications): asr.jobs.state.<owner>.<id>, JSON."""
        view = codec.encode(public(record), codec.JSON)
        try:
            await self.transport.publish(
                subjects.job_state(record.owner, record.id), view, headers={codec.CONTENT_TYPE: codec.JSON}
            )
        except Exception as exc:  # live only: a lost one is seen in the next, or by asking
            self.log.info("job %s: its state was not published: %s", record.id, exc)

    @staticmethod
    async def _opened(audio: bytes | Path, filename: str, size: int) -> float:
        """The recording's length; 400 now, before the 202, when it is empty or not audio."""
        if not size:
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

    # -- applications over NATS: the owner is the subject's user (only it may publish there), never a field ------

    @staticmethod
    def _app(subject: str) -> tuple[str, str]:
        """(user, owner) of a request on asr.jobs.app.<user>.<op>."""
        user = subjects.app_of_jobs_subject(subject)
        return user, subjects.nats_owner(user)

    @endpoint(endpoints.JOBS_APP_SUBMIT)
    async def app_submit(self, msg: AppSubmit, subject: str) -> UploadTicket:
        """A job announced: checked (model, webhook, queue, size) before any audio comes; the answer names where
        its chunks go, on this node, which spools them."""
        user, owner = self._app(subject)
        if msg.request.audio or msg.request.audio_ref:
            raise AsrError(errors.BAD_REQUEST, "the audio goes to the upload subject, in chunks", param="audio")
        _metadata_ok(msg.metadata)
        job_request_ok(msg.request)
        await self._admissible(owner, msg.webhook_url)
        query = GetModel(id=msg.model, task=msg.request.task, language=msg.request.language)
        info = await self.transport.request(endpoints.REGISTRY_GET, query, timeout=10.0)
        if info.installed is False:
            raise not_installed(info)
        check_transcriber(info)
        upload = self.uploads.start("job_" + secrets.token_hex(16), owner, info.id, msg)
        return UploadTicket(
            job_id=upload.job_id,
            upload_subject=subjects.on_node(subjects.jobs_app(user, "upload"), self.node_name),
            complete_subject=subjects.on_node(subjects.jobs_app(user, "complete"), self.node_name),
            chunk_max_bytes=CHUNK_MAX,
            expires_in=IDLE_S,
        )

    @endpoint(endpoints.JOBS_APP_UPLOAD)
    async def app_upload(self, msg: UploadChunk, subject: str) -> UploadAck:
        _, owner = self._app(subject)
        upload = self.uploads.find(msg.job_id, owner)
        return UploadAck(job_id=msg.job_id, received=self.uploads.add(upload, msg.seq, msg.data))

    @endpoint(endpoints.JOBS_APP_COMPLETE)
    async def app_complete(self, msg: UploadDone, subject: str) -> PublicJob:
        """The upload is whole: opened, stored and queued as an HTTP submission is (or refused, and dropped)."""
        _, owner = self._app(subject)
        upload = self.uploads.find(msg.job_id, owner)
        if upload.received != upload.submission.size:
            problem = f"{upload.received} of the {upload.submission.size} bytes announced arrived: send the rest"
            raise AsrError(errors.BAD_REQUEST, problem, param="size")
        submission = upload.submission
        try:
            record = await self._accept(
                upload.job_id,
                owner,
                upload.model,
                submission.request,
                upload.path,
                upload.received,
                submission.metadata,
                submission.webhook_url,
            )
        finally:
            self.uploads.drop(upload.job_id)
        return public(record)

    @endpoint(endpoints.JOBS_APP_GET)
    async def app_get(self, msg: AppJobQuery, subject: str) -> PublicJob:
        return public(await self._owned(JobQuery(owner=self._app(subject)[1], id=msg.id)))

    @endpoint(endpoints.JOBS_APP_RESULT)
    async def app_result(self, msg: AppJobQuery, subject: str) -> PublicResult:
        found = await self.result(JobQuery(owner=self._app(subject)[1], id=msg.id))
        return PublicResult(job=public(found.job), result=found.result)

    @endpoint(endpoints.JOBS_APP_LIST)
    async def app_list(self, msg: AppListJobs, subject: str) -> PublicPage:
        query = ListJobs(owner=self._app(subject)[1], status=msg.status, limit=msg.limit, after=msg.after)
        page = await self.list_jobs(query)
        return PublicPage(jobs=[public(j) for j in page.jobs], has_more=page.has_more)

    @endpoint(endpoints.JOBS_APP_CANCEL)
    async def app_cancel(self, msg: AppJobQuery, subject: str) -> PublicJob:
        return public(await self.cancel(JobQuery(owner=self._app(subject)[1], id=msg.id)))

    async def _expiring(self) -> None:
        while True:
            await asyncio.sleep(IDLE_S / 10)
            for job_id in self.uploads.expire():
                self.log.info("upload %s dropped: no chunk for %g s", job_id, IDLE_S)


def _metadata_ok(metadata: dict[str, str]) -> None:
    """At most 16 strings (keys <= 64, values <= 512 characters): echoed back, not a store."""
    if len(metadata) > 16 or not all(len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()):
        problem = "metadata: at most 16 string values (keys <= 64, values <= 512 characters)"
        raise AsrError(errors.BAD_REQUEST, problem, param="metadata")
