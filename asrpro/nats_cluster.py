"""Several hosts on one NATS cluster: the route block of each host's nats-server, the credentials file the first
host writes for the others (`asrpro up --join ... --credentials FILE`), and replicas raised as servers join.

NATS does the clustering (routes, JetStream's Raft groups); this module only configures it:
- every host's nats-server listens for routes on `cluster.port`, authenticated with the `route` user's password,
  and names itself after its node (JetStream needs unique server names);
- the first host lists itself as its route (JetStream refuses a cluster without routes) and waits for a second
  server before JetStream answers (a Raft group needs a quorum: plan on three hosts to survive losing one);
- streams, KV buckets and the object store get min(cluster.max_replicas, servers) replicas, raised (never
  lowered) by `raise_replicas` as servers join."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from nats.aio.client import Client

from asrpro.nats_users import AppUser, UserStore
from framework.config import Config, node_name
from framework.nats_internals import ListedKeyValue, server_info
from framework.private_files import write_private
from schemas import kv as kv_records
from schemas import subjects

log = logging.getLogger("asrpro.cluster")
ROUTE_USER = "route"
BUNDLE = "cluster.json"
_ROUTE_URL = re.compile(r"nats-route://[A-Za-z0-9.\-\[\]:]+:\d+")


@dataclass
class Bundle:
    """What a joining host needs: the cluster's name, every NATS user's password (actors, the route user, the
    applications) — the same users everywhere, so that any host's server accepts any actor or application."""

    cluster: str
    passwords: dict[str, str]
    apps: list[dict[str, str]] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> Bundle:
        try:
            data = json.loads(Path(path).read_text())
            return cls(
                cluster=str(data["cluster"]),
                passwords={str(k): str(v) for k, v in data["passwords"].items()},
                apps=list(data.get("apps", [])),
                routes=[str(r) for r in data.get("routes", [])],
            )
        except FileNotFoundError:
            raise ValueError(f"cluster credentials file {path} not found (the first host writes it)") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a cluster credentials file: {exc}") from None

    def write(self, path: Path) -> None:
        body = {"cluster": self.cluster, "passwords": self.passwords, "apps": self.apps, "routes": self.routes}
        write_private(path, json.dumps(body, indent=2).encode())


def bundle_path(config: Config) -> Path:
    return Path(config.nats.store_dir) / BUNDLE


def check_routes(routes: list[str]) -> None:
    for route in routes:
        if not _ROUTE_URL.fullmatch(route):
            raise ValueError(f"--join takes nats-route://HOST:PORT (credentials come from the file), not {route!r}")


def adopt_bundle(config: Config, bundle: Bundle) -> None:
    """A joining host takes the cluster's application users: its server must accept the same applications."""
    joined = [AppUser(**app) for app in bundle.apps]  # type: ignore[arg-type]
    store = UserStore(config.nats.store_dir)
    names = {j.name for j in joined}
    store.save([*(a for a in store.load() if a.name not in names), *joined])
    log.info("took %d application user(s) from the cluster credentials", len(joined))


def write_bundle(config: Config, passwords: dict[str, str]) -> Path:
    """The file the other hosts join with: written 0600 beside the server's configuration."""
    apps = [{"name": a.name, "scope": a.scope, "password": a.password} for a in UserStore(config.nats.store_dir).load()]
    own = f"nats-route://{advertised(config)}:{config.cluster.port}"
    path = bundle_path(config)
    Bundle(config.cluster.name, passwords, apps, [own, *config.cluster.routes]).write(path)
    return path


