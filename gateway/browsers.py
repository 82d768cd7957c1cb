"""What a web page must not do through a user's browser: reach the gateway under another host name (DNS
rebinding) or change anything from another origin (cross-site requests, a hostile page's WebSocket). Native
clients (no `Origin` header) are not affected."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import refuse
from schemas.errors import ErrorCode

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _hostname(value: str) -> str:
    return (urlsplit("//" + value).hostname or "").lower()


class BrowserGuard:
    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], cors_origins: list[str], bound_host: str) -> None:
        self.app = app
        self.hosts = LOOPBACK | {h.lower() for h in allowed_hosts}
        if bound_host not in ("0.0.0.0", "::", ""):
            self.hosts.add(bound_host.lower())
        self.origins = set(cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:
            message = f"Host {host!r} is not served here (gateway.allowed_hosts)"
            await refuse(scope, send, ErrorCode.HOST_NOT_ALLOWED, message, counted_as="browser")
            return
        origin = headers.get("origin")
        changing = scope["type"] == "websocket" or scope.get("method", "GET") not in _SAFE_METHODS
        # The console's own page (same scheme-less host and port) is this origin; another local port is not.
        same_origin = origin is not None and urlsplit(origin).netloc.lower() == host.lower()
        if changing and origin is not None and origin not in self.origins and not same_origin:
            message = f"requests from the web origin {origin!r} are not allowed (gateway.cors_origins)"
            await refuse(scope, send, ErrorCode.FORBIDDEN_ORIGIN, message, counted_as="browser")
            return
        await self.app(scope, receive, send)
