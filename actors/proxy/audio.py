"""Object-store audio: a request may name its audio (`audio_ref`) in its sender's own bucket ASR_AUDIO_<user>
instead of carrying it. It is read for the request, and deleted once the request is over."""

from __future__ import annotations

import re

from nats.js.errors import NotFoundError

from framework.actor import Actor
from framework.transport import read_object
from schemas import errors, subjects
from schemas.errors import AsrError
from schemas.transcribe import TranscribeRequest

AUDIO_BUCKET = re.compile(re.escape(subjects.AUDIO_BUCKET_PREFIX) + subjects.USER_NAME)


class AudioStore:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor  # whose transport reads the buckets

    async def read(self, msg: TranscribeRequest) -> bytes:
        """The request's audio, carried or referenced; 400 when there is none."""
        if msg.audio_ref:
            bucket = msg.audio_bucket or ""
            if not AUDIO_BUCKET.fullmatch(bucket):
                own = f"{subjects.AUDIO_BUCKET_PREFIX}<user>"
                raise AsrError(errors.BAD_REQUEST, f"audio_ref needs audio_bucket (the sender's {own}), not {bucket!r}")
            try:
                store = await self.actor.transport.object_store(bucket)
                audio = await read_object(store, msg.audio_ref)
            except NotFoundError as exc:  # the sender's mistake (or its audio expired): not worth a retry
                raise AsrError(
                    errors.BAD_REQUEST, f"audio_ref '{msg.audio_ref}' not found in bucket {bucket}: {exc!r}"
                ) from exc
            except Exception as exc:  # the store did not answer: a retry may work
                raise AsrError(errors.UNAVAILABLE, f"audio_ref '{msg.audio_ref}' could not be read: {exc!r}") from exc
        else:
            audio = msg.audio
        if not audio:
            raise AsrError(errors.BAD_REQUEST, "no audio: the file is empty")
        return audio

    async def drop(self, msg: TranscribeRequest) -> None:
        """Free the space of a referenced upload now rather than at the bucket's TTL (unless its sender keeps it)."""
        if msg.keep_audio or not AUDIO_BUCKET.fullmatch(msg.audio_bucket or ""):
            return
        try:
            store = await self.actor.transport.object_store(msg.audio_bucket or "")
            await store.delete(msg.audio_ref or "")
        except Exception as exc:  # gone already, or the bus is down: the bucket's TTL removes it
            self.actor.log.info("could not delete audio %s: %s", msg.audio_ref, exc)
