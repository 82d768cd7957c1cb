"""API keys with scopes. A `transcribe` key may transcribe, list models and read events; an `admin` key may also
load and unload models, change the default model and use everything under /api/. With no key configured the
gateway trusts whoever reaches it, which is why it then binds loopback only (see `check_exposure`).

Keys are kept as SHA-256 digests and compared in constant time; a key is never logged. Browsers cannot set
headers on a WebSocket or an EventSource, so /ws and /v1/events also take the key as `?token=`."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Receive, Scope, Send

from framework.config import Config, ConfigError, GatewayConfig
from gateway import client_secrets
from gateway.errors import refuse
from schemas.errors import STATUS, ErrorCode

log = logging.getLogger("asrpro.gateway")
KeyScope = Literal["transcribe", "admin"]
SCOPES: tuple[KeyScope, ...] = ("transcribe", "admin")
_LINE = re.compile(r"^sha256:([0-9a-fA-F]{64})\s+(transcribe|admin)\s*$")
# Reachable without a key: liveness for load balancers, the console's static page (it asks for a key itself)
# and the API's documentation. CORS preflights carry no credentials by design.
_PUBLIC_PATHS = ("/health", "/", "/favicon.ico", "/docs", "/openapi.json", "/redoc")
_PUBLIC_PREFIXES = ("/console/",)
REALTIME_PATH = "/v1/realtime"
_TOKEN_PATHS = ("/ws", "/v1/events", REALTIME_PATH)
# Browsers cannot set headers on a WebSocket: OpenAI's Realtime clients offer the key as a subprotocol.
KEY_SUBPROTOCOL = "openai-insecure-api-key."


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys_file(text: str, where: str) -> list[tuple[str, KeyScope]]:
    """`sha256:<hex> <scope>` per line; blank lines and `#` comments are skipped."""
    keys: list[tuple[str, KeyScope]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ConfigError(f"{where}:{number}: expected 'sha256:<64 hex digits> transcribe|admin'")
        keys.append((match.group(1).lower(), "admin" if match.group(2) == "admin" else "transcribe"))
    return keys


class KeyRing:
    """The configured keys; the keys file is read again when it changes, so keys are added and revoked
    without a restart."""

    def __init__(self, gateway: GatewayConfig) -> None:
        self._inline = [(digest(k), "transcribe") for k in gateway.api_keys] + [
            (digest(k), "admin") for k in gateway.admin_keys
        ]
        self._file = Path(gateway.api_keys_file) if gateway.api_keys_file else None
        # What realtime client secrets are signed with (see GatewayConfig.client_secret_key).
        self.client_secret_key = gateway.client_secret_key.encode() or secrets.token_bytes(32)
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[tuple[str, KeyScope]] = []
        self.refresh()

    def refresh(self) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            self._stamp, self._from_file = None, []
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            self._from_file = parse_keys_file(self._file.read_text(), str(self._file))
        except (ConfigError, OSError) as exc:
            # A broken edit must not open the gateway: keep the keys read last time.
            log.error("keys file not reloaded: %s", exc)
        self._stamp = stamp

    @property
    def entries(self) -> list[tuple[str, KeyScope]]:
        return [*self._inline, *self._from_file]  # type: ignore[list-item]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def scope_of(self, key: str) -> KeyScope | None:
        presented = digest(key)
        found: KeyScope | None = None
        # Every entry is compared, so the time taken says nothing about which key (if any) was close.
        for known, scope in self.entries:
            if hmac.compare_digest(known, presented) and found != "admin":
                found = scope
        return found


def needed_scope(method: str, path: str) -> KeyScope | None:
    """The scope a route needs; None for the public ones."""
    if method == "OPTIONS" or path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES):
        return None
    if path.startswith("/api/") or (path == "/v1/settings/model" and method != "GET"):
        return "admin"
    return "transcribe"


def _presented_key(scope: Scope) -> str | None:
    headers = dict(scope.get("headers") or [])
    value = headers.get(b"authorization", b"").decode("latin-1").strip()
    if value:
        kind, _, credential = value.partition(" ")
        return credential.strip() if kind.lower() == "bearer" else ""
    if scope["type"] == "websocket":
        offered = headers.get(b"sec-websocket-protocol", b"").decode("latin-1")
        for protocol in (p.strip() for p in offered.split(",")):
            if protocol.startswith(KEY_SUBPROTOCOL):
                return protocol.removeprefix(KEY_SUBPROTOCOL)
    if scope["path"] in _TOKEN_PATHS:
        for pair in scope.get("query_string", b"").decode("latin-1").split("&"):
            # The name as sent, not percent-decoded: what the log redaction recognises is what is accepted.
            name, _, token = pair.partition("=")
            if name == "token":
                return unquote_plus(token)
    return None


class ApiKeys:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys
        # Once keys are required they stay required: revoking the last one closes the gateway, it does not open it.
        self.required = bool(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.keys.refresh()
        needed = needed_scope(scope.get("method", "GET"), scope["path"])
        self.required = self.required or bool(self.keys)
        scope.setdefault("state", {})["client_secret_key"] = self.keys.client_secret_key  # for minting them
        key = _presented_key(scope) if needed else None
        if key and key.startswith(client_secrets.PREFIX):
            await self._client_secret(scope, receive, send, key)
            return
        if needed is None or not self.required:
            await self.app(scope, receive, send)
            return
        granted = self.keys.scope_of(key) if key else None
        if granted is None:
            what = "no API key given" if key is None else "the API key is not valid"
            message = f"{what}: send 'Authorization: Bearer <key>' (gateway.api_keys)"
            await _refuse(scope, send, ErrorCode.INVALID_API_KEY, message)
            return
        if needed == "admin" and granted != "admin":
            message = "this API key may not do that: an admin key is needed (gateway.admin_keys)"
            await _refuse(scope, send, ErrorCode.INSUFFICIENT_SCOPE, message)
            return
        _grant(scope, granted, digest(key or ""))
        await self.app(scope, receive, send)

    async def _client_secret(self, scope: Scope, receive: Receive, send: Send, secret: str) -> None:
        """An ephemeral client secret (gateway/client_secrets.py): realtime sessions only, as the application whose
        key minted it, with the session settings it carries."""
        # With no keys configured anyone may connect anyway; the secret still carries its session settings.
        ring = [known for known, _ in self.keys.entries] if self.required else [""]
        granted = client_secrets.verify(secret, ring, self.keys.client_secret_key)
        if granted is None or scope["path"] != REALTIME_PATH or scope["type"] != "websocket":
            message = "the client secret is not valid or has expired (a client secret opens /v1/realtime only)"
            await _refuse(scope, send, ErrorCode.INVALID_API_KEY, message)
            return
        if self.required:
            _grant(scope, "transcribe", granted.key_digest)
        scope.setdefault("state", {})["realtime_session"] = granted.session
        await self.app(scope, receive, send)


def _grant(scope: Scope, granted: KeyScope, key_digest: str) -> None:
    state = scope.setdefault("state", {})
    state["api_scope"] = granted
    state["api_key_digest"] = key_digest  # what a client secret minted with this key is signed with
    # Whose jobs these are: the key, by a digest of it (never the key itself), as one subject token.
    state["api_owner"] = "key-" + key_digest[:24]


async def _refuse(scope: Scope, send: Send, code: ErrorCode, message: str) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    where = f"{scope['path']}?{query}" if query else scope["path"]  # a ?token= in it is redacted by the log
    log.warning("%s %s: %s %s", scope.get("method", "WS"), where, STATUS[code], message)
    challenge = [(b"www-authenticate", b'Bearer realm="asrpro"')] if code is ErrorCode.INVALID_API_KEY else None
    await refuse(scope, send, code, message, headers=challenge)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config) -> str:
    """Refuses an open gateway on a network address; returns the line the gateway logs about access."""
    gateway = config.gateway
    keys = KeyRing(gateway)
    if keys:
        return f"API keys required ({len(keys.entries)} configured)"
    if _is_loopback(gateway.host):
        return "no API keys configured: only this machine can reach the gateway, and every local process is trusted"
    if gateway.allow_unauthenticated:
        return f"no API keys configured and gateway.allow_unauthenticated: anyone reaching {gateway.host} is trusted"
    raise ConfigError(
        f"gateway.host = {gateway.host!r} is not a loopback address and no API key is configured: anyone on the "
        "network could use and administer the service. Add keys (`asrpro keys add --scope admin`, gateway.api_keys, "
        "gateway.admin_keys) or set gateway.allow_unauthenticated = true if something else guards the port."
    )


def write_key_line(path: Path, key: str, scope: KeyScope) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(f"sha256:{digest(key)} {scope}\n")
