"""Dynamic batching across requests, measured (issue 22 §2). Prints one JSON object.

Short recordings (jfk.flac and espeak-ng utterances of 5 to 15 s, their text known) sent by `--clients` concurrent
clients, `--requests` in all:
- in-process faster-whisper, the model server's own pipeline with the model's default decoding, each request a
  sequential `transcribe`, num_workers x cpu_threads searched: the best is the baseline;
- through the system (`asrpro up`, POST /v1/audio/transcriptions) without batching (max_batch = 1) and with it
  (max_batch = `--max-batch`);
and for each: requests per second and its ratio to the baseline, the word error rate against the text spoken and
against the baseline's texts; for the system also the p50 latency of a lone request (jfk.flac, one at a time) and
the model server's peak resident memory.

    python bench/dynamic_batching.py [--requests 48] [--clients 8] [--max-batch 8] [--window-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from actors.proxy.decoding import decoding_for  # noqa: E402
from actors.registry import catalogue  # noqa: E402
from bench.batching import peak_rss_mb  # noqa: E402
from bench.speech import utterances  # noqa: E402
from framework.config import load_config  # noqa: E402
from framework.cores import usable_cores  # noqa: E402
from model_server import pipeline  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402

MODEL = "whisper-tiny.en"
JFK = REPO.parent / "shared" / "data" / "jfk.flac"
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
Clip = tuple[bytes, str]


def loaded(clients: int, requests: int, clips: list[Clip], send: Callable[[bytes], str]) -> tuple[float, list[str]]:
    """Requests per second with `clients` sending at once, cycling through the clips; the text of each clip."""
    send(clips[0][0])  # warm
    texts: dict[int, str] = {}

    def one(n: int) -> None:
        texts[n % len(clips)] = send(clips[n % len(clips)][0])

    with ThreadPoolExecutor(clients) as pool:
        t0 = time.perf_counter()
        list(pool.map(one, range(requests)))
        rate = requests / (time.perf_counter() - t0)
    return rate, [texts[i] for i in range(len(clips))]


def wer(references: list[str], texts: list[str]) -> float:
    return round(statistics.mean(word_error_rate(r, t) for r, t in zip(references, texts, strict=True)), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--clips", type=int, default=15)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--window-ms", type=int, default=20)
    parser.add_argument("--lone", type=int, default=10)
    args = parser.parse_args()
    info = catalogue(load_config())[MODEL]
    options = decoding_for(info, TranscribeRequest())
    cores = usable_cores().count
    report: dict[str, object] = {
        "benchmark": "dynamic_batching",
        "model": MODEL,
        "cores": cores,
        "clients": args.clients,
        "requests": args.requests,
        "decoding": {"beam_size": options.beam_size, "temperature": options.temperature},
    }
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        clips = [(JFK.read_bytes(), JFK_TEXT), *utterances(args.clips, tmp)]
        said = [text for _, text in clips]
        searched: dict[str, float] = {}
        best: tuple[float, list[str]] = (0.0, [])
        for workers, threads in dict.fromkeys([(1, cores), (2, 1), (2, max(1, cores // 2)), (2, cores), (4, 1)]):
            engine = WhisperEngine(
                info.weights, device="cpu", compute_type="int8", concurrency=workers, cpu_threads=threads
            )

            def direct(audio: bytes, engine: WhisperEngine = engine) -> str:
                t0 = time.perf_counter()
                return pipeline.transcribe(engine, audio, "a", options, model_id=MODEL, received_at=t0).text

            rate, texts = loaded(args.clients, args.requests, clips, direct)
            searched[f"{workers}x{threads}"] = round(rate, 3)
            if rate > best[0]:
                best = (rate, texts)
            del engine
        base_rate, base_texts = best
        report["in_process_rps_by_workers_x_threads"] = searched
        report["in_process_best"] = {"rps": round(base_rate, 3), "wer_vs_spoken": wer(said, base_texts)}
        for name, max_batch in (("system_unbatched", 1), ("system_batched", args.max_batch)):
            env = {
                "ASRPRO_MODELS__WHISPER_TINY_EN__MAX_BATCH": str(max_batch),
                "ASRPRO_MODELS__WHISPER_TINY_EN__BATCH_WINDOW_MS": str(args.window_ms),
            }
            stack = start_stack(tmp / name, None, **env)
            try:
                with httpx.Client(
                    base_url=stack.gateway, timeout=600, limits=httpx.Limits(max_connections=args.clients)
                ) as http:

                    def system(audio: bytes, http: httpx.Client = http) -> str:
                        reply = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", audio)})
                        reply.raise_for_status()
                        return str(reply.json()["text"])

                    lone = []
                    for _ in range(args.lone + 1):
                        t0 = time.perf_counter()
                        system(clips[0][0])
                        lone.append(time.perf_counter() - t0)
                    rate, texts = loaded(args.clients, args.requests, clips, system)
                    [server] = [m for m in http.get("/api/ps").json()["models"] if m["model"] == MODEL]
                    peak = peak_rss_mb(server["pid"]) if server.get("pid") else None
            finally:
                stack.stop()
            report[name] = {
                "max_batch": max_batch,
                "rps": round(rate, 3),
                "ratio_vs_in_process_best": round(rate / base_rate, 3),
                "lone_p50_s": round(statistics.median(lone[1:]), 3),
                "wer_vs_spoken": wer(said, texts),
                "wer_vs_in_process": wer(base_texts, texts),
                "model_server_peak_rss_mb": peak,
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
