"""API key logic: the keys file's format, which route needs which scope, and when a gateway may run open."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx
import msgspec
import pytest
from starlette.types import Receive, Scope, Send

from framework.config import Config, ConfigError, GatewayConfig
from framework.logs import redact
from gateway import client_secrets
from gateway.auth import ApiKeys, KeyRing, check_exposure, digest, needed_scope, parse_keys_file, write_key_line


def test_keys_file_lines_and_errors() -> None:
    line = f"sha256:{digest('k1')} admin"
    assert parse_keys_file(f"# comment\n\n{line}\n", "f") == [(digest("k1"), "admin")]
    with pytest.raises(ConfigError, match="f:1"):
        parse_keys_file("k1 admin", "f")
    with pytest.raises(ConfigError):
        parse_keys_file(f"sha256:{digest('k1')} root", "f")


def test_scopes_of_routes() -> None:
    assert needed_scope("GET", "/health") is None
    assert needed_scope("OPTIONS", "/v1/audio/transcriptions") is None
    assert needed_scope("POST", "/v1/audio/transcriptions") == "transcribe"
    assert needed_scope("GET", "/v1/events") == "transcribe"
    assert needed_scope("GET", "/api/ps") == "admin"
    assert needed_scope("DELETE", "/api/ps/x") == "admin"
    assert needed_scope("POST", "/v1/settings/model") == "admin"


def test_key_ring_reads_file_changes_and_keeps_old_keys_on_a_broken_edit(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    ring = KeyRing(GatewayConfig(api_keys=["plain"], api_keys_file=str(keys_file)))
    assert ring.scope_of("plain") == "transcribe" and ring.scope_of("other") is None
    write_key_line(keys_file, "boss", "admin")
    ring.refresh()
    assert ring.scope_of("boss") == "admin"
    keys_file.write_text("garbage that is longer than before\n")
    ring.refresh()
    assert ring.scope_of("boss") == "admin"


def test_open_gateway_only_on_loopback_or_when_allowed(tmp_path: Path) -> None:
    def config(**gateway: object) -> Config:
        return msgspec.convert({"gateway": {"api_keys_file": str(tmp_path / "none"), **gateway}}, Config)

    assert "only this machine" in check_exposure(config(host="127.0.0.1"))
    assert "only this machine" in check_exposure(config(host="::1"))
    with pytest.raises(ConfigError, match="allow_unauthenticated"):
        check_exposure(config(host="0.0.0.0"))
    assert "trusted" in check_exposure(config(host="0.0.0.0", allow_unauthenticated=True))
    assert "required" in check_exposure(config(host="0.0.0.0", api_keys=["k"]))


def test_tokens_in_urls_are_redacted() -> None:
    assert redact("GET /ws?token=s3cret&x=1") == "GET /ws?token=[redacted]&x=1"
    assert redact('"url": "/v1/events?since=0&token=abc"') == '"url": "/v1/events?since=0&token=[redacted]"'


async def test_revoking_the_last_key_closes_the_gateway_it_does_not_open_it(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    write_key_line(keys_file, "only-key", "admin")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = ApiKeys(app, KeyRing(GatewayConfig(api_keys_file=str(keys_file))))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://t") as http:
        assert (await http.get("/api/ps", headers={"Authorization": "Bearer only-key"})).status_code == 200
        keys_file.write_text("")
        os.utime(keys_file, ns=(1, 1))  # a different stamp even within the file system's time resolution
        assert (await http.get("/api/ps", headers={"Authorization": "Bearer only-key"})).status_code == 401
        assert (await http.get("/api/ps")).status_code == 401
        assert (await http.get("/health")).status_code == 200


def test_a_client_secret_is_verified_by_its_key_and_expires() -> None:
    mine, other = digest("app-key-a"), digest("app-key-b")
    server = b"gateways-secret"
    secret, expires_at = client_secrets.mint(mine, {"audio": {"input": {"turn_detection": None}}}, 60, server, 1000.0)
    assert expires_at == 1060 and mine not in secret
    granted = client_secrets.verify(secret, [other, mine], server, now=1059.0)
    assert granted is not None and granted.key_digest == mine
    assert granted.session == {"audio": {"input": {"turn_detection": None}}}
    assert client_secrets.verify(secret, [other, mine], server, now=1060.0) is None  # expired
    assert client_secrets.verify(secret, [other], server, now=1000.0) is None  # its key revoked
    # The keys file alone (the digests) cannot mint one: the gateways' own secret signs it too.
    assert client_secrets.verify(secret, [mine], b"another-gateway", now=1000.0) is None
    payload, signature = secret.split(".")
    odd = [b'{"k":"\xc3\xa9","e":2000,"s":{}}', b'{"k":"x","e":1e400,"s":{}}', b'{"k":"x","e":"soon","s":{}}']
    odd += [b'{"k":"x","e":2000,"s":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"not json", b'{"e":2000}']
    # Odd payloads even when signed (as only a gateway could): refused, never an exception.
    encoded = [base64.urlsafe_b64encode(body).decode().rstrip("=") for body in odd]
    forged = [f"ek_{p}.{client_secrets._sign(server, mine, p)}" for p in encoded]
    forged += [payload + "." + signature[:-1] + "A", payload[:-1] + "." + signature, "ek_x", "ek_a.b.c", "sk-1"]
    forged += [secret + "\u00e9", "ek_\u00e9." + signature]
    for bad in forged:
        assert client_secrets.verify(bad, [mine], server, now=1000.0) is None, bad
