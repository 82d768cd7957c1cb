"""Uploads of applications' jobs over NATS: chunks of at most 1 MB (one message carries at most max_payload, and
applications have no JetStream), written to a spool file as they arrive so that a recording of gigabytes never sits
in memory; dropped when their sender goes quiet. An upload lives on the node that gave its ticket, which is why its
chunks go to that node's own subject."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas import errors
from schemas.errors import AsrError, ErrorCode
from schemas.jobs import AppSubmit

CHUNK_MAX = 1 << 20  # bytes of audio per chunk
IDLE_S = 300.0  # an upload without a chunk this long is dropped
PER_OWNER = 4  # uploads an owner may have open at once


@dataclass
class Upload:
    job_id: str
    owner: str
    model: str
    submission: AppSubmit
    path: Path
    received: int = 0
    next_seq: int = 0
    last_seen: float = field(default_factory=time.monotonic)


class Uploads:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dir = Path(tempfile.mkdtemp(prefix="asrpro-job-uploads-"))
        self.open: dict[str, Upload] = {}

    def start(self, job_id: str, owner: str, model: str, submission: AppSubmit) -> Upload:
        if submission.size <= 0:
            raise AsrError(errors.BAD_REQUEST, "size must be the upload's length in bytes (> 0)", param="size")
        if submission.size > self.max_bytes:
            raise AsrError(
                errors.TOO_LARGE,
                f"{submission.size} bytes is over jobs.max_upload_mb ({self.max_bytes >> 20} MB)",
                param="size",
                kind=ErrorCode.FILE_TOO_LARGE,
            )
        if sum(u.owner == owner for u in self.open.values()) >= PER_OWNER:
            raise AsrError(
                errors.OVERLOADED,
                f"{PER_OWNER} uploads of yours are open already: complete them first",
                retry_after=10.0,
                kind=ErrorCode.RATE_LIMIT_EXCEEDED,
            )
        upload = Upload(job_id, owner, model, submission, self.dir / job_id)
        upload.path.write_bytes(b"")
        self.open[job_id] = upload
        return upload

    def find(self, job_id: str, owner: str) -> Upload:
        """The owner's open upload; another owner's is not found, as if it did not exist."""
        upload = self.open.get(job_id)
        if upload is None or upload.owner != owner:
            raise AsrError(
                errors.NOT_FOUND,
                f"no open upload {job_id!r} on this node (expired after {IDLE_S:g} s idle, or completed)",
                param="job_id",
                kind=ErrorCode.JOB_NOT_FOUND,
            )
        return upload

    def add(self, upload: Upload, seq: int, data: bytes) -> int:
        """Append chunk `seq`; a resent last chunk is acknowledged again without being written twice."""
        if seq == upload.next_seq - 1:
            return upload.received
        if seq != upload.next_seq:
            raise AsrError(errors.BAD_REQUEST, f"chunk {seq} out of order: {upload.next_seq} expected", param="seq")
        if len(data) > CHUNK_MAX:
            raise AsrError(errors.TOO_LARGE, f"a chunk holds at most {CHUNK_MAX} bytes", kind=ErrorCode.TOO_LARGE)
        if upload.received + len(data) > upload.submission.size:
            self.drop(upload.job_id)
            raise AsrError(
                errors.BAD_REQUEST,
                f"more than the {upload.submission.size} bytes announced: upload dropped, submit again",
                param="size",
            )
        with upload.path.open("ab") as spool:
            spool.write(data)
        upload.received += len(data)
        upload.next_seq += 1
        upload.last_seen = time.monotonic()
        return upload.received

    def drop(self, job_id: str) -> None:
        upload = self.open.pop(job_id, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)

    def expire(self) -> list[str]:
        now = time.monotonic()
        gone = [u.job_id for u in self.open.values() if now - u.last_seen > IDLE_S]
        for job_id in gone:
            self.drop(job_id)
        return gone

    def close(self) -> None:
        for job_id in list(self.open):
            self.drop(job_id)
        with contextlib.suppress(OSError):
            self.dir.rmdir()
