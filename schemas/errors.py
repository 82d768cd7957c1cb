"""Errors on the wire, declared once.

An error reply carries two things: its HTTP status (``code``, a string such as "404", also in the nats.micro
``Nats-Service-Error-Code`` header, so any front door maps it 1:1) and its symbolic code (``kind``, an `ErrorCode`),
which is what clients see as OpenAI's ``error.code`` where it says more than the status does. Every symbolic code
has exactly one HTTP status (`STATUS`); a code not listed there is a bug, caught by a unit test.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

# HTTP statuses as they travel in error replies.
BAD_REQUEST = "400"
UNAUTHORIZED = "401"
FORBIDDEN = "403"
NOT_FOUND = "404"
CONFLICT = "409"
TOO_LARGE = "413"
UNSUPPORTED_MEDIA = "415"
OVERLOADED = "429"
CLIENT_CLOSED = "499"  # the requester gave up (nginx's "client closed request")
INTERNAL = "500"
UNAVAILABLE = "503"
TIMEOUT = "504"
INSUFFICIENT_STORAGE = "507"  # HTTP's name for it: what jobs may hold is full (jobs.storage_max_gb)
NO_ROOM = "507"  # the GPU allocator: no device has the memory (the lifecycle actor evicts, falls back or waits)


class ErrorCode(StrEnum):
    """Symbolic error codes: what a client may branch on. The generic ones (one per status) say no more than the
    status; the HTTP gateway shows only the specific ones as OpenAI's ``code``."""

    # generic: one per status
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    BUSY = "busy"
    TOO_LARGE = "too_large"
    BAD_AUDIO = "bad_audio"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    # specific
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_NOT_INSTALLED = "model_not_installed"
    INVALID_LANGUAGE = "invalid_language"
    UNSUPPORTED_AUDIO = "unsupported_audio"
    FILE_TOO_LARGE = "file_too_large"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    BREAKER_OPEN = "breaker_open"
    CANCELLED = "cancelled"
    WRONG_MODEL = "wrong_model"  # a model server asked for a model it does not run
    NO_ROOM = "no_room"  # no GPU has room (yet): not the model's fault, breakers do not count it
    GPU_UNUSABLE = "gpu_unusable"  # placed on a GPU this runtime cannot use (no CUDA image, libraries, toolkit)
    JOB_NOT_FOUND = "job_not_found"  # no such job, or another application's
    JOB_NOT_COMPLETED = "job_not_completed"  # its result was asked for while it is queued, running, failed, cancelled
    STORAGE_FULL = "storage_full"  # jobs hold jobs.storage_max_gb already: a submission is refused before the 202
    SESSION_LIMIT = "session_limit_reached"  # realtime.max_sessions live sessions are open on the node already
    # the HTTP gateway's own refusals
    INVALID_API_KEY = "invalid_api_key"  # none given, or not a valid one (OpenAI's code)
    INSUFFICIENT_SCOPE = "insufficient_scope"  # a valid key without the admin scope the route needs
    FORBIDDEN_ORIGIN = "forbidden_origin"  # a web page of another origin (gateway.cors_origins)
    HOST_NOT_ALLOWED = "host_not_allowed"  # a Host header not served here (gateway.allowed_hosts): DNS rebinding
    # transport: how a request failed to reach an answer (never the model's fault)
    NO_RESPONDERS = "no_responders"  # nothing serves the subject (e.g. an actor restarting)
    SILENT = "silent"  # a responder stopped sending keepalives: its node is taken for lost
    CONNECTION_DROPPED = "connection_dropped"  # our own connection dropped while a reply was awaited


