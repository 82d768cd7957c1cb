"""The two things nats-py knows but does not expose, read in this one place.

- A `nats.micro` request's reply subject: `Request` keeps its message private, and streamed replies (partials
  before the last reply) must publish to that subject themselves.
- The INFO the server sent on connect (its `connect_urls`: the cluster's other servers as clients see them).

tests/unit/test_nats_internals.py fails when nats-py changes either, and pyproject.toml bounds nats-py below its
next major version.
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro.request import Request


def request_message(req: Request) -> Msg:
    """The core message under a nats.micro request (its reply subject, its headers as sent)."""
    msg: Msg = req._msg
    return msg


def server_info(nc: Client) -> dict[str, Any]:
    """The INFO of the server `nc` connected to first (nats-py keeps the first one)."""
    info: dict[str, Any] = nc._server_info or {}
    return info
