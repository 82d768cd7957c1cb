"""NATS plumbing shared by actors, the gateway and the command line: connecting (fail fast, then reconnect
forever), typed request/reply with error replies turned back into AsrError, and sending audio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from framework import logs
from framework.cancelling import retrieved
from framework.config import NatsConfig
from schemas import codec, endpoints, errors, subjects
from schemas.endpoints import Rpc
from schemas.errors import AsrError, ErrorCode
from schemas.transcribe import TranscriptionDelta, TranscriptionResult

log = logging.getLogger(__name__)
Req = TypeVar("Req")
Rep = TypeVar("Rep")


async def connect(
    url: str,
    *,
    name: str,
    user: str = "",
    password: str = "",
    connect_timeout: float = 5.0,
    error_cb: Any = None,
    tls_ca: str = "",
) -> Client:
    """Fail fast when the server is not there at start; once connected, reconnect forever."""

    async def _on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def _on_disconnect() -> None:
        _connection_lost(nc)
        if not nc.is_closed and not nc.is_draining:
            log.warning("disconnected from nats")

    async def _on_reconnect() -> None:
        log.info("reconnected to nats")

    nc: Client
    nc = await nats.connect(
        _with_credentials(url, user, password),
        name=name,
        # Replies (and JetStream deliveries) come to _INBOX.<user>.*, the only inboxes this user may read.
        inbox_prefix=subjects.inbox_prefix(user) if user else subjects.INBOX_ROOT,
        connect_timeout=connect_timeout,
        # Also as options, not only in the URL: on a cluster the client learns the other servers and may reconnect
        # to one of them, with the same user (every host has the same users).
        user=user or None,
        password=password or None,
        # A server that requires TLS (nats.tls_cert): trust the deployment's CA (nats.tls_ca).
        tls=ssl.create_default_context(cafile=tls_ca) if tls_ca else None,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.2,
        error_cb=error_cb or _on_error,
        disconnected_cb=_on_disconnect,
        reconnected_cb=_on_reconnect,
    )
    # nats-py reads these options on each reconnect, so after the first connect we can switch to "forever".
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.5
    _lost[nc] = asyncio.Event()
    _user[nc] = user
    return nc


async def connect_as_configured(nats: NatsConfig, name: str) -> Client:
    """`connect` with the configured URL, user, password and timeout (what every actor and the gateway do)."""
    return await connect(
        nats.url,
        name=name,
        user=nats.user,
        password=nats.password,
        connect_timeout=nats.connect_timeout,
        tls_ca=nats.tls_ca,
    )


# Per connection, an event set when it drops: a reply cannot arrive over a connection that is gone
# (nats-py leaves such requests waiting until their timeout), so requests in flight fail at once instead.
_lost: weakref.WeakKeyDictionary[Client, asyncio.Event] = weakref.WeakKeyDictionary()
_user: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()  # whose audio bucket to use


def sender_of(nc: Client) -> str:
    """The NATS user `nc` connected as ('' when connected without one): whose audio bucket it may use."""
    return _user.get(nc) or ""


def check_inbox(nc: Client) -> None:
    """A connection of an application user must read its replies under its own inbox, _INBOX.<user>: the only
    inbox nats-server lets it subscribe to. Without that prefix its requests would wait for replies that can never
    arrive (the server refuses the subscription asynchronously; nats-py only reports it to the error callback),
    so say so at once, naming the prefix. The admin user may read any inbox."""
    url = nc.connected_url
    user = _user.get(nc) or nc.options.get("user") or (url.username if url is not None else None) or ""
    if not user or user == "admin":
        return
    wanted = subjects.inbox_prefix(user)
    if not nc.new_inbox().startswith(wanted + "."):
        raise AsrError(
            errors.BAD_REQUEST,
            f"this connection's replies would go to an inbox user '{user}' may not read: connect with "
            f'inbox_prefix="{wanted}" (nats.connect(..., inbox_prefix="{wanted}")); each user reads replies '
            "only under its own inbox",
        )


def _connection_lost(nc: Client) -> None:
    event = _lost.get(nc)
    if event is not None:
        event.set()
    _lost[nc] = asyncio.Event()  # for the requests sent after the reconnect


async def _unless_lost(nc: Client, request: Any, what: str) -> Any:
    lost = _lost.get(nc)
    if lost is None:
        return await request
    reply = asyncio.ensure_future(request)
    dropped = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait([reply, dropped], return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # Cancelled while waiting (the caller went): the request goes too, or its timeout would end in an error
        # nobody retrieves ("Task exception was never retrieved", seen in the gateway's logs).
        reply.cancel()
        reply.add_done_callback(retrieved)
        raise
    finally:
        dropped.cancel()
    if reply.done():
        return reply.result()
    reply.cancel()
    raise AsrError(
        errors.UNAVAILABLE,
        f"the bus connection dropped while waiting for {what}: it may or may not have been done",
        kind=errors.ErrorCode.CONNECTION_DROPPED,
    )


def _with_credentials(url: str, user: str, password: str) -> str:
    if not user:
        return url
    parts = urlsplit(url)
    if parts.username:
        return url
    netloc = f"{user}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def published_directly(msg: Any) -> bool:
    """An event, progress report or cancel is published without a reply subject. One that carries one was
    redelivered by a JetStream consumer that someone pointed at this subject (nats-server does not check a push
    consumer's delivery subject against its creator's permissions) or is a request in disguise: ignore it."""
    return not msg.reply


def asks_for_an_inbox_reply(msg: Any) -> bool:
    """A request must want its answer in an inbox: a reply subject such as asr.lifecycle.stop would make the
    answering actor publish there on the requester's behalf."""
    return bool(msg.reply) and str(msg.reply).startswith(subjects.INBOX_ROOT + ".")


