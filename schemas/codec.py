"""Wire encoding: msgpack by default, JSON when the message says so.

A request carries ``Content-Type: application/json`` to be read as JSON; the
reply is then JSON too, so the ``nats`` CLI and non-Python clients can use
every subject.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

CONTENT_TYPE = "Content-Type"
MSGPACK = "application/msgpack"
JSON = "application/json"

# Headers of the NATS service API (nats.micro) for error replies.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"  # the HTTP status, a number as the micro protocol wants it
ERROR_KIND_HEADER = "Asr-Error-Code"  # the symbolic code (schemas.errors.ErrorCode), where there is one
# One id per request, on every hop (NATS header and HTTP header alike): in each log line, and in the HTTP reply.
REQUEST_ID_HEADER = "X-Request-Id"
# On a streamed reply (a request with stream = true), every message but the last carries this header: a
# TranscriptionDelta; the last is the TranscriptionResult (or an error reply).
PARTIAL_HEADER = "Asr-Partial"
# A partial reply with no body that only says "still working" (see framework.actor.send_keepalive).
KEEPALIVE_HEADER = "Asr-Keepalive"

T = TypeVar("T")

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


class DecodeError(ValueError):
    """A message that does not match its schema."""


def content_type(headers: dict[str, str] | None) -> str:
    if headers:
        value = headers.get(CONTENT_TYPE) or headers.get(CONTENT_TYPE.lower()) or ""
        if "json" in value.lower():
            return JSON
    return MSGPACK


def encode(obj: Any, ctype: str = MSGPACK) -> bytes:
    if ctype == JSON:
        return _json_encoder.encode(obj)
    return _msgpack_encoder.encode(obj)


def decode(data: bytes, type_: type[T], ctype: str = MSGPACK) -> T:
    try:
        if ctype == JSON:
            return msgspec.json.decode(data or b"{}", type=type_)
        return msgspec.msgpack.decode(data or msgspec.msgpack.encode({}), type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        kind = "JSON" if ctype == JSON else "msgpack"
        raise DecodeError(f"malformed {type_.__name__} ({kind}): {exc}") from exc
    except RecursionError:  # msgspec's answer to hostile nesting, deeper than any message of ours
        raise DecodeError(f"malformed {type_.__name__}: nested too deeply") from None


def headers_for(ctype: str) -> dict[str, str]:
    return {CONTENT_TYPE: ctype}
