"""One id per HTTP request: the caller's ``X-Request-Id`` when it sends a sensible one, else a new one. It is
set for the request's task (every log line about it carries it, and the bus passes it to the next hop) and
returned in the response's ``X-Request-Id`` header."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from framework import logs
from schemas import codec

_HEADER = codec.REQUEST_ID_HEADER.lower().encode()


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(_HEADER, b"").decode("latin-1")
        request_id = logs.clean_request_id(given) or logs.new_request_id()
        logs.request_id.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                message["headers"] = [*headers, (_HEADER, request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
