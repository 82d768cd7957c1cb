"""Several hosts on loopback (three `asrpro up` in one NATS cluster, tests/fixtures/cluster.toml): the routing
overhead of a request served by a model on another node against the same request served on the local node (the
baseline, measured in the same run, alternating), and the time from a host's loss (kill -9 of all its processes)
to the next successful transcript of its model through another host's gateway. Prints JSON lines.

    python bench/cluster.py [-n 20] [--losses 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.cluster.hosts import NAMES, Cluster  # noqa: E402

AUDIO = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
MODEL = "whisper-tiny.en"


def transcribe(http: httpx.Client, gateway: str) -> float:
    t0 = time.perf_counter()
    r = http.post(f"{gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}, data={"model": MODEL})
    r.raise_for_status()
    return time.perf_counter() - t0


def home_of(http: httpx.Client, gateway: str) -> str:
    [node] = [m["node"] for m in http.get(f"{gateway}/api/ps").json()["models"] if m["model"] == MODEL]
    return str(node)


def routing(cluster: Cluster, http: httpx.Client, n: int) -> dict[str, object]:
    first = cluster.gateway(NAMES[0])
    transcribe(http, first)  # start it somewhere
    home = home_of(http, first)
    other = next(name for name in NAMES if name != home)
    local: list[float] = []
    remote: list[float] = []
    for _ in range(n):  # alternating: both see the same machine
        local.append(transcribe(http, cluster.gateway(home)))
        remote.append(transcribe(http, cluster.gateway(other)))
    p50_local, p50_remote = statistics.median(local), statistics.median(remote)
    return {
        "bench": "routing",
        "n": n,
        "local_node_p50_s": round(p50_local, 4),
        "other_node_p50_s": round(p50_remote, 4),
        "ratio": round(p50_remote / p50_local, 3),
        "added_ms": round((p50_remote - p50_local) * 1000, 1),
    }


def host_loss(cluster: Cluster, http: httpx.Client) -> dict[str, object]:
    any_gateway = cluster.gateway(next(iter(cluster.stacks)))
    transcribe(http, any_gateway)
    victim = home_of(http, any_gateway)
    survivor = cluster.gateway(next(name for name in cluster.stacks if name != victim))
    warm = transcribe(http, survivor)
    t0 = time.perf_counter()
    cluster.kill_host(victim)
    attempts = 0
    while True:
        attempts += 1
        try:
            transcribe(http, survivor)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    lost_to_served = time.perf_counter() - t0
    cluster.stacks[victim] = cluster.launch(victim).ready(180)  # back, for the next round
    return {
        "bench": "host_loss",
        "victim": victim,
        "warm_request_s": round(warm, 4),
        "loss_to_next_transcript_s": round(lost_to_served, 2),
        "requests_until_served": attempts,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--losses", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        cluster.start()
        try:
            with httpx.Client(timeout=120) as http:
                print(json.dumps(routing(cluster, http, args.n)), flush=True)
                for _ in range(args.losses):
                    print(json.dumps(host_loss(cluster, http)), flush=True)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
