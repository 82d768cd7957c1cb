"""Live transcription sessions (OpenAI's Realtime API, transcription only) on the bus.

A session is one long request: `LiveOpen` to the live actor, whose reply comes as partials — each a `LiveEvent`
holding one OpenAI server event, the first of them naming the subject the client's events go to — and ends with
`LiveClosed`. The client's events are OpenAI's own JSON (`input_audio_buffer.append`, `session.update`, ...),
published as they are on that subject; the gateway's WebSocket only carries them across. An application on NATS
opens its sessions on asr.live.app.<user>.open and sends its events on asr.live.app.<user>.<session>, subjects
only it may publish on; the events come back on its own inbox, like any reply.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from schemas import errors

Shape = Literal["ga", "beta"]  # session.* events and shapes, or the beta's transcription_session.*

# What OpenAI's Realtime API names its error codes, for the events a client gets wrong (type invalid_request_error).
INVALID_JSON = "invalid_json"
INVALID_EVENT = "invalid_value"  # an unknown event type (param "type") or a value it cannot take
BAD_AUDIO = "invalid_value"  # base64 that is not, or audio that is not whole samples (param "audio")
UNKNOWN_PARAMETER = "unknown_parameter"
BUFFER_TOO_LARGE = "input_audio_buffer_too_large"
COMMIT_EMPTY = "input_audio_buffer_commit_empty"
# A session refused (errors.ErrorCode.SESSION_LIMIT) or ended by the server (type server_error).
SESSION_IDLE = "session_idle_timeout"
SLOW_CLIENT = "slow_client"


class LiveOpen(msgspec.Struct, kw_only=True):
    """Open a session. `model` and `language` as the connection URL or the first session.update give them."""

    model: str = ""
    shape: Shape = "ga"
    # The application the session belongs to (set by the gateway; on NATS it is the subject's user): its
    # transcriptions count as its own.
    owner: str = ""
    session: dict[str, Any] = {}  # an initial session object, as in session.update


class LiveEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    event: dict[str, Any]  # one OpenAI Realtime server event
    # On the first event only: where the client's events go (asr.live.in.<session> or asr.live.app.<user>.<session>).
    input: str = ""


class LiveClosed(msgspec.Struct, kw_only=True):
    reason: str = ""


# A control message on the input subject (with this header) rather than a client event: the client went away.
CLOSE_HEADER = "Asr-Live-Close"


def error_event(
    code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = ""
) -> dict[str, Any]:
    """OpenAI's `error` server event: a client event the session could not take (it stays open), or the session
    refused or ended by the server (`kind` server_error)."""
    kind = kind or ("server_error" if code in (SESSION_IDLE, SLOW_CLIENT) else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id},
    }


def refusal(exc: errors.AsrError) -> dict[str, Any]:
    """A session the server could not open or keep, as an `error` event: the client's fault for a 4xx status."""
    kind = "invalid_request_error" if exc.code.startswith("4") and exc.code != "429" else "server_error"
    return error_event(exc.kind or str(exc.code), exc.message, exc.param, kind=kind)
