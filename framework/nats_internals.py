"""The two things nats-py knows but does not expose, read in this one place.

- A `nats.micro` request's reply subject: `Request` keeps its message private, and streamed replies (partials
  before the last reply) must publish to that subject themselves.
- The INFO the server sent on connect (its `connect_urls`: the cluster's other servers as clients see them).
- A KV bucket's stream and key prefix, to list its keys from the stream's subjects (`ListedKeyValue`).

tests/unit/test_nats_internals.py fails when nats-py changes either, and pyproject.toml bounds nats-py below its
next major version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue
from nats.micro.request import Request


def request_message(req: Request) -> Msg:
    """The core message under a nats.micro request (its reply subject, its headers as sent)."""
    msg: Msg = req._msg
    return msg


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO of the server `nc` connected to first (nats-py keeps the first one)."""
    info: dict[str, Any] = nc._server_info or {}
    return info


KEY_READS = 32  # reads in flight while a listing reads the listed keys
SUBJECTS_PAGE = 100_000  # nats-server's page of STREAM.INFO subjects


class ListedKeyValue(KeyValue):
    """nats-py's KeyValue whose keys() reads the stream's subjects instead of watching the bucket.

    nats-py's keys() watches the bucket with a new ephemeral consumer, and both halves of that fail:
    - its watch ends when the consumer reports nothing pending and nothing was received yet; once the server has
      pushed every entry but the client has not read them, that reads as an empty bucket (a full bucket was listed
      as empty in up to 20 of 600 calls under CPU load; a jobs list came back empty in CI);
    - the consumer outlives the call for five minutes: the 1,000th call within them is refused.
    The stream's subjects come in one reply, with nothing in flight and nothing left behind."""

    @classmethod
    async def bind(cls, js: JetStreamContext, bucket: str) -> ListedKeyValue:
        found = await js.key_value(bucket)
        return cls(name=found._name, stream=found._stream, pre=found._pre, js=found._js, direct=found._direct)

    async def keys(self, filters: list[str] | None = None, **kwargs: Any) -> list[str]:
        found = [entry.key for entry in await self.current()]  # by key
        found = [key for key in found if not filters or any(f in key for f in filters)]
        if not found:
            raise NoKeysError
        return found

    async def current(self, keys: str = ">") -> list[KeyValue.Entry]:
        """The entries of the live keys that match `keys` (a NATS wildcard pattern), by key."""
        info = await self._js.stream_info(self._stream, subjects_filter=f"{self._pre}{keys}")
        listed = sorted(subject[len(self._pre) :] for subject in info.state.subjects or {})
        if len(listed) >= SUBJECTS_PAGE:  # nats-py reads only the first page: never a short list as if it were all
            raise RuntimeError(f"{self._name} holds {len(listed)} or more keys: too many to list at once")
        # A deleted or purged key is listed too (its marker is the subject's last message): read each, some at once.
        reads = asyncio.Semaphore(KEY_READS)

        async def read(key: str) -> KeyValue.Entry | None:
            async with reads:
                try:
                    return await self.get(key)
                except KeyNotFoundError:
                    return None

        return [entry for entry in await asyncio.gather(*map(read, listed)) if entry is not None]
