"""Events only from their owners: each actor user may publish only the event types it owns; a forged one from any
other user never reaches a subscriber (nats-server refuses it)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from schemas import access, codec, subjects
from schemas.events import EVENT_TYPES, BreakerChanged, Event, RestartScheduled, tag_of
from tests.conftest import Nats

# Derived from the declarations (each event type's `owner`): what nats.conf is rendered from.
OWNERS = {user: {tag_of(t) for t in EVENT_TYPES if t.owner == user} for user in (*access.ACTORS, "client")}


def sample(event_type: type[Event]) -> Event:
    """Any valid event of the type, built from its required fields."""
    fields = {
        "model": "forged",
        "runtime": "x",
        "url": "u",
        "reason": "r",
        "request_id": "q",
        "audio_s": 1.0,
        "total_s": 1.0,
        "code": "500",
        "previous": "p",
        "state": "open",
        "attempt": 1,
        "delay_s": 1.0,
    }
    names = {f for f in event_type.__struct_fields__}
    return event_type(**{k: v for k, v in fields.items() if k in names})  # type: ignore[arg-type]


@pytest.mark.parametrize("user", sorted(OWNERS))
async def test_a_user_publishes_only_the_events_it_owns(jetstream: Nats, user: str) -> None:
    watcher = await jetstream.connect("admin")
    seen: list[str] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.subject.split(".")[2])

    await watcher.subscribe(subjects.EVENTS_PREFIX + "*.forged", cb=on_msg)
    await watcher.flush()
    publisher = await jetstream.connect(user)
    try:
        for event_type in EVENT_TYPES:
            event = sample(event_type)
            await publisher.publish(subjects.event(tag_of(event_type), "forged"), codec.encode(event))
        await publisher.flush()
        await asyncio.sleep(0.5)
    finally:
        await publisher.close()
        await watcher.close()
    assert set(seen) == OWNERS[user], f"{user} got through: {set(seen) - OWNERS[user]}"


def test_the_samples_are_every_event_type() -> None:
    assert {tag_of(t) for t in EVENT_TYPES} == set().union(*OWNERS.values())
    assert isinstance(sample(BreakerChanged), BreakerChanged) and isinstance(sample(RestartScheduled), RestartScheduled)
