"""The actor base: a service is a class whose entrypoints are its subscriptions.

    class Registry(Actor):
        name = "registry"

        @endpoint(endpoints.REGISTRY_GET)
        async def get(self, msg: GetModel) -> ModelInfo: ...

        @on_event(ServerCrashed, ServerUnhealthy)
        async def failed(self, event: ServerCrashed | ServerUnhealthy) -> None: ...

An entrypoint only marks the method. The subject and reply type come from the `Rpc` declared in
`schemas.endpoints`, the request type from the handler's annotation (checked against the `Rpc` when the
class is defined); `on_event` subscribes to exactly the subjects of the event types it names and calls the
handler with those types only. `start()` serves everything on NATS (nats.micro services, discoverable with
``$SRV.PING``); `framework.memory_bus.MemoryBus` serves the same actor in memory for the fast tests.
Requests are decoded from msgpack or JSON by their Content-Type, exceptions become service error replies,
handlers run concurrently up to ``max_concurrency``, and SIGTERM/SIGINT drain the actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import re
import signal
import socket
import typing
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service

from framework import bus, logs
from framework.config import Config, node_name
from schemas import codec, errors, subjects
from schemas.endpoints import Rpc
from schemas.errors import AsrError
from schemas.events import EVENT_TYPES, Event, decode_event, kind, subject_of

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Req = TypeVar("Req")
Rep = TypeVar("Rep")
VERSION = "0.1.0"
Replay = Literal["none", "last", "all"]

_ENTRYPOINT = "__asr_entrypoint__"
RawSend = Callable[[bytes, dict[str, str]], Awaitable[None]]


@dataclass(frozen=True)
class _ReplyChannel:
    send: RawSend
    ctype: str


# Where partial replies of the request being handled go (None: the requester takes one reply only).
_reply_channel: contextvars.ContextVar[_ReplyChannel | None] = contextvars.ContextVar("reply_channel", default=None)


async def send_keepalive() -> bool:
    """An empty partial reply marked Asr-Keepalive: "still working", for a requester that watches for silence (a
    proxy that handed the request to another node tells a lost node from a long decode by it)."""
    channel = _reply_channel.get()
    if channel is None:
        return False
    await channel.send(b"", {codec.PARTIAL_HEADER: "1", codec.KEEPALIVE_HEADER: "1"})
    return True


async def send_partial(message: Any) -> bool:
    """One partial reply to the requester of the request being handled (a streamed reply: every message but the
    last carries the Asr-Partial header), in the request's encoding. False when there is no one to send it to."""
    channel = _reply_channel.get()
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


