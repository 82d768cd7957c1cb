"""Routes and clients over TLS: three real nats-servers configured the way `asrpro up --cluster-port/--join`
configures them (asrpro.nats_cluster.server_part) with certificates from `asrpro certs`. They form one JetStream
cluster (a three-replica bucket written through one server is read through another); a client that does not trust
the CA is refused; a server without TLS on its routes is not let into the cluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import KeyValueConfig

from actors.lifecycle.runtimes.local import free_port
from asrpro import nats_cluster
from asrpro.nats_server import CLUSTER_PART, USERS, NatsServer, new_password
from framework import bus
from framework.config import Config, load_config
from framework.nats_internals import server_info
from framework.private_files import write_private
from tests.conftest import REPO

NAMES = ("tls-a", "tls-b", "tls-c")


def host_config(name: str, ports: dict[str, int], store: Path, tls: Path | None) -> Config:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    environ.update({"ASRPRO_NODE__NAME": name, "ASRPRO_CLUSTER__PORT": str(ports[name])})
    environ["ASRPRO_NATS__STORE_DIR"] = str(store)
    if name != NAMES[0]:
        environ["ASRPRO_CLUSTER__ROUTES"] = json.dumps([f"nats-route://127.0.0.1:{ports[NAMES[0]]}"])
    if tls is not None:
        for section in ("CLUSTER", "NATS"):
            environ[f"ASRPRO_{section}__TLS_CERT"] = str(tls / "server.pem")
            environ[f"ASRPRO_{section}__TLS_KEY"] = str(tls / "server.key")
        environ["ASRPRO_CLUSTER__TLS_CA"] = str(tls / "ca.pem")
        environ["ASRPRO_NATS__TLS_CA"] = str(tls / "ca.pem")
    return load_config(REPO / "asrpro.toml", environ=environ)


def start(config: Config, passwords: dict[str, str]) -> NatsServer:
    store = Path(config.nats.store_dir)
    store.mkdir(parents=True, exist_ok=True)
    write_private(store / CLUSTER_PART, nats_cluster.server_part(config, passwords["route"]).encode())
    server = NatsServer(str(REPO / "nats.conf"), str(store), passwords, port=-1)
    server.start()
    return server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls")
    done = subprocess.run(
        [sys.executable, "-m", "asrpro.cli", "certs", "127.0.0.1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} >= {"ca.pem", "ca.key", "server.pem", "server.key"}
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[tuple[list[NatsServer], dict[str, str]]]:
    passwords = {user: new_password() for user in USERS}
    ports = {name: free_port() for name in NAMES}
    base = tmp_path_factory.mktemp("tls-cluster")
    started = [start(host_config(name, ports, base / name, certs), passwords) for name in NAMES]
    yield started, passwords | {"_route_port_a": str(ports[NAMES[0]])}
    for server in started:
        server.stop()


async def test_three_servers_form_one_jetstream_cluster_over_tls(servers, certs: Path) -> None:
    started, passwords = servers
    ca = str(certs / "ca.pem")
    first = await bus.connect(started[0].url, name="t", user="admin", password=passwords["admin"], tls_ca=ca)
    last = await bus.connect(started[2].url, name="t", user="admin", password=passwords["admin"], tls_ca=ca)
    try:
        for _ in range(120):  # the cluster's JetStream answers once its servers found each other
            try:
                kv = await first.jetstream().create_key_value(KeyValueConfig(bucket="TLS_CHECK", replicas=3))
                break
            except Exception:
                await asyncio.sleep(0.5)
        else:
            raise AssertionError("no JetStream cluster formed over TLS routes")
        await kv.put("k", b"over tls")
        seen = await last.jetstream().key_value("TLS_CHECK")
        assert (await seen.get("k")).value == b"over tls"
        assert server_info(first).get("tls_required") is True
        # Once the cluster formed, a new client is told of all three servers (each on its own loopback port).
        fresh = await bus.connect(started[0].url, name="t", user="admin", password=passwords["admin"], tls_ca=ca)
        try:
            assert len(server_info(fresh).get("connect_urls") or []) == len(started)
        finally:
            await fresh.close()
    finally:
        await first.close()
        await last.close()


async def test_a_client_that_does_not_trust_the_ca_is_refused(servers) -> None:
    started, passwords = servers
    refused: list[Exception] = []

    async def record(exc: Exception) -> None:
        refused.append(exc)

    with pytest.raises(Exception):  # noqa: B017 -- nats-py raises the SSL error or its own "no servers"
        await asyncio.wait_for(
            nats.connect(
                started[0].url,
                user="admin",
                password=passwords["admin"],
                allow_reconnect=False,
                connect_timeout=3,
                error_cb=record,
            ),
            15,
        )
    assert any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in refused), refused


async def test_a_server_without_tls_on_its_routes_does_not_join(servers, tmp_path: Path, certs: Path) -> None:
    started, passwords = servers
    ports = {NAMES[0]: int(passwords["_route_port_a"]), "plain-d": free_port()}
    config = host_config("plain-d", ports, tmp_path / "plain-d", None)
    config.cluster.routes = [f"nats-route://127.0.0.1:{ports[NAMES[0]]}"]
    intruder = start(config, passwords)
    try:
        await asyncio.sleep(3)
        ca = str(certs / "ca.pem")
        nc = await bus.connect(started[0].url, name="t", user="admin", password=passwords["admin"], tls_ca=ca)
        try:
            urls = server_info(nc).get("connect_urls") or []
            assert intruder.url.rsplit("//", 1)[-1] not in urls, urls
        finally:
            await nc.close()
        log = (Path(config.nats.store_dir) / "nats-server.log").read_text()
        # The TLS server refused the intruder's plain-text route: its own log says so (not just any line with "tls").
        log = (Path(started[0].store_dir) / "nats-server.log").read_text()
        assert "TLS route handshake error" in log and "Router connection closed: TLS Handshake Failure" in log
    finally:
        intruder.stop()
