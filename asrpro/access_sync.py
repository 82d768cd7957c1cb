"""Users and API keys cluster-wide: each host keeps them in files (the applications' NATS users in
`<store_dir>/users.json`, rendered into its nats-server's configuration; the gateway's `gateway.api_keys_file`), and
on a cluster every host's supervisor mirrors them through the KV bucket ASR_ACCESS, which only the `admin` user may
read. A change made on one host (`asrpro users add`, `asrpro keys add`) is put there; the others write it into
their files and reload their nats-server. The bucket is the cluster's word: a host that starts takes it over its own
files; a host that finds it empty puts its own. Two changes on two hosts within one round: the later one wins.

The supervisor runs it in a thread of its own on one long-lived admin connection (nats-py reconnects it across
nats-server restarts); it is not an actor because it writes this host's files and reloads this host's nats-server,
which only the supervisor that started that server can do (an actor would need the admin user and the server's
process: more rights than any actor has)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, NotFoundError

from framework.nats_internals import ListedKeyValue
from framework.private_files import write_private
from framework.transport import KeyValueStore
from schemas import subjects

log = logging.getLogger("asrpro.cluster")
BUCKET = subjects.ACCESS_BUCKET


async def access_bucket(nc: Client, replicas: int = 1) -> KeyValueStore:
    js = nc.jetstream()
    try:
        return await ListedKeyValue.bind(js, BUCKET)
    except (NotFoundError, Exception):
        config = KeyValueConfig(
            bucket=BUCKET,
            description="applications' NATS users and HTTP API keys, mirrored to every host (admin only)",
            history=1,
            storage=StorageType.FILE,
            replicas=replicas,
        )
        await js.create_key_value(config)
        return await ListedKeyValue.bind(js, BUCKET)


@dataclass
class Mirrored:
    """One file mirrored through one key; `changed` runs after the file was rewritten from the bucket."""

    key: str
    path: Path
    changed: Callable[[], None] = lambda: None
    synced: bytes | None = None  # the content both sides had at the last round

    def local(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""


@dataclass
class AccessSync:
    files: list[Mirrored] = field(default_factory=list)

    async def round(self, kv: KeyValueStore) -> list[str]:
        """One round: what changed here goes to the bucket, what changed there comes here. The keys it wrote
        into local files."""
        pulled: list[str] = []
        for item in self.files:
            local = item.local()
            try:
                remote: bytes | None = (await kv.get(item.key)).value or b""
            except KeyNotFoundError:
                remote = None
            if remote is None or (item.synced is not None and local != item.synced and remote == item.synced):
                if remote != local:
                    await kv.put(item.key, local)
                    log.info("%s changed here: mirrored to the cluster", item.path)
                item.synced = local
            elif remote != local:
                if remote:
                    write_private(item.path, remote)
                else:
                    item.path.unlink(missing_ok=True)
                item.synced = remote
                pulled.append(item.key)
                log.info("%s changed on another host: taken over", item.path)
                item.changed()
            else:
                item.synced = local
        return pulled
