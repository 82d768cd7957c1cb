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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from schemas.events import decode_event, kind  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
LIFECYCLE = {"starting", "ready", "stopped"}


class Subscriber:
    """A plain NATS client on asr.events.*.b in its own thread: the delay of each lifecycle event of model b."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.delays: list[float] = []
        self.seen = threading.Event()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Subscriber:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        nc = await nats.connect(self.stack.nats_url, user="client", password=self.stack.client_password)

        async def on_msg(msg: Msg) -> None:
            received = time.time()
            event = decode_event(msg.data, msg.headers)
            if kind(event) in LIFECYCLE:
                self.delays.append(received - event.at)
                self.seen.set()

        await nc.subscribe("asr.events.*.b", cb=on_msg)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()


def cycle(stack: Stack, http: httpx.Client, k: int) -> list[float]:
    with Subscriber(stack) as sub:
        for _ in range(k):
            http.post(f"{stack.gateway}/api/ps/b").raise_for_status()
            http.delete(f"{stack.gateway}/api/ps/b").raise_for_status()
        time.sleep(0.5)
        return sub.delays


def summary(delays: list[float]) -> dict[str, float]:
    ms = sorted(d * 1000 for d in delays)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else ms * 99
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
