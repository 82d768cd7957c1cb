"""Event delivery latency: from a lifecycle transition (the `at` its publisher stamped) to a plain NATS
subscriber (the `client` user) seeing it, idle and while C clients keep transcribing. Prints JSON.

Model "b" is loaded and unloaded through /api/ps (starting, ready, stopped events) K times, first with nothing
else running, then while C clients send jfk.flac to model "a" without pause.

    python bench/events.py [-k 20] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Event, Process, Queue
from multiprocessing.queues import Queue as QueueType
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from schemas import subjects  # noqa: E402
from schemas.events import decode_event, kind  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
LIFECYCLE = {"starting", "ready", "stopped"}


def subscribe(url: str, password: str, ready: EventType, stop: EventType, out: QueueType[list[float]]) -> None:
    """In a process of its own (the load's client threads must not hold its GIL): the delay of each lifecycle
    event of model b, as a plain NATS client (the `client` user) on asr.events.*.b."""

    async def run() -> None:
        nc = await nats.connect(url, user="client", password=password, inbox_prefix="_INBOX.client")
        delays: list[float] = []

        async def on_msg(msg: Msg) -> None:
            received = time.time()
            event = decode_event(msg.data, msg.headers)
            if kind(event) in LIFECYCLE:
                delays.append(received - event.at)

        await nc.subscribe(subjects.events_of_model("b"), cb=on_msg)
        await nc.flush()
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await nc.close()
        out.put(delays)

    asyncio.run(run())


def cycle(stack: Stack, http: httpx.Client, k: int) -> list[float]:
    ready, stop = Event(), Event()
    out: QueueType[list[float]] = Queue()
    proc = Process(target=subscribe, args=(stack.nats_url, stack.client_password, ready, stop, out))
    proc.start()
    try:
        ready.wait(10)
        for _ in range(k):
            http.post(f"{stack.gateway}/api/ps/b").raise_for_status()
            http.delete(f"{stack.gateway}/api/ps/b").raise_for_status()
        time.sleep(0.5)
        stop.set()
        delays: list[float] = out.get(timeout=10)
        return delays
    finally:
        proc.join(10)


def summary(delays: list[float]) -> dict[str, float]:
    ms = sorted(d * 1000 for d in delays)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "events": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(q[94], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ms[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-k", type=int, default=20)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), ASRPRO_CONFIG=str(REPO / "bench" / "events.toml"))
        try:
            with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=args.clients + 4)) as http:
                url = f"{stack.gateway}/v1/audio/transcriptions"
                http.post(url, files={"file": ("jfk.flac", AUDIO)}, data={"model": "a"}).raise_for_status()
                idle = cycle(stack, http, args.k)
                stop = threading.Event()
                sent = [0]

                def client(_: int) -> None:
                    while not stop.is_set():
                        http.post(url, files={"file": ("jfk.flac", AUDIO)}, data={"model": "a"}).raise_for_status()
                        sent[0] += 1

                with ThreadPoolExecutor(args.clients) as pool:
                    futures = [pool.submit(client, i) for i in range(args.clients)]
                    time.sleep(2.0)  # the load is on
                    loaded = cycle(stack, http, args.k)
                    stop.set()
                    for f in futures:
                        f.result()
        finally:
            stack.stop()
    print(
        json.dumps(
            {
                "benchmark": "events",
                "cycles": args.k,
                "clients": args.clients,
                "requests_during_load": sent[0],
                "idle": summary(idle),
                "under_load": summary(loaded),
            }
        )
    )


if __name__ == "__main__":
    main()
