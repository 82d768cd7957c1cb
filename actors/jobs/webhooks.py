"""Webhooks: when a job ends, its final record is POSTed to the URL given at submission, signed per the Standard
Webhooks convention (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp`, `webhook-signature`
= `v1,` + base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` with the application's secret.

Destinations are a server-side request forgery risk (a URL naming 169.254.169.254, localhost or a private address
makes this service send requests inside the network it runs in), so a URL's host is resolved and every address
checked against `jobs.webhook_allowed_hosts` at submission, and again at every connection: the connection goes to
the address checked, never to a second resolution an attacker's DNS could change (rebinding). Redirects are not
followed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore

from schemas import errors
from schemas.errors import AsrError

SECRET_PREFIX = "whsec_"
POST_TIMEOUT_S = 15.0  # one delivery attempt, connection to last byte of the answer
ANY_PUBLIC = "*"  # in webhook_allowed_hosts: any host whose addresses are all public
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(ValueError):
    """A destination this service will not send to; the message says why."""


def owner_secret(server_secret: bytes, owner: str) -> bytes:
    """An application's signing key: derived from the service's secret, so that none is stored per application
    and every node of a cluster signs alike."""
    return hmac.new(server_secret, b"webhook-secret:" + owner.encode(), hashlib.sha256).digest()


def shown_secret(key: bytes) -> str:
    """As Standard Webhooks libraries take it: `whsec_` + base64 of the key."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(key: bytes, webhook_id: str, body: bytes, now: float | None = None) -> list[tuple[bytes, bytes]]:
    timestamp = int(now if now is not None else time.time())
    return [
        (b"content-type", b"application/json"),
        (b"user-agent", b"asrpro-webhooks/1"),
        (b"webhook-id", webhook_id.encode()),
        (b"webhook-timestamp", str(timestamp).encode()),
        (b"webhook-signature", signature(key, webhook_id, timestamp, body).encode()),
    ]


def _listed(host: str, address: Address | None, allowed: Iterable[str]) -> bool:
    for entry in allowed:
        if entry == ANY_PUBLIC:
            continue
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
        if entry.lower() == host.lower():
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:  # a host name, not a network
                continue
    return False


def check_address(host: str, address: Address, allowed: list[str]) -> None:
    """Refused unless the host or the address is listed, or `*` is listed and the address is public."""
    if _listed(host, address, allowed):
        return
    if ANY_PUBLIC in allowed and address.is_global and not address.is_multicast:
        return
    why = "a loopback, private or reserved address" if not address.is_global else "not in jobs.webhook_allowed_hosts"
    raise Refused(f"{host} resolves to {address}: {why}")


async def resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"{host} does not resolve: {exc}") from exc
    addresses = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        # An IPv4-mapped IPv6 address is checked as the IPv4 address it reaches.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        addresses.append(address)
    return addresses


def parse(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; Refused for anything else."""
    if len(url) > 2048:
        raise Refused("it is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"it is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise Refused("only http:// and https:// URLs are called")
    if not parts.hostname:
        raise Refused("it names no host")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not sent: use the signature to authenticate us")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def check_url(url: str, allowed: list[str]) -> None:
    """400 (param webhook_url) when this service would not call `url`: checked before a job is accepted."""
    try:
        host, port = parse(url)
        addresses = await resolve(host, port)
        if not addresses:
            raise Refused(f"{host} has no address")
        for address in addresses:
            check_address(host, address, allowed)
    except Refused as exc:
        raise AsrError(errors.BAD_REQUEST, f"webhook_url refused: {exc}", param="webhook_url") from exc


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses check_address allows, resolved once here (TLS still names the host)."""

    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        for address in addresses:
            check_address(host, address, self.allowed)
        if not addresses:
            raise Refused(f"{host} has no address")
        return await self.inner.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise Refused("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class Sender:
    """POSTs signed bodies through one guarded connection pool (no proxies from the environment either)."""

    def __init__(self, allowed: list[str]) -> None:
        self.pool = httpcore.AsyncConnectionPool(network_backend=_GuardedBackend(allowed), max_connections=20)

    async def post(self, url: str, key: bytes, webhook_id: str, body: bytes) -> int:
        """The answer's status; Refused or an httpcore error when there was none."""
        timeouts = {"connect": POST_TIMEOUT_S, "read": POST_TIMEOUT_S, "write": POST_TIMEOUT_S, "pool": POST_TIMEOUT_S}
        with anyio.fail_after(POST_TIMEOUT_S * 2):
            response = await self.pool.request(
                "POST", url, headers=headers(key, webhook_id, body), content=body, extensions={"timeout": timeouts}
            )
        return response.status

    async def close(self) -> None:
        await self.pool.aclose()