def error_reply(exc: AsrError, ctype: str) -> tuple[bytes, dict[str, str]]:
    """An error reply: the ErrorReply body and the nats.micro service-error headers."""
    headers = codec.headers_for(ctype)
    headers[codec.ERROR_HEADER] = exc.message.replace("\r", " ").replace("\n", " ")[:1000]
    headers[codec.ERROR_CODE_HEADER] = exc.code
    if exc.kind is not None:
        headers[codec.ERROR_KIND_HEADER] = exc.kind
    return codec.encode(exc.reply(), ctype), headers


def raise_for_error(headers: dict[str, str] | None, data: bytes) -> None:
    if not headers or codec.ERROR_CODE_HEADER not in headers:
        return
    code = headers[codec.ERROR_CODE_HEADER]
    message = headers.get(codec.ERROR_HEADER, "")
    retry_after, param = None, None
    kind = _error_code(headers.get(codec.ERROR_KIND_HEADER))
    try:
        body = codec.decode(data, errors.ErrorReply, codec.content_type(headers))
        message, retry_after, kind, param = body.message or message, body.retry_after, body.kind or kind, body.param
    except codec.DecodeError:
        pass
    error = AsrError(code, message, retry_after, kind, param)
    error.relayed = True
    raise error


def _error_code(value: str | None) -> ErrorCode | None:
    """A symbolic code from a header (None for one this version does not know: the status still says enough)."""
    try:
        return ErrorCode(value) if value else None
    except ValueError:
        return None


async def request(
    nc: Client,
    rpc: Rpc[Req, Rep],
    message: Req,
    *,
    timeout: float = 5.0,
    what: str = "",
    headers: dict[str, str] | None = None,
) -> Rep:
    """Typed request/reply: the reply type is the one `rpc` declares. Bus failures become AsrError 503/504
    naming what did not answer; an error reply becomes the AsrError it describes."""
    subject = rpc.subject
    what = what or subject
    if not nc.is_connected:
        raise AsrError(errors.UNAVAILABLE, "message bus (NATS) is not connected")
    sent_headers = request_headers()
    if headers:
        sent_headers.update(headers)
    try:
        msg = await _unless_lost(
            nc, nc.request(subject, codec.encode(message), timeout=timeout, headers=sent_headers), what
        )
    except nats.errors.MaxPayloadError:
        raise AsrError(
            ErrorCode.FILE_TOO_LARGE,
            f"message to {subject} is larger than the bus allows ({nc.max_payload} bytes): "
            "send it through the HTTP gateway, or compress the audio",
        ) from None
    except nats.errors.NoRespondersError:
        raise AsrError(
            errors.UNAVAILABLE, f"{what} is not available (no responders on {subject})", kind=ErrorCode.NO_RESPONDERS
        ) from None
    except nats.errors.TimeoutError:
        raise AsrError(errors.TIMEOUT, f"{what} did not answer within {timeout:g} s") from None
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
        nats.errors.StaleConnectionError,
    ):
        raise AsrError(errors.UNAVAILABLE, "message bus (NATS) is not connected") from None
    return decode_reply(rpc, msg.headers, msg.data, what)


