"""Durable transcription jobs (issue 21): a job's record, its checkpoint, and its states.

A job decodes a recording of any length through a streamed transcription and keeps, as it goes, the segments
decoded and where the decoder stands; one redelivered after a crash resumes there (TranscribeRequest.offset) instead
of from the start."""

from __future__ import annotations

from typing import Literal

import msgspec

from schemas.transcribe import Segment, TranscribeRequest, TranscriptionResult, Word

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ENDED: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")


class JobCheckpoint(msgspec.Struct, kw_only=True):
    """What a running job has decoded: its segments (recording time) and the position the next decode starts at."""

    seek: float = 0.0  # seconds into the recording decoded for good
    duration: float = 0.0  # the recording's length, as far as the decode has told it
    segments: list[Segment] = []
    words: list[Word] = []
    saved_at: float = 0.0


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
    metadata: dict[str, str] = {}
    checkpoint: JobCheckpoint | None = None
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
