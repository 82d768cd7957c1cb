"""`asrpro up`: nats-server, every actor as its own process, and the gateway; restarts what exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from nats.aio.client import Client

from asrpro import nats_cluster
from asrpro.access_sync import AccessSync, Mirrored, access_bucket
from asrpro.bootstrap import ensure_jetstream
from asrpro.nats_server import CLUSTER_PART, NatsServer, generate_passwords, password_env
from asrpro.nats_users import UserStore
from framework import bus
from framework.config import Config, node_name
from framework.private_files import write_private
from framework.processes import die_with_parent, terminate

log = logging.getLogger("asrpro.supervisor")

# Start order; shutdown runs in reverse so the gateway stops taking work first
# and lifecycle still reaches registry/gpu while it stops its model servers.
ACTORS = ("registry", "gpu", "metrics", "lifecycle", "recovery", "proxy", "jobs", "live")
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_AFTER_S = 60.0
# A clustered JetStream answers once a quorum of servers formed: the first host waits for the second this long.
JETSTREAM_WAIT_S = 600.0
REPLICAS_CHECK_S = 10.0
ACCESS_SYNC_S = 3.0


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0

    def start(self) -> None:
        # Own session: a terminal's Ctrl-C reaches only the supervisor, which then stops children in order.
        self.proc = subprocess.Popen(self.cmd, env=self.env, start_new_session=True, preexec_fn=die_with_parent)
        self.started = time.monotonic()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)


def credentials_file(config: Config) -> Path:
    return Path(config.nats.store_dir) / "credentials.json"


def load_credentials(config: Config) -> dict[str, str]:
    path = credentials_file(config)
    with contextlib.suppress(FileNotFoundError, ValueError):
        return dict(json.loads(path.read_text()))
    return {}


class Supervisor:
    def __init__(
        self, config: Config, config_path: str | None = None, *, joining: nats_cluster.Bundle | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.nats: NatsServer | None = None
        self.children: list[Child] = []
        self.stopping = False
        self.joining = joining  # the cluster credentials of `asrpro up --join`
        if joining is not None:
            # The cluster's passwords become this host's own (an explicit ASRPRO_NATS_PW_* still wins).
            write_private(credentials_file(config), json.dumps(joining.passwords).encode())
            nats_cluster.adopt_bundle(config, joining)
            config.cluster.name = joining.cluster

    @property
    def clustered(self) -> bool:
        return bool(self.config.cluster.port)

    def _write_cluster_part(self, passwords: dict[str, str]) -> None:
        part = Path(self.config.nats.store_dir) / CLUSTER_PART
        text = nats_cluster.server_part(self.config, passwords["route"])
        if text:
            write_private(part, text.encode())
        else:
            part.unlink(missing_ok=True)

    def _passwords(self) -> dict[str, str]:
        environ = dict(os.environ)
        for user, pw in load_credentials(self.config).items():
            environ.setdefault(password_env(user), pw)
        passwords = generate_passwords(environ, self.config.nats.client_password)
        path = credentials_file(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(passwords))
        return passwords

    def _child_env(self, user: str, url: str, password: str) -> dict[str, str]:
        env = dict(os.environ, ASRPRO_NATS__URL=url, ASRPRO_NATS__USER=user, ASRPRO_NATS__PASSWORD=password)
        env = {k: v for k, v in env.items() if not k.startswith("ASRPRO_NATS_PW_")}
        if self.config_path:
            env["ASRPRO_CONFIG"] = str(Path(self.config_path).resolve())
        return env

    def start(self) -> None:
        from gateway.auth import check_exposure

        log.info("gateway access: %s", check_exposure(self.config))  # an open gateway refuses before anything starts
        from asrpro import doctor

        # The same facts as `asrpro doctor`, in the log (ports: ours are about to be taken).
        for check in doctor.collect(self.config, ports=False):
            log.info("doctor: %s: %s", check.name, check.detail, extra={"check": check.name, "ok": check.ok})
        passwords = self._passwords()
        url = self.config.nats.url
        if self.config.nats.embedded:
            self._write_cluster_part(passwords)
            parts = urlsplit(url)
            self.nats = NatsServer(
                self.config.nats.config_file,
                str(Path(self.config.nats.store_dir).resolve()),
                passwords,
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 4222,
            )
            url = self.nats.start()
            log.info("nats-server listening on %s", url)
        bundle = None
        if self.clustered:
            # Before JetStream answers: the first host's waits for a second server, which joins with this file.
            bundle = nats_cluster.write_bundle(self.config, passwords)
            log.info("cluster credentials for joining hosts: %s", bundle.resolve())
        asyncio.run(self._bootstrap(url, passwords["admin"]))
        if self.clustered:
            threading.Thread(target=self._upkeep, args=(url, passwords["admin"]), daemon=True).start()
        python = [sys.executable, "-m", "asrpro.cli"]
        for name in ACTORS:
            self.children.append(Child(name, [*python, "actor", name], self._child_env(name, url, passwords[name])))
        self.children.append(
            Child("gateway", [*python, "gateway"], self._child_env("gateway", url, passwords["gateway"]))
        )
        for child in self.children:
            child.start()
        gateway = f"http://{self.config.gateway.host}:{self.config.gateway.port}"
        self._wait_gateway(gateway)
        print(
            json.dumps(
                {
                    "status": "ready",
                    "gateway": gateway,
                    "nats": url,
                    "nats_client_user": "client",
                    "credentials_file": str(credentials_file(self.config).resolve()),
                    "node": node_name(self.config),
                }
                | ({"cluster_credentials": str(bundle.resolve())} if bundle else {})
            ),
            flush=True,
        )

    async def _bootstrap(self, url: str, admin_password: str) -> None:
        nc = await bus.connect(
            url, name="asrpro-bootstrap", user="admin", password=admin_password, tls_ca=self.config.nats.tls_ca
        )
        deadline = time.monotonic() + (JETSTREAM_WAIT_S if self.clustered else 0.0)
        try:
            while True:
                try:
                    await ensure_jetstream(nc, self.config)
                    return
                except Exception as exc:
                    if time.monotonic() > deadline or self.stopping:
                        raise RuntimeError(f"JetStream is not available: {exc!r}") from exc
                    # A cluster's JetStream answers once a quorum of its servers found each other.
                    log.info("waiting for the cluster's JetStream (other hosts joining?): %r", exc)
                    await asyncio.sleep(2.0)
        finally:
            await nc.close()

    def _upkeep(self, url: str, admin_password: str) -> None:
        """On a cluster: users and API keys mirrored between the hosts (asrpro.access_sync) every ACCESS_SYNC_S,
        replicas raised as servers join (asrpro.nats_cluster.raise_replicas) every REPLICAS_CHECK_S."""
        asyncio.run(self._upkeep_rounds(url, admin_password))

    async def _upkeep_rounds(self, url: str, admin_password: str) -> None:
        sync = AccessSync(
            [
                Mirrored("users", UserStore(self.config.nats.store_dir).path, self._users_changed),
                Mirrored("api_keys", Path(self.config.gateway.api_keys_file)),  # the gateway re-reads it itself
            ]
        )
        last_replicas = 0.0
        nc: Client | None = None  # one connection for every round: once made, nats-py reconnects it by itself
        try:
            while not self.stopping:
                try:
                    if nc is None or nc.is_closed:
                        tls = self.config.nats.tls_ca
                        nc = await bus.connect(
                            url, name="asrpro-upkeep", user="admin", password=admin_password, tls_ca=tls
                        )
                    await sync.round(await access_bucket(nc))
                    if time.monotonic() - last_replicas >= REPLICAS_CHECK_S:
                        last_replicas = time.monotonic()
                        await nats_cluster.raise_replicas(
                            nc, self.config.cluster.max_replicas, self.config.node.dead_after
                        )
                except Exception as exc:  # the bus is restarting: the next round tries again
                    log.info("cluster upkeep failed: %s", exc)
                await asyncio.sleep(ACCESS_SYNC_S)
        finally:
            if nc is not None:
                await nc.close()

    def _users_changed(self) -> None:
        """Applications added or removed on another host: this host's server takes them (connections stay)."""
        if self.nats is not None and not self.nats.exited:
            self.nats.reload()

    def _wait_gateway(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=1.0).status_code < 500:
                    return
            time.sleep(0.2)
        log.warning("gateway did not answer on %s within %g s", url, timeout)

    def watch(self) -> None:
        """Restart children that exit, with back-off, until asked to stop."""
        while not self.stopping:
            now = time.monotonic()
            if self.nats is not None and self.nats.exited:
                # Same port, same JetStream directory: clients reconnect and find their streams and buckets.
                log.warning(
                    "nats-server exited with code %s: restarting it", self.nats.proc and self.nats.proc.returncode
                )
                try:
                    self.nats.start()
                except RuntimeError as exc:
                    log.error("nats-server did not restart: %s", exc)
                    time.sleep(1.0)
            for child in self.children:
                if child.proc is None or child.proc.poll() is None:
                    if child.proc is None and now >= child.next_start:
                        child.start()
                    continue
                code = child.proc.returncode
                if now - child.started > STABLE_AFTER_S:
                    child.restarts = 0
                delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                log.warning("%s exited with code %s: restarting in %.1f s", child.name, code, delay)
                child.restarts += 1
                child.proc = None
                child.next_start = now + delay
            time.sleep(0.2)

    def shutdown(self) -> None:
        self.stopping = True
        for child in reversed(self.children):
            child.stop()
        if self.nats is not None:
            self.nats.stop()
        log.info("all stopped")

    def run(self) -> int:
        def on_signal(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            self.watch()
        finally:
            self.shutdown()
        return 0
