"""Upload size limit enforced while the body streams in, before anything is parsed or spooled."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import refuse
from schemas.errors import ErrorCode


class BodyTooLarge(Exception):
    pass


class UploadLimit:
    """ASGI middleware: answer 413 when a request body exceeds `limit` bytes (Content-Length or streamed);
    `paths` gives some paths limits of their own: {path: (bytes, the configuration key that sets it)}."""

    def __init__(
        self, app: ASGIApp, limit: int, slack: int = 0, paths: dict[str, tuple[int, str]] | None = None
    ) -> None:
        self.app, self.default, self.slack = app, limit, slack
        self.paths = paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, key = self.paths.get(scope.get("path", ""), (self.default, "gateway.max_upload_mb"))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit + self.slack:
            await self._reject(scope, send, limit, key)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit + self.slack:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if seen > limit + self.slack:
                # The app answered for a body it could not read whole (FastAPI's form parser turns the error
                # into 400 "error parsing the body"): the answer is the upload limit's.
                if not started:
                    started = True
                    await self._reject(scope, send, limit, key)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, send, limit, key)

    async def _reject(self, scope: Scope, send: Send, limit: int, key: str) -> None:
        message = f"upload too large: the limit is {limit / 2**20:g} MB ({key})"
        await refuse(scope, send, ErrorCode.FILE_TOO_LARGE, message, param="file")
