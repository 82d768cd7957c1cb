"""Serving an actor on NATS: each endpoint a nats.micro endpoint (queue group per actor, discoverable with
``$SRV.PING``), each event type a subscription (with replay from the stream ASR_EVENTS where asked), each plain
message subject a subscription. The in-memory counterpart is framework.memory_bus."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service

from framework import bus
from framework.entrypoints import VERSION, EndpointSpec, EventSpec, MessageSpec, endpoint_name, entrypoints
from framework.nats_internals import request_message
from schemas import subjects

if TYPE_CHECKING:
    from framework.actor import Actor


async def serve(self: Actor, nc: Client) -> Service:
    """Serve every entrypoint of `self` on `nc`; returns the nats.micro service (stopped by the actor)."""
    # The metadata says where the process runs, so that a gateway on the same host can read its CPU and memory
    # (/metrics) — found through nats.micro's own discovery ($SRV.INFO), not a registry of our own.
    where = {"node": self.node_name, "pid": str(os.getpid())}
    service = await add_service(
        nc,
        name=subjects.SERVICE_PREFIX + self.name,
        version=VERSION,
        description=self.__doc__ or self.name,
        metadata=where,
    )
    for fn, spec in entrypoints(self):
        if isinstance(spec, EndpointSpec):
            await _serve_endpoint(self, service, fn, spec)
        elif isinstance(spec, MessageSpec):
            await _follow_messages(self, fn, spec)
        else:
            await _follow_events(self, fn, spec)
    # Subscriptions reach the server asynchronously: once serving returns, requests must find us.
    await nc.flush()
    return service


async def _serve_endpoint(
    self: Actor, service: Service, handler: Callable[..., Awaitable[Any]], spec: EndpointSpec
) -> None:
    async def on_request(req: Request) -> None:
        # nats-py runs one callback at a time per subscription: take a slot, then hand off.
        await self.slots.acquire()
        task = self.spawn(_answer(self, req, handler, spec))
        task.add_done_callback(lambda _: self.slots.release())

    for subject, group in self.served_subjects(spec):
        await service.add_endpoint(
            EndpointConfig(name=endpoint_name(subject), subject=subject, handler=on_request, queue_group=group)
        )


async def _answer(self: Actor, req: Request, handler: Callable[..., Awaitable[Any]], spec: EndpointSpec) -> None:
    msg = request_message(req)  # nats.micro keeps the reply subject to itself; streamed replies need it
    reply_to = msg.reply
    if not bus.asks_for_an_inbox_reply(msg):
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


async def _follow_messages(self: Actor, handler: Callable[..., Awaitable[None]], spec: MessageSpec) -> None:
    async def on_msg(msg: Msg) -> None:
        if bus.published_directly(msg):
            await self.receive(handler, spec, msg.subject, msg.data, msg.headers)

    await self.connection.subscribe(spec.subject, cb=on_msg)


async def _follow_events(self: Actor, handler: Callable[[Any], Awaitable[None]], spec: EventSpec) -> None:
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
            await _follow_live(self, nc, handler, spec, subject)


async def _follow_live(
    self: Actor, nc: Client, handler: Callable[[Any], Awaitable[None]], spec: EventSpec, subject: str
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
    for data, headers in await _last_per_subject(self, subject):
        await self.deliver(handler, spec, subject, data, headers)
    while held:  # nothing awaits between the last check and switching to live delivery
        msg = held.pop(0)
        await self.deliver(handler, spec, msg.subject, msg.data, msg.headers)
    held = None


async def _last_per_subject(self: Actor, subject: str) -> list[tuple[bytes, Any]]:
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
