"""Users and API keys mirrored between hosts through one KV bucket (asrpro.access_sync), on the in-memory KV:
the first host fills an empty bucket, a host that starts takes the bucket's word over its files, a change here
goes there and one there comes here (written private, its hook run), an emptied record removes the file."""

from __future__ import annotations

import stat
from pathlib import Path

from asrpro.access_sync import AccessSync, Mirrored
from framework.memory_store import MemoryKv
from schemas import subjects


class Host:
    """One host's two mirrored files, and how often it had to reload its nats-server."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.users, self.keys = root / "users.json", root / "api_keys.json"
        self.reloads = 0
        self.sync = AccessSync([Mirrored("users", self.users, self.reload), Mirrored("api_keys", self.keys)])

    def reload(self) -> None:
        self.reloads += 1


def bucket() -> MemoryKv:
    return MemoryKv(subjects.ACCESS_BUCKET)


async def test_the_first_host_fills_an_empty_bucket_with_its_files(tmp_path: Path) -> None:
    kv, host = bucket(), Host(tmp_path / "a")
    host.users.write_bytes(b'{"app1": {}}')
    assert await host.sync.round(kv) == []
    assert (await kv.get("users")).value == b'{"app1": {}}'
    assert (await kv.get("api_keys")).value == b""  # no file: the cluster has no keys yet
    assert host.reloads == 0


async def test_a_starting_host_takes_the_clusters_word_over_its_own_files(tmp_path: Path) -> None:
    kv, host = bucket(), Host(tmp_path / "b")
    await kv.put("users", b'{"cluster": {}}')
    await kv.put("api_keys", b"")
    host.users.write_bytes(b'{"stale": {}}')
    host.keys.write_bytes(b"old keys")
    assert sorted(await host.sync.round(kv)) == ["api_keys", "users"]
    assert host.users.read_bytes() == b'{"cluster": {}}' and not host.keys.exists()
    assert stat.S_IMODE(host.users.stat().st_mode) == 0o600  # passwords and keys: the owner's only
    assert host.reloads == 1
    assert await host.sync.round(kv) == [] and host.reloads == 1  # nothing changed: nothing done


async def test_a_change_on_one_host_reaches_the_other_and_reloads_its_server(tmp_path: Path) -> None:
    kv, a, b = bucket(), Host(tmp_path / "a"), Host(tmp_path / "b")
    a.users.write_bytes(b'{"app1": {}}')
    await a.sync.round(kv)
    await b.sync.round(kv)
    assert b.users.read_bytes() == b'{"app1": {}}' and b.reloads == 1
    a.users.write_bytes(b'{"app1": {}, "app2": {}}')  # `asrpro users add app2` on host a
    assert await a.sync.round(kv) == [] and a.reloads == 0
    assert await b.sync.round(kv) == ["users"]
    assert b.users.read_bytes() == b'{"app1": {}, "app2": {}}' and b.reloads == 2
    b.keys.write_bytes(b"key-of-b")  # `asrpro keys add` on host b
    await b.sync.round(kv)
    assert await a.sync.round(kv) == ["api_keys"] and a.keys.read_bytes() == b"key-of-b"
    assert a.reloads == 0  # API keys are re-read by the gateway: no nats-server reload


async def test_a_file_removed_on_one_host_is_removed_on_the_others(tmp_path: Path) -> None:
    kv, a, b = bucket(), Host(tmp_path / "a"), Host(tmp_path / "b")
    a.keys.write_bytes(b"key")
    await a.sync.round(kv)
    await b.sync.round(kv)
    assert b.keys.read_bytes() == b"key"
    a.keys.unlink()
    await a.sync.round(kv)
    assert (await kv.get("api_keys")).value == b""
    assert await b.sync.round(kv) == ["api_keys"] and not b.keys.exists()
