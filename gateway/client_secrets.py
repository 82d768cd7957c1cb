"""Ephemeral client secrets for the Realtime API (`POST /v1/realtime/client_secrets`): a browser gets a token that
opens live sessions for a while, never the application's API key.

A secret is `ek_<payload>.<signature>`, checked by any gateway without a store: the payload (base64url JSON) names
the key that minted it by an id derived from the key's digest, the expiry and the session settings it carries; the
signature is an HMAC-SHA256 of the payload keyed by the gateways' own secret (`gateway.client_secret_key`, random
per process when not given) together with that key's digest: the keys file alone cannot mint secrets, and revoking
the key revokes its secrets. A secret opens realtime sessions
only (`/v1/realtime`), with the `transcribe` scope, as the application that minted it (its sessions, limits and
isolation are that application's); it carries no key, and the key's digest cannot be learnt from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

PREFIX = "ek_"
SHORTEST_S, LONGEST_S, DEFAULT_S = 10, 7200, 600  # OpenAI's bounds and default for expires_after.seconds
MAX_SESSION_BYTES = 4096  # the session settings ride in the token, and the token in a header
_ID_LABEL = b"asrpro client secret id:"
_KEY_LABEL = b"asrpro client secret key:"


class Request(msgspec.Struct):
    """The body of POST /v1/realtime/client_secrets, as OpenAI takes it (each part checked by the route, which
    names the field at fault)."""

    expires_after: Any = None
    session: Any = None


@dataclass(frozen=True)
class Granted:
    key_digest: str  # the minting key's digest: whose sessions these are
    session: dict[str, Any]
    expires_at: int


def mint(
    key_digest: str, session: dict[str, Any], seconds: int, server_key: bytes, now: float | None = None
) -> tuple[str, int]:
    """A secret for the key whose digest is `key_digest`, valid `seconds` from now, and its expiry (epoch s)."""
    expires_at = int(now if now is not None else time.time()) + seconds
    body = {"k": _key_id(key_digest), "e": expires_at, "s": session}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{PREFIX}{payload}.{_sign(server_key, key_digest, payload)}", expires_at


def verify(secret: str, key_digests: Iterable[str], server_key: bytes, now: float | None = None) -> Granted | None:
    """What a presented secret grants, or None: malformed, signed by no key of the ring, or expired. The signature
    is checked before anything of the payload is read: nothing unsigned is parsed."""
    if not secret.isascii() or not secret.startswith(PREFIX) or secret.count(".") != 1:
        return None
    payload, signature = secret.removeprefix(PREFIX).split(".")
    found = None
    # Every key is tried, so the time taken says nothing about which key (if any) signed it.
    for key_digest in key_digests:
        if hmac.compare_digest(_sign(server_key, key_digest, payload).encode(), signature.encode()):
            found = key_digest
    if found is None:
        return None
    try:
        body = json.loads(_unb64(payload))
        key_id, expires_at, session = body["k"], int(body["e"]), body["s"]
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None
    if key_id != _key_id(found) or not isinstance(session, dict):
        return None
    if expires_at <= (now if now is not None else time.time()):
        return None
    return Granted(key_digest=found, session=session, expires_at=expires_at)


def _key_id(key_digest: str) -> str:
    return hashlib.sha256(_ID_LABEL + key_digest.encode()).hexdigest()[:16]


def _sign(server_key: bytes, key_digest: str, payload: str) -> str:
    key = hashlib.sha256(_KEY_LABEL + server_key + b"\0" + key_digest.encode()).digest()
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
