"""Durable transcription jobs (issue 21): a job's record, its checkpoint, and its states.

A job decodes a recording of any length through a streamed transcription and keeps, as it goes, the segments
decoded and where the decoder stands; one redelivered after a crash resumes there (TranscribeRequest.offset) instead
of from the start."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from schemas import errors
from schemas.errors import AsrError
from schemas.transcribe import Segment, TranscribeRequest, TranscriptionResult, Word, diarization

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ENDED: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")
STATUSES: tuple[JobStatus, ...] = ("queued", "running", *ENDED)
JOB_ID = re.compile(r"job_[0-9a-f]{32}")  # what a submission makes: anything else is not found, never a KV key


class JobCheckpoint(msgspec.Struct, kw_only=True):
    """What a running job has decoded: its segments (recording time) and the position the next decode starts at."""

    seek: float = 0.0  # seconds into the recording decoded for good
    duration: float = 0.0  # the recording's length, as far as the decode has told it
    segments: list[Segment] = []
    words: list[Word] = []
    saved_at: float = 0.0


class WebhookState(msgspec.Struct, kw_only=True):
    """The delivery of a job's webhook: one event (its end), one webhook-id, retried until a 2xx or given up."""

    attempts: int = 0
    delivered_at: float | None = None
    last_status: int | None = None  # the destination's last answer (None: it gave none)
    last_error: str | None = None
    gave_up: bool = False


class JobRecord(msgspec.Struct, kw_only=True):
    id: str
    owner: str  # the API key's application or the NATS user that submitted it
    model: str
    request: TranscribeRequest  # the transcription fields as submitted (audio elsewhere: the job's object)
    status: JobStatus = "queued"
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    audio_seconds: float = 0.0
    processed_seconds: float = 0.0
    attempts: int = 0
    resumed_from: float = 0.0  # where the last attempt started: its checkpoint's position (0: the beginning)
    error: str | None = None
    error_code: str | None = None  # the last error's symbolic code (schemas.errors.ErrorCode), when it had one
    error_type: str = "server_error"  # OpenAI's type: invalid_request_error when the job itself was wrong
    metadata: dict[str, str] = {}
    checkpoint: JobCheckpoint | None = None
    webhook_url: str | None = None  # POSTed the final record when the job ends (actors/jobs/webhooks.py)
    webhook: WebhookState | None = None
    # The names of its audio and result in ASR_AUDIO_jobs: secrets, never shown (an id is seen in URLs and logs, and
    # a name in that bucket is what lets a proxy read the object).
    audio_object: str = ""
    result_object: str = ""

    @property
    def progress(self) -> float:
        return min(1.0, self.processed_seconds / self.audio_seconds) if self.audio_seconds else 0.0


class SubmitJob(msgspec.Struct, kw_only=True):
    """asr.jobs.submit: `request` names its audio in the submitter's bucket (audio_ref, audio_bucket); the jobs
    actor moves it into its own durable bucket before it answers."""

    owner: str
    model: str
    request: TranscribeRequest
    metadata: dict[str, str] = {}
    webhook_url: str | None = None


class JobQuery(msgspec.Struct, kw_only=True):
    """asr.jobs.get / asr.jobs.result / asr.jobs.cancel. Another owner's job is not found (an admin sees all)."""

    owner: str
    id: str
    admin: bool = False


class ListJobs(msgspec.Struct, kw_only=True):
    owner: str
    admin: bool = False
    status: JobStatus | None = None
    limit: int = 20
    after: str | None = None  # the last id of the previous page


class JobPage(msgspec.Struct, kw_only=True):
    jobs: list[JobRecord]
    has_more: bool = False


class JobResult(msgspec.Struct, kw_only=True):
    job: JobRecord
    result: TranscriptionResult


class SecretQuery(msgspec.Struct, kw_only=True):
    """asr.jobs.webhook_secret: the signing secret of the owner's webhooks."""

    owner: str


class WebhookSecret(msgspec.Struct, kw_only=True):
    secret: str  # whsec_<base64>, as Standard Webhooks libraries take it


