"""Malformed inputs, seeded so a failure can be replayed: random bytes, truncated and mistyped msgpack/JSON,
extreme numbers, deep nesting, huge strings, odd headers."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import msgspec

EXTREMES: list[Any] = [
    0,
    -1,
    2**63,
    -(2**63) - 1,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    "",
    "x" * 70_000,
    None,
    True,
    [],
    {},
    "../../etc/passwd",
    "asr.>",
    "\u0000\ud7ff\n\r",
]
_JSON_SPECIALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * 400]


def deep(depth: int, as_dict: bool) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"x": value} if as_dict else [value]
    return value


def deep_json(depth: int) -> bytes:
    return b'{"extra": ' + b"[" * depth + b"]" * depth + b"}"


def _msgpack_or_none(value: dict[str, Any]) -> bytes | None:
    """None for what msgpack cannot hold (an integer beyond 64 bits): JSON carries those."""
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, TypeError):
        return None


def mutations(rng: random.Random, base: dict[str, Any]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(what, body, headers) variations of one valid message."""
    msgpack = {"Content-Type": "application/msgpack"}
    as_json = {"Content-Type": "application/json"}
    valid_mp = msgspec.msgpack.encode(base)
    valid_js = json.dumps(base).encode()
    yield "random bytes", rng.randbytes(rng.randint(0, 4096)), msgpack
    yield "random bytes as json", rng.randbytes(rng.randint(1, 512)), as_json
    yield "empty", b"", {}
    yield "truncated msgpack", valid_mp[: rng.randint(0, max(0, len(valid_mp) - 1))], msgpack
    yield "truncated json", valid_js[: rng.randint(0, max(0, len(valid_js) - 1))], as_json
    yield "msgpack labelled json", valid_mp, as_json
    yield "json labelled msgpack", valid_js, msgpack
    yield "unknown content type", valid_js, {"Content-Type": "text/x-" + rng.choice(["foo", "a" * 200])}
    yield "deep json", deep_json(rng.choice([100, 1000, 100_000])), as_json
    nested = {**base, "extra": deep(rng.choice([50, 300]), rng.random() < 0.5)}
    yield "deep msgpack", msgspec.msgpack.encode(nested), msgpack
    yield "not an object", json.dumps(rng.choice([[1, 2], "s", 3, None])).encode(), as_json
    for key in list(base) or ["model"]:
        wrong = {**base, key: rng.choice(EXTREMES)}
        encoded = _msgpack_or_none(wrong)
        if encoded is not None:
            yield f"{key}={str(wrong[key])[:20]!r}", encoded, msgpack
        special = json.dumps({k: v for k, v in base.items() if k != key})[:-1]
        comma = ", " if len(base) > 1 else ""
        body = f'{special}{comma}"{key}": {rng.choice(_JSON_SPECIALS)}}}'.encode()
        yield f"{key} special number", body, as_json
    odd = {**as_json, "X-Request-Id": rng.choice(["a b;c", "x" * 5000, "ü", ""]), "Asr-Partial": "1"}
    yield "odd headers", valid_js, odd
    yield "huge string field", msgspec.msgpack.encode({**base, "huge": "y" * 2_000_000}), msgpack
