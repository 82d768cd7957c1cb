"""Webhook signing against Standard Webhooks' published example, and the address checks that keep webhooks from
reaching inside the network, including at connection time (a name that resolved to a public address at submission
and to loopback later: DNS rebinding)."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from actors.jobs import webhooks


def test_the_signature_matches_the_standard_webhooks_example() -> None:
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert webhooks.signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_each_application_has_its_own_secret() -> None:
    a, b = webhooks.owner_secret(b"s" * 32, "key-a"), webhooks.owner_secret(b"s" * 32, "key-b")
    assert a != b and len(a) == 32
    assert webhooks.shown_secret(a).startswith("whsec_")
    assert base64.b64decode(webhooks.shown_secret(a).removeprefix("whsec_")) == a


@pytest.mark.parametrize(
    ("host", "address", "allowed", "ok"),
    [
        ("hooks.example.com", "93.184.216.34", ["*"], True),
        ("hooks.example.com", "127.0.0.1", ["*"], False),
        ("hooks.example.com", "10.1.2.3", ["*"], False),
        ("hooks.example.com", "169.254.169.254", ["*"], False),
        ("hooks.example.com", "fd00::1", ["*"], False),
        ("hooks.example.com", "93.184.216.34", ["other.example.com"], False),  # a list without * limits
        ("hooks.internal", "10.1.2.3", ["hooks.internal"], True),  # a listed name may be private
        ("a.hooks.internal", "10.1.2.3", ["*.hooks.internal"], True),
        ("x", "10.1.2.3", ["10.0.0.0/8"], True),
        ("x", "10.1.2.3", ["192.168.0.0/16"], False),
        ("x", "224.0.0.1", ["*"], False),
    ],
)
def test_addresses(host: str, address: str, allowed: list[str], ok: bool) -> None:
    ip = ipaddress.ip_address(address)
    if ok:
        webhooks.check_address(host, ip, allowed)
    else:
        with pytest.raises(webhooks.Refused):
            webhooks.check_address(host, ip, allowed)


async def test_the_connection_itself_is_checked() -> None:
    """A URL accepted earlier whose name now resolves to loopback is not connected to."""
    sender = webhooks.Sender(["*"])
    try:
        with pytest.raises(webhooks.Refused):
            await sender.post("http://localhost:9/hook", b"k", "msg_1", b"{}")
    finally:
        await sender.close()