class JobErrorInfo(msgspec.Struct, kw_only=True):
    """OpenAI's error shape."""

    message: str
    type: str = "server_error"
    code: str | None = None
    param: str | None = None


class PublicJob(msgspec.Struct, kw_only=True):
    """A job as its owner sees it (GET /v1/audio/jobs/{id}, a webhook's `data`, the NATS replies and state
    messages): never its owner's name nor the names of its objects."""

    id: str
    object: str = "audio.job"
    status: JobStatus
    model: str
    created_at: int
    started_at: int | None = None
    finished_at: int | None = None
    progress: float = 0.0
    audio_seconds: float = 0.0
    processed_seconds: float = 0.0
    attempts: int = 0
    error: JobErrorInfo | None = None
    metadata: dict[str, str] = {}
    response_format: str = "json"
    webhook_url: str | None = None


def public(job: JobRecord) -> PublicJob:
    return PublicJob(
        id=job.id,
        status=job.status,
        model=job.model,
        created_at=int(job.created_at),
        started_at=int(job.started_at) if job.started_at else None,
        finished_at=int(job.finished_at) if job.finished_at else None,
        progress=round(job.progress, 4),
        audio_seconds=round(job.audio_seconds, 3),
        processed_seconds=round(job.processed_seconds, 3),
        attempts=job.attempts,
        error=JobErrorInfo(message=job.error, type=job.error_type, code=job.error_code) if job.error else None,
        metadata=job.metadata,
        response_format=job.request.response_format,
        webhook_url=job.webhook_url,
    )


def job_view(job: JobRecord) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(public(job))
    return view


# -- applications over NATS (asr.jobs.app.<user>.<op>: the owner is the subject's user, never a field) ----------


class AppSubmit(msgspec.Struct, kw_only=True):
    """asr.jobs.app.<user>.submit: the transcription fields (`request` without audio) and the upload's size; the
    answer names the subject the audio goes to, in chunks, then `complete`."""

    model: str = "whisper-1"
    request: TranscribeRequest = msgspec.field(default_factory=TranscribeRequest)
    size: int  # bytes of audio to come
    metadata: dict[str, str] = {}
    webhook_url: str | None = None


class UploadTicket(msgspec.Struct, kw_only=True):
    job_id: str
    upload_subject: str  # UploadChunk requests, only the submitter may publish there
    complete_subject: str  # then one UploadDone request: the job is queued (or refused) in its answer
    chunk_max_bytes: int
    expires_in: float  # seconds without a chunk after which the upload is dropped


class UploadChunk(msgspec.Struct, kw_only=True):
    job_id: str
    seq: int  # 0, 1, 2, ...: a chunk out of order is refused (a resend of the last one is acknowledged again)
    data: bytes


class UploadAck(msgspec.Struct, kw_only=True):
    job_id: str
    received: int  # bytes so far


class UploadDone(msgspec.Struct, kw_only=True):
    job_id: str


class AppJobQuery(msgspec.Struct, kw_only=True):
    """asr.jobs.app.<user>.get / .result / .cancel."""

    id: str


class AppListJobs(msgspec.Struct, kw_only=True):
    status: JobStatus | None = None
    limit: int = 20
    after: str | None = None


class PublicPage(msgspec.Struct, kw_only=True):
    jobs: list[PublicJob]
    has_more: bool = False


class PublicResult(msgspec.Struct, kw_only=True):
    job: PublicJob
    result: TranscriptionResult


def job_request_ok(request: TranscribeRequest) -> None:
    """What a durable job cannot take, a 400 at submission rather than a job that fails later: known speakers'
    samples (up to 4 MiB in every job record, listing and checkpoint: send them to /v1/audio/transcriptions),
    speaker counts that contradict each other."""
    if request.known_speakers:
        raise AsrError(
            errors.BAD_REQUEST,
            "known speakers are not taken by durable jobs (each job record would carry their samples): send them "
            "with POST /v1/audio/transcriptions, or let the job letter its speakers",
            param="known_speaker_names",
        )
    diarization(request)
