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