# The HTTP status of each symbolic code.
STATUS: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: BAD_REQUEST,
    ErrorCode.NOT_FOUND: NOT_FOUND,
    ErrorCode.BUSY: CONFLICT,
    ErrorCode.TOO_LARGE: TOO_LARGE,
    ErrorCode.BAD_AUDIO: UNSUPPORTED_MEDIA,
    ErrorCode.OVERLOADED: OVERLOADED,
    ErrorCode.INTERNAL: INTERNAL,
    ErrorCode.UNAVAILABLE: UNAVAILABLE,
    ErrorCode.TIMEOUT: TIMEOUT,
    ErrorCode.MODEL_NOT_FOUND: NOT_FOUND,
    ErrorCode.MODEL_NOT_INSTALLED: NOT_FOUND,  # not a failure: clients must not retry
    ErrorCode.INVALID_LANGUAGE: BAD_REQUEST,
    ErrorCode.UNSUPPORTED_AUDIO: BAD_REQUEST,  # as OpenAI: its SDKs raise BadRequestError for audio they cannot open
    ErrorCode.FILE_TOO_LARGE: TOO_LARGE,
    ErrorCode.RATE_LIMIT_EXCEEDED: OVERLOADED,
    ErrorCode.BREAKER_OPEN: UNAVAILABLE,
    ErrorCode.CANCELLED: CLIENT_CLOSED,
    ErrorCode.WRONG_MODEL: CONFLICT,
    ErrorCode.NO_ROOM: UNAVAILABLE,
    ErrorCode.GPU_UNUSABLE: UNAVAILABLE,
    ErrorCode.JOB_NOT_FOUND: NOT_FOUND,
    ErrorCode.JOB_NOT_COMPLETED: CONFLICT,
    ErrorCode.STORAGE_FULL: INSUFFICIENT_STORAGE,
    ErrorCode.SESSION_LIMIT: OVERLOADED,
    ErrorCode.INVALID_API_KEY: UNAUTHORIZED,
    ErrorCode.INSUFFICIENT_SCOPE: FORBIDDEN,
    ErrorCode.FORBIDDEN_ORIGIN: FORBIDDEN,
    ErrorCode.HOST_NOT_ALLOWED: BAD_REQUEST,
    ErrorCode.NO_RESPONDERS: UNAVAILABLE,
    ErrorCode.SILENT: UNAVAILABLE,
    ErrorCode.CONNECTION_DROPPED: UNAVAILABLE,
}

# The generic code of each status: what an error says when nothing more specific is known.
GENERIC: dict[str, ErrorCode] = {
    BAD_REQUEST: ErrorCode.BAD_REQUEST,
    NOT_FOUND: ErrorCode.NOT_FOUND,
    CONFLICT: ErrorCode.BUSY,
    TOO_LARGE: ErrorCode.TOO_LARGE,
    UNSUPPORTED_MEDIA: ErrorCode.BAD_AUDIO,
    OVERLOADED: ErrorCode.OVERLOADED,
    CLIENT_CLOSED: ErrorCode.CANCELLED,
    INTERNAL: ErrorCode.INTERNAL,
    UNAVAILABLE: ErrorCode.UNAVAILABLE,
    TIMEOUT: ErrorCode.TIMEOUT,
    NO_ROOM: ErrorCode.NO_ROOM,
}


def is_generic(code: ErrorCode | None) -> bool:
    """A code that says no more than its status (OpenAI's ``code`` is null for these)."""
    return code is None or GENERIC.get(STATUS.get(code, "")) is code


class ErrorReply(msgspec.Struct, kw_only=True):
    """Body of an error reply; the same status and message are in the service error headers."""

    code: str  # the HTTP status, e.g. "404"
    message: str
    retry_after: float | None = None
    kind: ErrorCode | None = None  # the symbolic code; None from a peer that sent none
    param: str | None = None  # the request field at fault, where there is one (OpenAI's `param`)


class AsrError(Exception):
    """Raised inside an actor: becomes an error reply with this status and message.

    ``AsrError(ErrorCode.MODEL_NOT_FOUND, "...")`` takes the code's status; ``AsrError("507", "...",
    kind=ErrorCode.NO_ROOM)`` a status of its own (an internal reply whose receiver turns it into another)."""

    def __init__(
        self,
        code: str | ErrorCode,
        message: str,
        retry_after: float | None = None,
        kind: ErrorCode | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        if isinstance(code, ErrorCode):
            kind, code = kind or code, STATUS[code]
        self.code: str = code
        self.message = message
        self.retry_after = retry_after
        self.kind: ErrorCode | None = kind or GENERIC.get(code)
        self.param = param
        self.relayed = False  # an error reply received from another actor (it counted the request itself)

    def reply(self) -> ErrorReply:
        return ErrorReply(
            code=self.code, message=self.message, retry_after=self.retry_after, kind=self.kind, param=self.param
        )
