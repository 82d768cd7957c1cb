"""Where jobs live: records in the KV bucket ASR_JOBS (compare-and-set, so a cancel and a checkpoint never undo each
other), audio and results in the object store bucket ASR_AUDIO_jobs, which has no time-to-live."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from framework.transport import KeyValueStore, ObjectStoreLike, Transport, read_object
from schemas import errors, subjects
from schemas.errors import AsrError
from schemas.jobs import JOB_ID, JobRecord
from schemas.kv import JOB
from schemas.transcribe import TranscriptionResult

_decode_result = msgspec.msgpack.Decoder(TranscriptionResult).decode
SECRET_KEY = "webhook-secret"  # in ASR_JOBS beside the records: the service's webhook signing secret


class JobStore:
    def __init__(self, transport: Transport, on_change: Callable[[JobRecord], Awaitable[None]] | None = None) -> None:
        self.transport = transport
        self.on_change = on_change  # told every change of a record (its owner's state messages)
        self._kv: KeyValueStore | None = None
        self._files: ObjectStoreLike | None = None

    async def kv(self) -> KeyValueStore:
        if self._kv is None:
            self._kv = await self.transport.kv(JOB.bucket)
        return self._kv

    async def files(self) -> ObjectStoreLike:
        if self._files is None:
            self._files = await self.transport.object_store(subjects.audio_bucket(subjects.JOBS_AUDIO_OWNER))
        return self._files

    async def create(self, record: JobRecord) -> None:
        await (await self.kv()).create(JOB.key(record.id), JOB.encode(record))

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            entry = await (await self.kv()).get(JOB.key(job_id))
        except KeyNotFoundError:
            return None
        return JOB.decode(entry.value) if entry.value else None

    async def change(self, job_id: str, change: Callable[[JobRecord], None]) -> JobRecord:
        """Apply `change` to the record with compare-and-set, again when another writer got there first."""
        kv = await self.kv()
        for _ in range(50):
            entry = await kv.get(JOB.key(job_id))
            record = JOB.decode(entry.value or b"")
            change(record)
            try:
                await kv.update(JOB.key(job_id), JOB.encode(record), last=entry.revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
                continue
            if self.on_change is not None:
                await self.on_change(record)
            return record
        raise AsrError(errors.UNAVAILABLE, f"job {job_id} is too contended: try again")

    async def all(self) -> list[JobRecord]:
        kv = await self.kv()
        try:
            entries = await kv.current()
        except Exception as exc:  # a failure to list is an error, never "no jobs"
            raise AsrError(errors.UNAVAILABLE, f"the jobs could not be listed now: {exc!r}; try again") from exc
        # Records only: the bucket also holds the service's webhook secret.
        return [JOB.decode(e.value) for e in entries if JOB_ID.fullmatch(e.key) and e.value]

    async def server_secret(self) -> bytes:
        """The service's webhook secret: made by the first node that needs it, read by every other."""
        kv = await self.kv()
        for _ in range(3):
            try:
                entry = await kv.get(SECRET_KEY)
                if entry.value:
                    return bytes(entry.value)
            except KeyNotFoundError:
                pass
            try:
                await kv.create(SECRET_KEY, secrets.token_bytes(32))
            except Exception:  # another node made it first: read theirs
                continue
        raise AsrError(errors.UNAVAILABLE, "the webhook secret could not be read or made")

    async def put_audio(self, record: JobRecord, audio: bytes | Path) -> None:
        """The job's audio: bytes, or a spooled file, read in chunks (never whole in memory)."""
        if isinstance(audio, bytes):
            await (await self.files()).put(record.audio_object, audio)
            return
        with audio.open("rb") as spool:
            await (await self.files()).put(record.audio_object, spool)

    async def put_result(self, record: JobRecord, result: TranscriptionResult) -> None:
        await (await self.files()).put(record.result_object, msgspec.msgpack.encode(result))

    async def result(self, record: JobRecord) -> TranscriptionResult:
        return _decode_result(await read_object(await self.files(), record.result_object))

    async def forget(self, record: JobRecord) -> None:
        """Record, audio and result: gone."""
        for name in (record.audio_object, record.result_object):
            try:
                await (await self.files()).delete(name)
            except Exception:  # never stored, or gone already
                continue
        await (await self.kv()).purge(JOB.key(record.id))

    async def drop_audio(self, record: JobRecord) -> None:
        try:
            await (await self.files()).delete(record.audio_object)
        except Exception:  # gone already
            return
