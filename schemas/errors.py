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


class ErrorReply(msgspec.Struct, kw_only=True):
    """Body of an error reply; the same code and message are in the service error headers."""

    code: str
    message: str
    retry_after: float | None = None


class AsrError(Exception):
    """Raised inside an actor: becomes an error reply with this code and message."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def reply(self) -> ErrorReply:
        return ErrorReply(code=self.code, message=self.message, retry_after=self.retry_after)
