"""Entrypoints: how an actor's methods declare what they serve.

`endpoint(rpc)` marks a request handler (the subject and reply type come from the `Rpc` declared in
`schemas.endpoints`, the request type from the handler's annotation, checked against the `Rpc` when the class is
defined); `on_event(*types)` a handler of event types; `on_message(subject, type)` a handler of plain messages.
A mark only declares: the transport that serves the actor (framework.nats_serving, framework.memory_bus) reads them
with `entrypoints(actor)`. `send_partial`/`send_keepalive` answer the request being handled before its reply.
"""

from __future__ import annotations

import contextvars
import inspect
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from schemas import codec, subjects
from schemas.endpoints import Rpc
from schemas.events import EVENT_TYPES, Event, subject_of

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Req = TypeVar("Req")
Rep = TypeVar("Rep")
VERSION = "0.1.0"
Replay = Literal["none", "last", "all"]

_ENTRYPOINT = "__asr_entrypoint__"
RawSend = Callable[[bytes, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class ReplyChannel:
    send: RawSend
    ctype: str


# Where partial replies of the request being handled go (None: the requester takes one reply only).
reply_channel: contextvars.ContextVar[ReplyChannel | None] = contextvars.ContextVar("reply_channel", default=None)


async def send_keepalive() -> bool:
    """An empty partial reply marked Asr-Keepalive: "still working", for a requester that watches for silence (a
    proxy that handed the request to another node tells a lost node from a long decode by it)."""
    channel = reply_channel.get()
    if channel is None:
        return False
    await channel.send(b"", {codec.PARTIAL_HEADER: "1", codec.KEEPALIVE_HEADER: "1"})
    return True


async def send_partial(message: Any) -> bool:
    """One partial reply to the requester of the request being handled (a streamed reply: every message but the
    last carries the Asr-Partial header), in the request's encoding. False when there is no one to send it to."""
    channel = reply_channel.get()
    if channel is None:
        return False
    headers = codec.headers_for(channel.ctype)
    headers[codec.PARTIAL_HEADER] = "1"
    await channel.send(codec.encode(message, channel.ctype), headers)
    return True


@dataclass(frozen=True)
class EndpointSpec:
    rpc: Rpc[Any, Any]
    request_type: type
    queue_group: str | None
    takes_subject: bool  # the handler wants the subject too (wildcard endpoints: the model is its last part)


@dataclass(frozen=True)
class EventSpec:
    types: tuple[type[Event], ...]
    replay: Replay

    def subjects(self) -> list[str]:
        if set(self.types) == set(EVENT_TYPES):
            return [subjects.EVENTS_ALL]
        return [subject_of(t) for t in self.types]


def _hints(fn: Callable[..., Any]) -> tuple[list[str], dict[str, Any]]:
    params = list(inspect.signature(fn).parameters)[1:]  # without self
    return params, typing.get_type_hints(fn)


def endpoint(rpc: Rpc[Req, Rep], *, queue_group: str | None = None) -> Callable[[F], F]:
    """Mark a method as the handler of `rpc`. Its first parameter's annotation is the request type and must be
    what `rpc` carries; it returns `rpc`'s reply type. A second parameter receives the subject."""

    def mark(fn: F) -> F:
        params, hints = _hints(fn)
        name = getattr(fn, "__qualname__", repr(fn))
        if not params or hints.get(params[0]) is not rpc.request:
            found = hints.get(params[0]) if params else None
            raise TypeError(f"{name} must take {rpc.request.__name__} (what {rpc.subject} carries), not {found}")
        if hints.get("return") is not rpc.reply:
            raise TypeError(f"{name} must return {rpc.reply.__name__} (the reply of {rpc.subject})")
        spec = EndpointSpec(rpc, rpc.request, queue_group, takes_subject=len(params) > 1)
        setattr(fn, _ENTRYPOINT, spec)
        return fn

    return mark


def on_event(*types: type[Event], replay: Replay = "none") -> Callable[[F], F]:
    """Mark a method as the handler of these event types (each on its own subject, every model).

    replay: "none" — live events only; "last" — first the last event of each subject still in the stream
    ASR_EVENTS (state kept as events, e.g. circuit breakers, survives a restart), then live ones; "all" —
    every event the stream holds, then live ones, in order (counters rebuilt from history).

    Each type is its own subscription, handled one message at a time: events of one type arrive in order, events
    of different types only as close to it as the bus makes them, so a handler that depends on the order between
    types updates its state before its first await."""
    if not types:
        raise TypeError("on_event needs at least one event type")
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise TypeError(f"not event types of schemas.events: {unknown}")

    def mark(fn: F) -> F:
        params, hints = _hints(fn)
        accepted = set(typing.get_args(hints.get(params[0]))) or {hints.get(params[0])} if params else set()
        if not set(types) <= accepted:
            name = getattr(fn, "__qualname__", repr(fn))
            raise TypeError(f"{name} is annotated {hints.get(params[0]) if params else None}, not {types}")
        setattr(fn, _ENTRYPOINT, EventSpec(tuple(types), replay))
        return fn

    return mark


@dataclass(frozen=True)
class MessageSpec:
    subject: str
    message_type: type


def on_message(subject: str, message_type: type) -> Callable[[F], F]:
    """Mark a method as the handler of plain (core NATS, not stream) messages on `subject`, decoded as
    `message_type`; it is called with the message and the subject. For signals that are not history, such as a
    requester cancelling its request."""

    def mark(fn: F) -> F:
        params, hints = _hints(fn)
        if not params or hints.get(params[0]) is not message_type:
            raise TypeError(f"{getattr(fn, '__qualname__', fn)} must take {message_type.__name__} first")
        setattr(fn, _ENTRYPOINT, MessageSpec(subject, message_type))
        return fn

    return mark


def endpoint_name(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", subject.replace(">", "all"))


def entrypoints(
    actor: object,
) -> list[tuple[Callable[..., Awaitable[Any]], EndpointSpec | EventSpec | MessageSpec]]:
    """Event handlers first, then endpoints: an actor answers requests only once the state it keeps from events
    (replayed from the stream) is rebuilt."""
    found = []
    for attr in dir(type(actor)):
        # Looked up on the class: reading every attribute of the instance would run its properties.
        spec = getattr(inspect.getattr_static(type(actor), attr), _ENTRYPOINT, None)
        if spec is not None:
            found.append((getattr(actor, attr), spec))
    return sorted(found, key=lambda entry: isinstance(entry[1], EndpointSpec))
