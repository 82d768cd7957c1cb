"""A jobs list that cannot read the bucket is an error the caller can retry, never an empty list."""

from __future__ import annotations

import nats.errors
import pytest
from nats.js.kv import KeyValue

from actors.jobs.store import JobStore
from framework.memory_bus import MemoryBus
from framework.memory_store import MemoryKv
from schemas import errors
from schemas.errors import AsrError
from schemas.kv import JOB


class UnreadableKv(MemoryKv):
    async def current(self, keys: str = ">") -> list[KeyValue.Entry]:
        raise nats.errors.TimeoutError


async def test_a_bucket_that_cannot_be_listed_is_unavailable_not_empty() -> None:
    bus = MemoryBus()
    store = JobStore(bus)
    assert await store.all() == []  # empty
    bus.buckets[JOB.bucket] = UnreadableKv(JOB.bucket)
    with pytest.raises(AsrError) as raised:
        await JobStore(bus).all()
    assert raised.value.code == errors.UNAVAILABLE
