"""Error replies. The code is an HTTP status so every front door maps it 1:1."""

from __future__ import annotations

import msgspec

BAD_REQUEST = "400"
NOT_FOUND = "404"
CONFLICT = "409"
TOO_LARGE = "413"
UNSUPPORTED_MEDIA = "415"
OVERLOADED = "429"
INTERNAL = "500"
UNAVAILABLE = "503"
TIMEOUT = "504"
NO_ROOM = "507"  # the GPU allocator: no device has the memory (the lifecycle actor evicts, falls back or waits)


class ErrorReply(msgspec.Struct, kw_only=True):
    """Body of an error reply; the same code and message are in the service error headers."""

    code: str
    message: str
    retry_after: float | None = None
    kind: str = ""  # a name for the code where one helps, e.g. "overloaded" for 429


class AsrError(Exception):
    """Raised inside an actor: becomes an error reply with this code and message."""

    def __init__(self, code: str, message: str, retry_after: float | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.kind = kind or KINDS.get(code, "")

    def reply(self) -> ErrorReply:
        return ErrorReply(code=self.code, message=self.message, retry_after=self.retry_after, kind=self.kind)


KINDS = {
    BAD_REQUEST: "bad_request",
    NOT_FOUND: "not_found",
    CONFLICT: "busy",
    TOO_LARGE: "too_large",
    UNSUPPORTED_MEDIA: "bad_audio",
    OVERLOADED: "overloaded",
    UNAVAILABLE: "unavailable",
    TIMEOUT: "timeout",
    NO_ROOM: "no_room",
}
NO_ROOM_KIND = "no_room"  # a 503 because no GPU has room (yet): not the model's fault
GPU_UNUSABLE_KIND = "gpu_unusable"  # placed on a GPU this runtime cannot use (no CUDA image, libraries, toolkit)
