"""The symbolic error codes are contract: each has one HTTP status, and an error built from one carries both."""

from __future__ import annotations

import msgspec
import pytest

from framework import bus
from schemas import codec, errors
from schemas.errors import GENERIC, STATUS, AsrError, ErrorCode, ErrorReply, is_generic


def test_every_code_has_an_http_status() -> None:
    assert set(STATUS) == set(ErrorCode)
    assert all(status.isdigit() and len(status) == 3 for status in STATUS.values())


def test_each_generic_code_stands_for_its_own_status() -> None:
    for status, code in GENERIC.items():
        if status != errors.NO_ROOM:  # the allocator's internal 507: clients see no_room as a 503
            assert STATUS[code] == status
            assert is_generic(code)
    specific = set(ErrorCode) - set(GENERIC.values())
    assert ErrorCode.MODEL_NOT_FOUND in specific and not any(is_generic(c) for c in specific)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_an_error_built_from_a_code_takes_its_status_and_survives_the_wire(code: ErrorCode) -> None:
    error = AsrError(code, "why")
    assert (error.code, error.kind) == (STATUS[code], code)
    data, headers = bus.error_reply(error, codec.MSGPACK)
    with pytest.raises(AsrError) as back:
        bus.raise_for_error(headers, data)
    assert (back.value.code, back.value.kind, back.value.message) == (STATUS[code], code, "why")


def test_a_status_alone_gets_its_generic_code() -> None:
    assert AsrError(errors.NOT_FOUND, "x").kind is ErrorCode.NOT_FOUND
    assert AsrError("502", "x").kind is None


def test_an_unknown_code_from_a_peer_is_refused_by_the_type() -> None:
    raw = msgspec.msgpack.encode({"code": "400", "message": "m", "kind": "no_such_code"})
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(raw, type=ErrorReply)


def test_the_field_at_fault_and_the_symbolic_code_survive_the_wire() -> None:
    error = AsrError(ErrorCode.INVALID_LANGUAGE, "no such language", param="language")
    data, headers = bus.error_reply(error, codec.JSON)
    assert headers[codec.ERROR_CODE_HEADER] == "400" and headers[codec.ERROR_KIND_HEADER] == "invalid_language"
    with pytest.raises(AsrError) as back:
        bus.raise_for_error(headers, data)
    assert (back.value.kind, back.value.param) == (ErrorCode.INVALID_LANGUAGE, "language")
    with pytest.raises(AsrError) as headers_only:  # a peer whose body is not ours: the headers still say it
        bus.raise_for_error(headers, b"not an ErrorReply")
    assert (headers_only.value.code, headers_only.value.kind) == ("400", ErrorCode.INVALID_LANGUAGE)


def test_http_shows_a_symbolic_code_or_null_never_the_status() -> None:
    from gateway.errors import error_object, status_and_code

    for code in ErrorCode:
        status, shown = status_and_code(AsrError(code, "x"))
        body = error_object(status, "x", shown)
        assert body["code"] is None if is_generic(code) else body["code"] == code.value
        assert body["code"] != str(status)
        expected = {401: "authentication_error", 403: "permission_error"}.get(status, "invalid_request_error")
        assert body["type"] == ("server_error" if status >= 500 else expected)
    assert status_and_code(AsrError(ErrorCode.UNSUPPORTED_AUDIO, "x")) == (400, "unsupported_audio")


# Codes that never reach an HTTP client: a proxy turns them into a plain 503 (or retries) before answering.
_INTERNAL = {ErrorCode.WRONG_MODEL, ErrorCode.NO_RESPONDERS, ErrorCode.SILENT, ErrorCode.CONNECTION_DROPPED}


def test_the_manual_names_every_code_a_client_can_see() -> None:
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "http-api.md").read_text()
    shown = [code for code in ErrorCode if not is_generic(code) and code not in _INTERNAL]
    missing = [code.value for code in shown if f"`{code.value}`" not in page]
    assert not missing, f"docs/http-api.md does not name {missing}"
