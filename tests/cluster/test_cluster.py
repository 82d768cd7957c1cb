"""Three hosts on one machine: three working directories, three `asrpro up` (the first with --cluster-port, the
others --join with its credentials file), one three-server NATS cluster, each node with a configured 1 GB GPU
(accounting only) on which one of the two 600 MB models fits and not both. Real nats-servers, real actors, real
faster-whisper on real audio. The counts of the load phases are printed at the end, like the chaos suite's.

Order matters (one cluster for the module): placement, the cluster's one view, a nats-server killed and restarted,
a whole host killed under load, the host restarted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats.errors
import pytest

from asrpro import client as asr_client
from framework import bus
from schemas.transcribe import TranscribeRequest
from tests.chaos.load import Load
from tests.cluster.hosts import NAMES, Cluster
from tests.e2e.stack import REPO, wait_until

pytestmark = pytest.mark.e2e
DEAD_AFTER_S = 10.0  # node.dead_after in cluster.toml
REPORTS: list[dict[str, object]] = []


@pytest.fixture(scope="module", autouse=True)
def print_counts() -> Iterator[None]:
    yield
    print("\ncluster suite:")
    for report in REPORTS:
        print(json.dumps(report))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def audio(shared_data: Path) -> bytes:
    return (shared_data / "jfk.flac").read_bytes()


def transcribe(gateway: str, audio: bytes, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}, data={"model": model}, timeout=120
    )


def ps(gateway: str) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = httpx.get(f"{gateway}/api/ps", timeout=10).raise_for_status().json()["models"]
    return models


def where(gateway: str, model: str) -> list[str]:
    return sorted(m["node"] for m in ps(gateway) if m["model"] == model and m["state"] == "ready")


def nodes(gateway: str) -> dict[str, dict[str, Any]]:
    listed = httpx.get(f"{gateway}/api/nodes", timeout=10).raise_for_status().json()["nodes"]
    return {n["name"]: n for n in listed}


def test_a_model_that_does_not_fit_beside_another_lands_on_another_node(cluster: Cluster, audio: bytes) -> None:
    a = cluster.gateway("node-a")
    first = transcribe(a, audio, "whisper-tiny.en")
    assert first.status_code == 200 and "ask not what your country" in first.json()["text"]
    [home] = where(a, "whisper-tiny.en")
    # The second 600 MB model cannot sit beside the first on its node's 1 GB: it goes where there is room, and a
    # request through that first node's gateway reaches it there.
    second = transcribe(cluster.gateway(home), audio, "tiny-b")
    assert second.status_code == 200 and "ask not what your country" in second.json()["text"]
    [other] = where(a, "tiny-b")
    assert other != home
    # Warm now: from any gateway, served where it runs, nothing new started.
    for name in NAMES:
        assert transcribe(cluster.gateway(name), audio, "tiny-b").status_code == 200
    assert where(a, "tiny-b") == [other] and where(a, "whisper-tiny.en") == [home]


def test_every_gateway_shows_the_same_servers_and_nodes(cluster: Cluster) -> None:
    views = {name: sorted((m["model"], m["node"], m["state"]) for m in ps(cluster.gateway(name))) for name in NAMES}
    assert len({json.dumps(v) for v in views.values()}) == 1, views
    listed = {name: nodes(cluster.gateway(name)) for name in NAMES}
    for name, view in listed.items():
        assert sorted(view) == list(NAMES), (name, view)
        assert all(n["alive"] for n in view.values())
        for model, node, _state in views[name]:
            assert model in view[node]["servers"]
        assert all(n["devices"] and n["devices"][0]["total_mb"] == 1024 for n in view.values())


def test_a_nats_server_killed_and_restarted_loses_nothing(cluster: Cluster, audio: bytes) -> None:
    """One of three servers dies (kill -9) and comes back (its supervisor restarts it): load through the other two
    gateways never stops being answered; afterwards every server is where it was and none runs twice (nobody took
    the node for lost)."""
    a = cluster.gateway("node-a")
    before = sorted((m["model"], m["node"]) for m in ps(a))
    c = cluster.stacks["node-c"]
    with (
        Load(a, audio, clients=1) as load_a,
        Load(cluster.gateway("node-b"), audio, clients=1) as load_b,
    ):
        time.sleep(3)
        killed_at = time.time()
        os.kill(c.pid_of("nats-server"), signal.SIGKILL)
        wait_until(lambda: c.pids_of("nats-server"), 30, "node-c's nats-server restarted")
        wait_until(lambda: beat_since(a, "node-c", killed_at + 1), 60, "node-c beating again, seen from node-a")
        time.sleep(DEAD_AFTER_S)  # longer than a lease: a janitor that took node-c for lost would have acted
    report = finish("nats_server_killed", load_a, load_b)
    assert report["ok"] > 0
    assert sorted((m["model"], m["node"]) for m in ps(a)) == before


def beat_since(gateway: str, node: str, since: float) -> bool:
    beat = nodes(gateway)[node]["heartbeat_at"]
    return bool(beat) and datetime.fromisoformat(beat).timestamp() > since


def test_a_whole_host_killed_under_load_is_survived(cluster: Cluster, audio: bytes) -> None:
    """kill -9 of every process of the host that runs whisper-tiny.en, under load from the other two gateways:
    every request answered (correctly or with a clear error), the model served from another node, the lost
    node's records and allocations cleared."""
    a = cluster.gateway("node-a")
    [victim] = where(a, "whisper-tiny.en")
    survivors = [n for n in NAMES if n != victim]
    loads = [Load(cluster.gateway(n), audio, clients=1) for n in survivors]
    for load in loads:
        load.__enter__()
    try:
        time.sleep(3)
        killed_at = time.monotonic()
        cluster.kill_host(victim)
        # The next successful transcript after the loss (the loads keep sending meanwhile).
        gateway = cluster.gateway(survivors[0])
        wait_until(lambda: transcribe(gateway, audio, "whisper-tiny.en").status_code == 200, 60, "served again")
        recovered_s = time.monotonic() - killed_at
        time.sleep(3)
    finally:
        for load in loads:
            load.__exit__()
    report = finish("host_killed", *loads)
    report["recovered_s"] = round(recovered_s, 1)
    assert recovered_s < DEAD_AFTER_S + 30, report
    # Its heartbeat expires (dead_after), then a janitor clears its records and allocations. Listed as not alive,
    # or not listed at all: the bucket's TTL (dead_after too) may have removed its record before this looks.
    wait_until(
        lambda: not nodes(gateway).get(victim, {}).get("alive"), DEAD_AFTER_S + 20, "the lost node's heartbeat expired"
    )
    wait_until(lambda: all(m["node"] != victim for m in ps(gateway)), 30, "the lost node's servers cleared")
    assert where(gateway, "whisper-tiny.en") and where(gateway, "whisper-tiny.en")[0] in survivors
    cluster.victim = victim