def request_headers() -> dict[str, str]:
    """The headers of a request this process sends: msgpack, and the id of the request being handled."""
    headers = codec.headers_for(codec.MSGPACK)
    if logs.request_id.get():
        headers[codec.REQUEST_ID_HEADER] = logs.request_id.get()
    return headers


def decode_reply(rpc: Rpc[Any, Rep], headers: dict[str, str] | None, data: bytes, what: str = "") -> Rep:
    """The reply `rpc` declares, or the AsrError an error reply describes."""
    raise_for_error(headers, data)
    try:
        return codec.decode(data, rpc.reply, codec.content_type(headers))
    except codec.DecodeError as exc:
        raise AsrError(errors.INTERNAL, f"{what or rpc.subject} sent a malformed reply: {exc}") from None


# Headroom for headers and the rest of the request struct: a message over max_payload
# makes the server close the connection, so inline audio must stay clearly below it.
RECONNECT_WAIT_S = 5.0


async def reconnected(nc: Client, within: float) -> bool:
    """Until `nc` is connected again (True), or `within` seconds passed (False)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not nc.is_connected and loop.time() < give_up and not nc.is_closed:
        await asyncio.sleep(0.1)
    return nc.is_connected


def decode_streamed(msg: Msg, what: str) -> TranscriptionDelta | TranscriptionResult:
    """One message of a streamed transcription reply: a partial (TranscriptionDelta) or the last one."""
    if msg.headers and msg.headers.get(codec.PARTIAL_HEADER):
        try:
            return codec.decode(msg.data, TranscriptionDelta, codec.content_type(msg.headers))
        except codec.DecodeError as exc:
            raise AsrError(errors.INTERNAL, f"{what} sent a malformed partial reply: {exc}") from None
    return decode_reply(endpoints.TRANSCRIBE, msg.headers, msg.data, what)


async def stream_replies(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    what: str,
    silence: float | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Msg]:
    """A request whose reply may come as several messages (partials, then the last): each as it comes, keepalives
    left out, until the last. `timeout` bounds the whole; with `silence`, a responder quiet for that long (not
    even a keepalive) is taken for lost: AsrError kind SILENT."""
    if not nc.is_connected:
        raise AsrError(errors.UNAVAILABLE, "message bus (NATS) is not connected")
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent_headers = request_headers()
    sent_headers.update(headers or {})
    try:
        await nc.publish(subject, payload, reply=inbox, headers=sent_headers)
        while True:
            remaining = deadline - loop.time()
            wait = remaining if silence is None else min(remaining, silence)
            try:
                msg = await _unless_lost(nc, sub.next_msg(timeout=max(0.001, wait)), what)
            except nats.errors.TimeoutError:
                if silence is None or remaining <= silence:
                    raise AsrError(errors.TIMEOUT, f"{what} did not finish within {timeout:g} s") from None
                raise AsrError(ErrorCode.SILENT, f"{what} went silent for {silence:g} s") from None
            if not msg.data and msg.headers and msg.headers.get("Status") == "503":
                raise AsrError(ErrorCode.NO_RESPONDERS, f"{what} is not available (no responders)")
            if msg.headers and msg.headers.get(codec.KEEPALIVE_HEADER):
                continue
            yield msg
            if not (msg.headers and msg.headers.get(codec.PARTIAL_HEADER)):
                return
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
