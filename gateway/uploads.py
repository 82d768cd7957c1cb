"""An uploaded file into a request: inline when it fits one NATS message, otherwise streamed from the spool file
the form parser wrote (Starlette keeps an upload over 1 MB on disk) into the gateway's audio bucket in chunks, so
that a large upload never sits whole in the gateway's memory."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client
from starlette.datastructures import UploadFile

from asrpro import client
from schemas import errors
from schemas.errors import AsrError
from schemas.transcribe import TranscribeRequest


def _empty(file: UploadFile) -> AsrError:
    return AsrError(errors.BAD_REQUEST, f"the file '{file.filename}' is empty", param="file")


async def with_upload(
    nc: Client, file: UploadFile, message: TranscribeRequest, stage: bool = False
) -> TranscribeRequest:
    """`message` with the upload's audio, carried or staged (`stage`: always staged, as a job's audio is)."""
    size = file.size
    if size == 0:
        raise _empty(file)
    if not stage and size is not None and size <= client.inline_room(nc, message):
        audio = await file.read()
        if not audio:
            raise _empty(file)
        return msgspec.structs.replace(message, audio=audio)
    await file.seek(0)
    if size is None and not await file.read(1):  # a size the parser did not count: look for one byte
        raise _empty(file)
    await file.seek(0)
    return await client.stage(nc, message, source=file.file)