def advertised(config: Config) -> str:
    host = config.cluster.host
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def route_block(config: Config, route_password: str) -> str:
    """The nats-server configuration of this host's place in the cluster (appended to the rendered config)."""
    cluster = config.cluster
    own = f"nats-route://{ROUTE_USER}:{route_password}@{advertised(config)}:{cluster.port}"
    routes = [own]
    for route in cluster.routes:
        parts = urlsplit(route)
        routes.append(f"nats-route://{ROUTE_USER}:{route_password}@{parts.hostname}:{parts.port}")
    quoted = ", ".join(json.dumps(r) for r in routes)
    tls = tls_block(cluster.tls_cert, cluster.tls_key, cluster.tls_ca, indent="  ")
    return (
        "\n# This host's place in the cluster (asrpro/nats_cluster.py).\n"
        f"server_name: {json.dumps(node_name(config))}\n"
        "cluster {\n"
        f"  name: {json.dumps(cluster.name)}\n"
        f"  listen: {json.dumps(f'{cluster.host}:{cluster.port}')}\n"
        f"  authorization {{ user: {ROUTE_USER}, password: {json.dumps(route_password)} }}\n"
        f"  routes: [{quoted}]\n"
        f"{tls}"
        "}\n"
    )


def tls_block(cert: str, key: str, ca: str, *, indent: str = "") -> str:
    """nats-server's tls { } for these PEM files, verifying the peer's certificate against `ca`; '' without."""
    if not (cert and key):
        return ""
    lines = [f"cert_file: {json.dumps(str(Path(cert).resolve()))}", f"key_file: {json.dumps(str(Path(key).resolve()))}"]
    if ca:
        lines += [f"ca_file: {json.dumps(str(Path(ca).resolve()))}", "timeout: 5"]
    body = "".join(f"{indent}  {line}\n" for line in lines)
    return f"{indent}tls {{\n{body}{indent}}}\n"


def server_part(config: Config, route_password: str) -> str:
    """What `asrpro up` adds to the rendered configuration: TLS for clients, this host's place in a cluster."""
    part = ""
    if config.nats.tls_cert and config.nats.tls_key:
        part += "\n# TLS for every client (nats.tls_cert / tls_key).\n"
        part += tls_block(config.nats.tls_cert, config.nats.tls_key, "")
    if config.cluster.port:
        part += route_block(config, route_password)
    return part


STREAMS = (
    subjects.EVENTS_STREAM,
    subjects.JOBS_STREAM,
    subjects.JOBS_WEBHOOK_STREAM,
    *dict.fromkeys(record.stream for record in kv_records.ALL),
    *("OBJ_" + subjects.audio_bucket(owner) for owner in subjects.AUDIO_SENDERS),
    "KV_" + subjects.ACCESS_BUCKET,  # asrpro.access_sync
)


async def cluster_size(nc: Client, dead_after: float) -> int:
    """Servers in the cluster: the live nodes (each host runs one server beside its node), or the client URLs the
    server we are connected to told us of when we connected, if more (nats-py keeps the first INFO: ask with a
    fresh connection). The URLs alone undercount: hosts whose clients all listen on 127.0.0.1:4222 share one."""
    urls = len(server_info(nc).get("connect_urls") or [])
    nodes = 0
    try:
        kv = await ListedKeyValue.bind(nc.jetstream(), kv_records.NODE.bucket)
        now = time.time()
        for entry in await kv.current():
            if entry.value and now - kv_records.NODE.decode(entry.value).heartbeat_at < dead_after:
                nodes += 1
    except Exception:  # no node yet, or JetStream busy: the URLs say what they can
        pass
    return max(1, urls, nodes)


async def raise_replicas(nc: Client, limit: int, dead_after: float = 20.0) -> dict[str, int]:
    """Every stream and bucket of ours with fewer replicas than min(limit, servers) gets that many; streams
    already there are left alone (never lowered: a server down for a moment must not shrink them)."""
    want = min(limit, await cluster_size(nc, dead_after))
    js = nc.jetstream()
    raised: dict[str, int] = {}
    for name in STREAMS:
        try:
            info = await js.stream_info(name)
        except Exception:  # not made yet, or JetStream busy electing: the next round looks again
            continue
        if (info.config.num_replicas or 1) >= want:
            continue
        info.config.num_replicas = want
        try:
            await js.update_stream(info.config)
            raised[name] = want
            log.info("stream %s now has %d replicas", name, want)
        except Exception as exc:
            log.warning("could not raise the replicas of %s to %d: %s", name, want, exc)
    return raised
