"""framework.nats_internals reads private attributes of nats-py: this fails the day nats-py changes them."""

from __future__ import annotations

import inspect

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.micro.request import Request

from framework import nats_internals


def test_a_micro_request_still_keeps_its_message() -> None:
    msg = Msg(_client=Client(), subject="s", reply="_INBOX.x.1", data=b"d", headers={"h": "v"})
    req = Request(msg)
    assert nats_internals.request_message(req) is msg
    assert nats_internals.request_message(req).reply == "_INBOX.x.1"


def test_the_client_still_keeps_the_server_info() -> None:
    nc = Client()
    assert nats_internals.server_info(nc) == {}
    nc._server_info = {"connect_urls": ["a:4222"]}
    assert nats_internals.server_info(nc)["connect_urls"] == ["a:4222"]
    assert "_server_info" in inspect.getsource(Client._process_info)


def test_a_key_value_handle_still_keeps_its_stream_and_prefix() -> None:
    bound = nats_internals.ListedKeyValue(name="B", stream="KV_B", pre="$KV.B.", js=None, direct=True)  # type: ignore[arg-type]
    assert (bound._name, bound._stream, bound._pre, bound._js, bound._direct) == ("B", "KV_B", "$KV.B.", None, True)
    assert "subjects_filter" in inspect.signature(JetStreamContext.stream_info).parameters
