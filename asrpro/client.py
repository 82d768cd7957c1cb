"""The client library for NATS users: transcribe audio (whole or streamed), with large audio through the object
store where the user may, and cancel a request nobody waits for any more.

    nc = await bus.connect("nats://127.0.0.1:4222", name="my-app", user="app", password="...")
    result = await client.transcribe(nc, "whisper-base", TranscribeRequest(audio=..., filename="a.wav"), timeout=60)
    async for part in client.transcribe_stream(nc, "whisper-base", request, timeout=60): ...

The HTTP gateway uses the same functions. Wire plumbing (connecting, typed requests, streamed replies) is
framework.bus; what travels is declared in schemas/ (docs/nats.md).
"""

from __future__ import annotations

import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import msgspec
from nats.aio.client import Client

from framework.bus import (
    RECONNECT_WAIT_S,
    check_inbox,
    decode_streamed,
    reconnected,
    request,
    sender_of,
    stream_replies,
)
from schemas import codec, endpoints, errors, subjects
from schemas.errors import AsrError, ErrorCode
from schemas.jobs import AppSubmit, PublicJob, UploadChunk, UploadDone
from schemas.transcribe import CancelTranscription, TranscribeRequest, TranscriptionDelta, TranscriptionResult

_PAYLOAD_HEADROOM = 64 * 1024  # the rest of the request around the audio in one message


def inline_room(nc: Client, message: TranscribeRequest) -> int:
    """How many bytes of audio may travel inside `message` (the rest goes through the object store): what one
    NATS message holds, less the request around it and its known speakers' samples."""
    return nc.max_payload - _PAYLOAD_HEADROOM - sum(len(k.audio) for k in message.known_speakers)


async def _fitting(nc: Client, message: TranscribeRequest) -> TranscribeRequest:
    """The request as it can travel: audio too large for one message goes through the object store."""
    check_inbox(nc)  # a reply that could never arrive is an error now, not a timeout later
    room = inline_room(nc, message)
    if len(message.audio) <= room:
        return message
    user = sender_of(nc)
    if user not in subjects.AUDIO_SENDERS:
        raise AsrError(
            errors.TOO_LARGE,
            f"{len(message.audio) / 2**20:.1f} MB of audio is more than one NATS message holds "
            f"({room / 2**20:.1f} MB): send it through the HTTP gateway "
            "(POST /v1/audio/transcriptions), or compress it (FLAC, Opus)",
        )
    return await stage(nc, message)


async def stage(nc: Client, message: TranscribeRequest, source: BinaryIO | None = None) -> TranscribeRequest:
    """The request with its audio put in the sender's own bucket (ASR_AUDIO_<user>), named by an unguessable ref.
    `source`: a file to read the audio from in chunks instead of `message.audio` (an upload spooled to disk)."""
    bucket = subjects.audio_bucket(sender_of(nc))
    store = await nc.jetstream().object_store(bucket)
    name = f"{uuid.uuid4().hex}-{message.filename}"[:200]
    await store.put(name, source if source is not None else message.audio)  # type: ignore[arg-type]
    return msgspec.structs.replace(message, audio=b"", audio_ref=name, audio_bucket=bucket)


async def transcribe(
    nc: Client, model: str, message: TranscribeRequest, *, timeout: float, via: str = ""
) -> TranscriptionResult:
    """Send audio to ``asr.transcribe.<model>`` and wait for the result. `via`: a node whose proxies to ask first
    (asr.via.<node>.<model>; any proxy when none is there)."""
    message = await _fitting(nc, msgspec.structs.replace(message, stream=False))
    for attempt in (1, 2):
        try:
            if via:
                try:
                    near = endpoints.VIA.on(via).at(model)
                    return await request(nc, near, message, timeout=timeout, what=f"model {model}")
                except AsrError as exc:
                    if exc.kind != errors.ErrorCode.NO_RESPONDERS:
                        raise
            return await request(nc, endpoints.TRANSCRIBE.at(model), message, timeout=timeout, what=f"model {model}")
        except AsrError as exc:
            # Our connection dropped (its server restarted, or was lost on a cluster) while the reply was awaited:
            # once reconnected, send it again — a transcription changes nothing, doing it twice is safe.
            if exc.kind != ErrorCode.CONNECTION_DROPPED or attempt == 2 or not await reconnected(nc, RECONNECT_WAIT_S):
                raise
    raise AssertionError("unreachable")


async def transcribe_stream(
    nc: Client, model: str, message: TranscribeRequest, *, timeout: float, via: str = ""
) -> AsyncIterator[TranscriptionDelta | TranscriptionResult]:
    """Send audio to ``asr.transcribe.<model>`` with stream = true: each TranscriptionDelta as the audio is
    decoded, then the TranscriptionResult (an error reply raises AsrError). `timeout` bounds the whole; `via` as
    for `transcribe`."""
    message = await _fitting(nc, msgspec.structs.replace(message, stream=True))
    payload, what = codec.encode(message), f"model {model}"
    subject = endpoints.TRANSCRIBE.at(model).subject
    if via:
        try:
            near = endpoints.VIA.on(via).at(model).subject
            async for msg in stream_replies(nc, near, payload, timeout=timeout, what=what):
                yield decode_streamed(msg, what)
            return
        except AsrError as exc:
            if exc.kind != errors.ErrorCode.NO_RESPONDERS:  # none there: nothing was sent to anyone yet
                raise
    async for msg in stream_replies(nc, subject, payload, timeout=timeout, what=what):
        yield decode_streamed(msg, what)


async def cancel(nc: Client, message: TranscribeRequest, reason: str = "") -> None:
    """Tell the proxy serving `message` that nobody waits for it any more (it stops and frees the slot)."""
    cancellation = CancelTranscription(reason=reason or "gone", token=message.cancel_token)
    with contextlib.suppress(Exception):
        await nc.publish(subjects.cancel(message.request_id), codec.encode(cancellation))


async def submit_job(
    nc: Client,
    user: str,
    audio: bytes | Path,
    model: str = "whisper-1",
    fields: TranscribeRequest | None = None,
    metadata: dict[str, str] | None = None,
    webhook_url: str | None = None,
    timeout: float = 60.0,
) -> PublicJob:
    """A durable job over NATS, as application `user` (its NATS user): announced, its audio sent in chunks of at
    most 1 MB (read from disk as they go: a file of gigabytes never sits in memory), then completed: the job,
    queued. `fields`: the transcription fields (language, response_format, ...) without audio. Its state changes
    arrive on asr.jobs.state.nats-<user>.<job id> (`subjects.job_state`)."""
    size = len(audio) if isinstance(audio, bytes) else audio.stat().st_size  # noqa: ASYNC240 (one stat)
    announce = AppSubmit(
        model=model, request=fields or TranscribeRequest(), size=size, metadata=metadata or {}, webhook_url=webhook_url
    )
    ticket = await request(nc, endpoints.JOBS_APP_SUBMIT.on_subject(subjects.jobs_app(user, "submit")), announce)
    upload = endpoints.JOBS_APP_UPLOAD.on_subject(ticket.upload_subject)
    source = io.BytesIO(audio) if isinstance(audio, bytes) else audio.open("rb")
    with source:
        seq = 0
        while chunk := source.read(ticket.chunk_max_bytes):
            await request(nc, upload, UploadChunk(job_id=ticket.job_id, seq=seq, data=chunk), timeout=timeout)
            seq += 1
    done = endpoints.JOBS_APP_COMPLETE.on_subject(ticket.complete_subject)
    return await request(nc, done, UploadDone(job_id=ticket.job_id), timeout=timeout)