class Actor:
    name: ClassVar[str] = "actor"
    max_concurrency: ClassVar[int] = 64

    def __init__(self, config: Config) -> None:
        self.config = config
        self.instance = f"{self.name}@{socket.gethostname()}:{os.getpid()}"
        self.node_name = node_name(config)
        self.log = logging.getLogger(f"asrpro.{self.name}")
        self.nc: Client | None = None  # on NATS; None when served by a MemoryBus
        self._memory: Any = None  # the MemoryBus serving this actor, if any
        self._service: Service | None = None
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._stopped = False

    # -- hooks ---------------------------------------------------------------
    async def setup(self) -> None:
        """After connecting, before serving."""

    async def teardown(self) -> None:
        """After the endpoints stopped and in-flight requests finished."""

    # -- what an actor uses ----------------------------------------------------
    @property
    def connection(self) -> Client:
        """The NATS connection, for JetStream (KV buckets, object store)."""
        if self.nc is None:
            raise RuntimeError(f"{self.name} is not connected to NATS")
        return self.nc

    async def publish(self, event: Event) -> None:
        if not event.source:
            event.source = self.instance
        if not event.node:
            event.node = self.node_name
        await self.send(subject_of(type(event), event.model), event)

    async def send(self, subject: str, message: Any) -> None:
        """A message on a core subject (events, progress reports). One lost to a bus outage is logged: it must not
        fail the work that caused it."""
        try:
            if self._memory is not None:
                await self._memory.publish(subject, codec.encode(message))
            else:
                await self.connection.publish(subject, codec.encode(message))
        except Exception as exc:
            self.log.warning("could not send to %s: %s", subject, exc)

    async def request(self, rpc: Rpc[Req, Rep], message: Req, *, timeout: float = 5.0) -> Rep:
        if self._memory is not None:
            result: Rep = await self._memory.request(rpc, message, timeout=timeout)
            return result
        return await bus.request(self.connection, rpc, message, timeout=timeout)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background task that is awaited on shutdown and whose failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def loop(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a never-ending background loop (timers, watchers); cancelled on shutdown. It gets a context of its
        own: a loop started while a request is handled must not log under that request's id for ever after."""
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._loops.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._loops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", exc_info=task.exception())

    # -- dispatch (the same on NATS and in memory) ------------------------------
    async def dispatch(
        self,
        handler: Callable[..., Awaitable[Any]],
        spec: EndpointSpec,
        subject: str,
        data: bytes,
        headers: Any,
        partial: RawSend | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """One request: decode by its Content-Type, run the handler, encode the reply or the error. `partial`
        sends a message to the requester before the reply (streamed replies, `send_partial`)."""
        ctype = codec.content_type(headers)
        logs.request_id.set(logs.clean_request_id((headers or {}).get(codec.REQUEST_ID_HEADER)))
        _reply_channel.set(_ReplyChannel(partial, ctype) if partial is not None else None)
        try:
            message: Any = codec.decode(data, spec.request_type, ctype)
            reply = await (handler(message, subject) if spec.takes_subject else handler(message))
            return codec.encode(reply, ctype), codec.headers_for(ctype)
        except codec.DecodeError as exc:
            error = AsrError(errors.BAD_REQUEST, str(exc))
        except AsrError as exc:
            error = exc
        except Exception as exc:
            self.log.exception("handler for %s failed", subject)
            error = AsrError(errors.INTERNAL, f"internal error: {exc!r}")
        return bus.error_reply(error, ctype)

    async def deliver(
        self, handler: Callable[[Any], Awaitable[None]], spec: EventSpec, msg_subject: str, data: bytes, headers: Any
    ) -> None:
        try:
            event = decode_event(data, headers)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.warning("ignoring malformed event on %s: %s", msg_subject, exc)
            return
        # The subject says who could publish it (nats.conf lets each actor publish only its own event types):
        # a payload that claims another type or model than its subject is a forgery, or a mistake.
        if not isinstance(event, spec.types) or msg_subject != subject_of(type(event), event.model):
            self.log.warning("ignoring %s event on %s: not what the subject carries", kind(event), msg_subject)
            return
        try:
            await handler(event)
        except Exception:
            self.log.exception("event handler %s failed", getattr(handler, "__name__", handler))

    # -- running on NATS ---------------------------------------------------------
    async def start(self) -> None:
        self.nc = await bus.connect_as_configured(self.config.nats, self.instance)
        await self.setup()
        self._service = await add_service(
            self.nc, name=f"asrpro-{self.name}", version=VERSION, description=self.__doc__ or self.name
        )
        for fn, spec in entrypoints(self):
            if isinstance(spec, EndpointSpec):
                await self._serve_endpoint(fn, spec)
            elif isinstance(spec, MessageSpec):
                await self._follow_messages(fn, spec)
            else:
                await self._follow_events(fn, spec)
        # Subscriptions reach the server asynchronously: once start() returns, requests must find us.
        await self.nc.flush()
        self.log.info("%s serving", self.name, extra={"instance": self.instance})

    async def _serve_endpoint(self, handler: Callable[..., Awaitable[Any]], spec: EndpointSpec) -> None:
        assert self._service is not None

        async def on_request(req: Request) -> None:
            # nats-py runs one callback at a time per subscription: take a slot, then hand off.
            await self._slots.acquire()
            task = self.spawn(self._answer(req, handler, spec))
            task.add_done_callback(lambda _: self._slots.release())

        for subject, group in self.served_subjects(spec):
            await self._service.add_endpoint(
                EndpointConfig(name=endpoint_name(subject), subject=subject, handler=on_request, queue_group=group)
            )

    def served_subjects(self, spec: EndpointSpec) -> list[tuple[str, str]]:
        """(subject, queue group) pairs an endpoint is served on: its subject, and this node's copy of a per-node
        one (shared only with this node's other copies of the actor)."""
        group = spec.queue_group or f"asrpro-{self.name}"
        served = [(spec.rpc.subject, group)] if spec.rpc.plain else []
        if spec.rpc.per_node:
            served.append((subjects.on_node(spec.rpc.subject, self.node_name), f"{group}-{self.node_name}"))
        return served

    async def _answer(self, req: Request, handler: Callable[..., Awaitable[Any]], spec: EndpointSpec) -> None:
        reply_to = req._msg.reply  # nats.micro keeps the reply subject to itself; streamed replies need it
        if not bus.asks_for_an_inbox_reply(req._msg):
            self.log.warning("ignoring a request on %s whose reply subject is not an inbox: %r", req.subject, reply_to)
            return

        async def partial(data: bytes, headers: dict[str, str]) -> None:
            await self.connection.publish(reply_to, data, headers=headers)

        data, headers = await self.dispatch(
            handler, spec, req.subject, req.data, req.headers, partial if reply_to else None
        )
        try:
            await req.respond(data, headers=headers)
        except Exception as exc:
            self.log.warning("could not reply on %s: %s", req.subject, exc)

    async def _follow_messages(self, handler: Callable[..., Awaitable[None]], spec: MessageSpec) -> None:
        async def on_msg(msg: Msg) -> None:
            if bus.published_directly(msg):
                await self.receive(handler, spec, msg.subject, msg.data, msg.headers)

        await self.connection.subscribe(spec.subject, cb=on_msg)

    async def receive(
        self, handler: Callable[..., Awaitable[None]], spec: MessageSpec, subject: str, data: bytes, headers: Any
    ) -> None:
        try:
            message: Any = codec.decode(data, spec.message_type, codec.content_type(headers))
        except codec.DecodeError as exc:
            self.log.warning("ignoring malformed message on %s: %s", subject, exc)
            return
        try:
            await handler(message, subject)
        except Exception:
            self.log.exception("handler %s failed", getattr(handler, "__name__", handler))

    async def _follow_events(self, handler: Callable[[Any], Awaitable[None]], spec: EventSpec) -> None:
        nc = self.connection

        for subject in spec.subjects():
            if spec.replay == "all":
                # An ordered consumer from the stream's first event: history first, then live, one sequence.
                async def in_order(msg: Msg) -> None:
                    await self.deliver(handler, spec, msg.subject, msg.data, msg.headers)

                config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
                await nc.jetstream().subscribe(
                    subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config, cb=in_order
                )
            else:
                await self._follow_live(nc, handler, spec, subject)

    async def _follow_live(
        self, nc: Client, handler: Callable[[Any], Awaitable[None]], spec: EventSpec, subject: str
    ) -> None:
        """Live events on `subject`; with replay "last", the last one of each subject from the stream first.

        Subscribed before the history is read, so nothing published meanwhile is missed; live events are held
        back until the history is delivered, so an old event never lands after a newer one (one seen in both is
        delivered twice, in order, which state kept from events tolerates)."""
        held: list[Msg] | None = [] if spec.replay == "last" else None

        async def on_msg(msg: Msg) -> None:
            if not bus.published_directly(msg):
                return
            if held is not None:
                held.append(msg)
                return
            await self.deliver(handler, spec, msg.subject, msg.data, msg.headers)

        await nc.subscribe(subject, cb=on_msg)
        if held is None:
            return
        for data, headers in await self._last_per_subject(subject):
            await self.deliver(handler, spec, subject, data, headers)
        while held:  # nothing awaits between the last check and switching to live delivery
            msg = held.pop(0)
            await self.deliver(handler, spec, msg.subject, msg.data, msg.headers)
        held = None

    async def _last_per_subject(self, subject: str) -> list[tuple[bytes, Any]]:
        js = self.connection.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        sub = await js.subscribe(subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config)
        found: list[tuple[bytes, Any]] = []
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending:
                msg = await sub.next_msg(timeout=5.0)
                pending = msg.metadata.num_pending
                found.append((msg.data, msg.headers))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return found

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        for task in list(self._loops):
            task.cancel()
        await self.teardown()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        self.log.info("%s stopped", self.name)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stopping.wait()
        await self.stop()
