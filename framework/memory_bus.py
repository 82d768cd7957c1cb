"""The bus in memory, for the fast tests: the same actors, entrypoints, codec and error replies as on NATS,
without a server. Events published are kept, so ``replay`` works as on the stream ASR_EVENTS; KV buckets and object
stores are framework.memory_store's (revisions, compare-and-set, watches, TTL). It is a `framework.transport`
Transport: an actor started here runs the code it runs on NATS.

    bus = MemoryBus()
    bus.answer(endpoints.GPU_ALLOCATE, lambda msg: Allocation(model=msg.model, device="cpu"))
    await bus.start(worker_factory(Lifecycle, config, runtime=FakeRuntime()))
    status = await bus.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model="whisper-tiny.en"))
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from framework import bus as nats_bus
from framework.actor import Actor, EndpointSpec, EventSpec, MessageSpec, entrypoints
from framework.memory_store import MemoryKv, MemoryObjectStore
from schemas import codec, errors, subjects
from schemas.endpoints import Rpc
from schemas.errors import AsrError
from schemas.events import Event, decode_event
from schemas.subjects import matches

Req = TypeVar("Req")
Rep = TypeVar("Rep")
Responder = Callable[[bytes, dict[str, str], str], Awaitable[tuple[bytes, dict[str, str]]]]
Listener = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class MemoryBus:
    def __init__(self) -> None:
        self.responders: list[tuple[str, Responder]] = []
        self.listeners: list[tuple[str, Listener]] = []
        self.history: list[tuple[str, bytes]] = []
        self.partials: list[tuple[str, bytes, dict[str, str]]] = []  # partial replies, as streamed
        self.actors: list[Actor] = []
        self.buckets: dict[str, MemoryKv] = {}
        self.stores: dict[str, MemoryObjectStore] = {}

    @property
    def events(self) -> list[Event]:
        return [decode_event(data) for _, data in self.history]

    # -- serving ---------------------------------------------------------------
    async def start(self, actor: Actor) -> Actor:
        actor.transport = self
        await actor.setup()
        for fn, spec in entrypoints(actor):
            if isinstance(spec, EndpointSpec):
                for subject, _group in actor.served_subjects(spec):
                    self.responders.append((subject, self._responder(actor, fn, spec)))
            elif isinstance(spec, MessageSpec):
                self.listeners.append((spec.subject, self._receiver(actor, fn, spec)))
            else:
                await self._follow(actor, fn, spec)
        self.actors.append(actor)
        return actor

    def _responder(self, actor: Actor, fn: Callable[..., Awaitable[Any]], spec: EndpointSpec) -> Responder:
        async def respond(data: bytes, headers: dict[str, str], subject: str) -> tuple[bytes, dict[str, str]]:
            async def partial(data: bytes, headers: dict[str, str]) -> None:
                self.partials.append((subject, data, headers))

            return await actor.dispatch(fn, spec, subject, data, headers, partial)

        return respond

    def _receiver(self, actor: Actor, fn: Callable[..., Awaitable[None]], spec: MessageSpec) -> Listener:
        async def listen(subject: str, data: bytes, headers: dict[str, str]) -> None:
            await actor.receive(fn, spec, subject, data, headers)

        return listen

    async def _follow(self, actor: Actor, fn: Callable[[Any], Awaitable[None]], spec: EventSpec) -> None:
        async def listen(subject: str, data: bytes, headers: dict[str, str]) -> None:
            await actor.deliver(fn, spec, subject, data, headers)

        for pattern in spec.subjects():
            if spec.replay == "all":
                for subject, data in list(self.history):
                    if matches(pattern, subject):
                        await listen(subject, data, {})
            elif spec.replay == "last":
                last: dict[str, bytes] = {}
                for subject, data in self.history:
                    if matches(pattern, subject):
                        last[subject] = data
                for subject, data in last.items():
                    await listen(subject, data, {})
            self.listeners.append((pattern, listen))

    def answer(self, rpc: Rpc[Req, Rep], fn: Callable[[Req], Rep | Awaitable[Rep]]) -> None:
        """Answer `rpc` with a plain function: a stand-in for an actor a test does not run."""

        async def respond(data: bytes, headers: dict[str, str], subject: str) -> tuple[bytes, dict[str, str]]:
            ctype = codec.content_type(headers)
            try:
                result = fn(codec.decode(data, rpc.request, ctype))
                reply = await result if inspect.isawaitable(result) else result
                return codec.encode(reply, ctype), codec.headers_for(ctype)
            except AsrError as exc:
                return nats_bus.error_reply(exc, ctype)

        self.responders.insert(0, (rpc.subject, respond))
        if rpc.per_node:  # a stand-in answers for every node
            self.responders.insert(0, (subjects.on_node(rpc.subject, "*"), respond))

    # -- what actors (and tests) send --------------------------------------------
    async def request(self, rpc: Rpc[Req, Rep], message: Req, *, timeout: float = 5.0) -> Rep:
        for pattern, respond in self.responders:
            if matches(pattern, rpc.subject):
                sent = nats_bus.request_headers()
                data, headers = await asyncio.wait_for(respond(codec.encode(message), sent, rpc.subject), timeout)
                return nats_bus.decode_reply(rpc, headers, data)
        raise AsrError(
            errors.UNAVAILABLE, f"{rpc.subject} is not available (no responders)", kind=errors.ErrorCode.NO_RESPONDERS
        )

    async def kv(self, bucket: str) -> MemoryKv:
        """The bucket, created on first use (a test that needs a TTL makes it with `bucket(name, ttl=...)`)."""
        return self.bucket(bucket)

    def bucket(self, name: str, *, ttl: float | None = None) -> MemoryKv:
        if name not in self.buckets:
            self.buckets[name] = MemoryKv(name, ttl=ttl)
        return self.buckets[name]

    async def object_store(self, bucket: str) -> MemoryObjectStore:
        return self.stores.setdefault(bucket, MemoryObjectStore(bucket))

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if subject.startswith(subjects.EVENTS_PREFIX):  # what the stream ASR_EVENTS keeps
            self.history.append((subject, data))
        for pattern, listen in list(self.listeners):
            if matches(pattern, subject):
                await listen(subject, data, headers or {})

    async def stop(self) -> None:
        for actor in reversed(self.actors):
            await actor.stop()
