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
handler with those types only (framework.entrypoints). `start()` serves everything on NATS (nats.micro services,
discoverable with ``$SRV.PING``: framework.nats_serving); `framework.memory_bus.MemoryBus` serves the same actor in
memory for the fast tests. Either way the actor talks through its `transport` (framework.transport).
Requests are decoded from msgpack or JSON by their Content-Type, exceptions become service error replies,
handlers run concurrently up to ``max_concurrency``, and SIGTERM/SIGINT drain the actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import msgspec
from nats.aio.client import Client
from nats.micro.service import Service

from framework import bus, logs, nats_serving
from framework.config import Config, node_name

# The entrypoint declarations live in framework.entrypoints; actors import them from here, beside Actor.
from framework.entrypoints import (
    VERSION,
    EndpointSpec,
    EventSpec,
    MessageSpec,
    RawSend,
    Replay,
    ReplyChannel,
    endpoint,
    endpoint_name,
    entrypoints,
    on_event,
    on_message,
    reply_channel,
    send_keepalive,
    send_partial,
)
from framework.transport import NatsTransport, Transport
from schemas import codec, errors, subjects
from schemas.endpoints import Rpc
from schemas.errors import AsrError
from schemas.events import Event, decode_event, kind, subject_of

__all__ = [
    "VERSION",
    "Actor",
    "EndpointSpec",
    "EventSpec",
    "MessageSpec",
    "Replay",
    "endpoint",
    "endpoint_name",
    "entrypoints",
    "on_event",
    "on_message",
    "send_keepalive",
    "send_partial",
]
Req = TypeVar("Req")
Rep = TypeVar("Rep")


class Actor:
    name: ClassVar[str] = "actor"
    max_concurrency: ClassVar[int] = 64

    def __init__(self, config: Config) -> None:
        self.config = config
        self.instance = f"{self.name}@{socket.gethostname()}:{os.getpid()}"
        self.node_name = node_name(config)
        self.log = logging.getLogger(f"asrpro.{self.name}")
        self.nc: Client | None = None  # the NATS connection, when served on NATS
        self._transport: Transport | None = None  # NATS, or the in-memory bus that serves it
        self._service: Service | None = None
        self.slots = asyncio.Semaphore(self.max_concurrency)
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
    def transport(self) -> Transport:
        """What the actor talks through: publish, request, KV buckets, object stores (framework.transport)."""
        if self._transport is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self._transport = transport

    @property
    def connection(self) -> Client:
        """The NATS connection, for what only NATS does (cluster-wide streams); prefer `transport`."""
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
            await self.transport.publish(subject, codec.encode(message))
        except Exception as exc:
            self.log.warning("could not send to %s: %s", subject, exc)

    async def request(self, rpc: Rpc[Req, Rep], message: Req, *, timeout: float = 5.0) -> Rep:
        return await self.transport.request(rpc, message, timeout=timeout)

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
        reply_channel.set(ReplyChannel(partial, ctype) if partial is not None else None)
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

    def served_subjects(self, spec: EndpointSpec) -> list[tuple[str, str]]:
        """(subject, queue group) pairs an endpoint is served on: its subject, and this node's copy of a per-node
        one (shared only with this node's other copies of the actor)."""
        group = spec.queue_group or f"asrpro-{self.name}"
        served = [(spec.rpc.subject, group)] if spec.rpc.plain else []
        if spec.rpc.per_node:
            served.append((subjects.on_node(spec.rpc.subject, self.node_name), f"{group}-{self.node_name}"))
        return served

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

    # -- running on NATS ---------------------------------------------------------
    async def start(self) -> None:
        """Connect as configured and serve every entrypoint on NATS (framework.nats_serving)."""
        self.nc = await bus.connect_as_configured(self.config.nats, self.instance)
        self.transport = NatsTransport(self.nc)
        await self.setup()
        self._service = await nats_serving.serve(self, self.nc)
        self.log.info("%s serving", self.name, extra={"instance": self.instance})

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
