"""The actor base: a service is a class whose entrypoints are its subscriptions.

    class Registry(Actor):
        name = "registry"

        @endpoint(subjects.REGISTRY_GET, GetModel)
        async def get(self, msg: GetModel) -> ModelInfo: ...

        @on_event(subjects.EVENTS_ALL)
        async def seen(self, event: Event) -> None: ...

`run()` connects (fail fast), serves every endpoint as a ``nats.micro`` service
(discoverable with ``$SRV.PING``), decodes msgpack or JSON by the request's
Content-Type, turns exceptions into service error replies, runs handlers
concurrently up to ``max_concurrency``, and drains on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service

from framework import bus
from framework.config import Config
from schemas import codec, errors, subjects
from schemas.errors import AsrError
from schemas.events import Event, decode_event, kind

T = TypeVar("T")
Handler = Callable[[Any], Awaitable[Any]]
VERSION = "0.1.0"

_ENDPOINT = "__asr_endpoint__"
_EVENTS = "__asr_events__"


def endpoint(subject: str, request_type: type, *, queue_group: str | None = None) -> Callable[[T], T]:
    """Mark a method as the request/reply handler of `subject`; it returns the reply struct."""

    def mark(fn: T) -> T:
        setattr(fn, _ENDPOINT, (subject, request_type, queue_group))
        return fn

    return mark


def on_event(subject: str = subjects.EVENTS_ALL) -> Callable[[T], T]:
    """Mark a method as a handler of the lifecycle events published on `subject`."""

    def mark(fn: T) -> T:
        setattr(fn, _EVENTS, subject)
        return fn

    return mark


def endpoint_name(subject: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", subject)


class Actor:
    name: ClassVar[str] = "actor"
    max_concurrency: ClassVar[int] = 64

    def __init__(self, config: Config) -> None:
        self.config = config
        self.instance = f"{self.name}@{socket.gethostname()}:{os.getpid()}"
        self.log = logging.getLogger(f"asrpro.{self.name}")
        self.nc: Client | None = None
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

    # -- helpers for subclasses ---------------------------------------------
    @property
    def bus(self) -> Client:
        assert self.nc is not None, "actor is not connected"
        return self.nc

    async def publish(self, event: Event) -> None:
        if not event.source:
            event.source = self.instance
        try:
            await self.bus.publish(subjects.event(kind(event), event.model), codec.encode(event))
        except Exception as exc:  # an event lost to a bus outage must not fail the work that caused it
            self.log.warning("could not publish %s event: %s", kind(event), exc)

    async def last_events(self, subject: str) -> list[Event]:
        """The last event of each subject matching `subject`, from the stream ASR_EVENTS: how an actor
        rebuilds state it keeps from events (e.g. circuit breakers) after a restart."""
        js = self.bus.jetstream()
        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        sub = await js.subscribe(subject, stream=subjects.EVENTS_STREAM, ordered_consumer=True, config=config)
        events: list[Event] = []
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending:
                msg = await sub.next_msg(timeout=5.0)
                pending = msg.metadata.num_pending
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    events.append(decode_event(msg.data, msg.headers))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return events

    async def request(self, subject: str, message: Any, reply_type: type[T], *, timeout: float = 5.0) -> T:
        return await bus.request(self.bus, subject, message, reply_type, timeout=timeout)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background task that is awaited on shutdown and whose failure is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def loop(self, coro: Awaitable[Any]) -> None:
        """Run a never-ending background loop (timers, watchers); cancelled on shutdown."""
        task = asyncio.ensure_future(coro)
        self._loops.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._loops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", exc_info=task.exception())

    async def add_endpoint(
        self, subject: str, handler: Handler, request_type: type, *, queue_group: str | None = None
    ) -> None:
        assert self._service is not None

        async def on_request(req: Request) -> None:
            # nats-py runs one callback at a time per subscription: take a slot, then hand off.
            await self._slots.acquire()
            task = self.spawn(self._serve(req, handler, request_type))
            task.add_done_callback(lambda _: self._slots.release())

        await self._service.add_endpoint(
            EndpointConfig(
                name=endpoint_name(subject),
                subject=subject,
                handler=on_request,
                queue_group=queue_group or f"asrpro-{self.name}",
            )
        )

    async def _serve(self, req: Request, handler: Handler, request_type: type) -> None:
        ctype = codec.content_type(req.headers)
        try:
            message = codec.decode(req.data, request_type, ctype)
            reply = await handler(message)
            await req.respond(codec.encode(reply, ctype), headers=codec.headers_for(ctype))
        except codec.DecodeError as exc:
            await self._respond_error(req, AsrError(errors.BAD_REQUEST, str(exc)), ctype)
        except AsrError as exc:
            await self._respond_error(req, exc, ctype)
        except Exception as exc:
            self.log.exception("handler for %s failed", req.subject)
            await self._respond_error(req, AsrError(errors.INTERNAL, f"internal error: {exc!r}"), ctype)

    async def _respond_error(self, req: Request, exc: AsrError, ctype: str) -> None:
        try:
            await req.respond_error(
                exc.code,
                exc.message.replace("\n", " ")[:1000],
                codec.encode(exc.reply(), ctype),
                codec.headers_for(ctype),
            )
        except Exception as send_exc:
            self.log.warning("could not send error reply on %s: %s", req.subject, send_exc)

    # -- running -------------------------------------------------------------
    async def start(self) -> None:
        nats_cfg = self.config.nats
        self.nc = await bus.connect(
            nats_cfg.url,
            name=self.instance,
            user=nats_cfg.user,
            password=nats_cfg.password,
            connect_timeout=nats_cfg.connect_timeout,
        )
        await self.setup()
        self._service = await add_service(
            self.nc, name=f"asrpro-{self.name}", version=VERSION, description=self.__doc__ or self.name
        )
        for attr in dir(type(self)):
            fn = getattr(self, attr, None)
            spec = getattr(fn, _ENDPOINT, None)
            if spec:
                subject, request_type, queue_group = spec
                await self.add_endpoint(subject, fn, request_type, queue_group=queue_group)
            event_subject = getattr(fn, _EVENTS, None)
            if event_subject:
                await self.nc.subscribe(event_subject, cb=self._event_callback(fn))
        # Subscriptions reach the server asynchronously: once start() returns, requests must find us.
        await self.nc.flush()
        self.log.info("%s serving", self.name, extra={"instance": self.instance})

    def _event_callback(self, fn: Callable[[Event], Awaitable[None]]) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(msg: Msg) -> None:
            try:
                event = decode_event(msg.data, msg.headers)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.log.warning("ignoring malformed event on %s: %s", msg.subject, exc)
                return
            try:
                await fn(event)
            except Exception:
                self.log.exception("event handler %s failed", fn.__name__)

        return on_msg

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