def test_the_killed_host_rejoins_without_orphans(cluster: Cluster, audio: bytes) -> None:
    victim = cluster.victim
    if not victim:
        pytest.fail("the host-loss test did not run first")
    cluster.stacks[victim] = cluster.launch(victim).ready(180)
    gateway = cluster.gateway(victim)
    wait_until(lambda: nodes(gateway).get(victim, {}).get("alive"), 60, "the host back among the nodes")
    assert sorted(nodes(gateway)) == list(NAMES)
    # Nothing of its old life runs or is listed: its model servers died with it, its records were cleared.
    assert all(m["node"] != victim for m in ps(gateway)), ps(gateway)
    # It serves again: a request through its own gateway is answered (by whichever node runs the model).
    response = transcribe(gateway, audio, "whisper-tiny.en")
    assert response.status_code == 200 and "ask not what your country" in response.json()["text"]
    for model in ("whisper-tiny.en", "tiny-b"):
        assert len(where(gateway, model)) == 1, ps(gateway)


def finish(name: str, *loads: Load) -> dict[str, Any]:
    totals: dict[str, Any] = {"scenario": name}
    for key in ("sent", "ok", "clear_error", "lost"):
        totals[key] = sum(load.counts[key] for load in loads)
    errors: dict[str, int] = {}
    for load in loads:
        for detail, count in load.errors.items():
            errors[detail] = errors.get(detail, 0) + count
    totals["errors"] = errors
    REPORTS.append(totals)
    assert totals["lost"] == 0, totals
    return totals


def test_users_and_api_keys_added_on_one_host_reach_every_host(cluster: Cluster, audio: bytes) -> None:
    """`asrpro users add` on one host: that application connects to another host's nats-server and transcribes
    there; `asrpro keys add` on one host: every gateway requires and accepts the key. (Last: keys, once required,
    stay required.)"""
    added = cli(cluster, "node-a", "users", "add", "carol")
    assert added.returncode == 0, added.stderr
    written = Path(added.stdout.split("credentials are in ")[1].split(" (mode")[0])  # nats.credentials_dir
    creds = json.loads(written.read_text())
    far = cluster.stacks["node-c"].nats_url

    async def carol_connects(url: str) -> bool:
        try:
            nc = await bus.connect(url, name="carol", user="carol", password=creds["password"])
        except (OSError, nats.errors.Error):
            return False
        # Refused there, a client goes on to the servers that server told it of: only this one counts.
        here = nc.connected_url is not None and nc.connected_url.port == urlsplit(url).port
        await nc.close()
        return here

    # Every host's server takes her within a few seconds (a request may be served by any host's proxy, which
    # may answer only into inboxes its server knows).
    for url in [stack.nats_url for stack in cluster.stacks.values()]:
        wait_until(lambda url=url: asyncio.run(carol_connects(url)), 30, f"carol known to {url}")  # type: ignore[misc]

    async def carol_transcribes() -> str:
        nc = await bus.connect(far, name="carol", user="carol", password=creds["password"])
        try:
            result = await asr_client.transcribe(nc, "whisper-tiny.en", TranscribeRequest(audio=audio), timeout=60)
            return result.text
        finally:
            await nc.close()

    assert "ask not what your country" in asyncio.run(carol_transcribes())
    made = cli(cluster, "node-b", "keys", "add")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    gateway = cluster.gateway("node-c")
    wait_until(lambda: httpx.get(f"{gateway}/v1/models", timeout=5).status_code == 401, 30, "node-c requiring keys")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{gateway}/v1/models", headers=headers, timeout=5).status_code == 200


def cli(cluster: Cluster, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`asrpro ...` as an operator runs it on that host (its configuration and state directory)."""
    return subprocess.run(
        [sys.executable, "-m", "asrpro.cli", *args],
        cwd=REPO, env=cluster.env[host], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
