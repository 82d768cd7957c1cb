"""Scheduling figures through the whole system, each against a baseline measured in the same run. Prints JSON.

- cold swap (the model must first evict another to get GPU memory) against a plain cold start;
- queue wait and latency with 32 concurrent clients on one model (max_parallel from the config).

    python bench/scheduling.py [-n 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()


def transcribe(stack: Stack, model: str, http: httpx.Client) -> dict:
    r = http.post(
        f"{stack.gateway}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", AUDIO)},
        data={"model": model, "response_format": "verbose_json"},
    )
    r.raise_for_status()
    return r.json()


def timed(stack: Stack, model: str, http: httpx.Client) -> float:
    t0 = time.perf_counter()
    transcribe(stack, model, http)
    return time.perf_counter() - t0


def unload_all(stack: Stack, http: httpx.Client) -> None:
    for entry in http.get(f"{stack.gateway}/api/ps").json()["models"]:
        http.delete(f"{stack.gateway}/api/ps/{entry['model']}", params={"force": "true"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), ASRPRO_CONFIG=str(REPO / "bench" / "swap.toml"))
        try:
            with httpx.Client(timeout=300) as http:
                cold, swap = [], []
                for _ in range(args.n):
                    unload_all(stack, http)
                    cold.append(timed(stack, "b", http))  # nothing loaded: a plain cold start
                    unload_all(stack, http)
                    transcribe(stack, "a", http)  # a holds 3000 of 4096 MB
                    swap.append(timed(stack, "b", http))  # b must evict a first
                transcribe(stack, "a", http)  # warm
                t0 = time.perf_counter()

                def client(_: int) -> dict:
                    with httpx.Client(timeout=300) as own:
                        return transcribe(stack, "a", own)

                with ThreadPoolExecutor(args.clients) as pool:
                    results = list(pool.map(client, range(args.clients)))
                wall = time.perf_counter() - t0
        finally:
            stack.stop()
    queue = sorted(r["timing"]["queue_s"] for r in results)
    total = sorted(r["timing"]["total_s"] for r in results)
    med = statistics.median
    print(
        json.dumps(
            {
                "benchmark": "scheduling",
                "n": args.n,
                "cold_start_median_s": round(med(cold), 3),
                "cold_swap_median_s": round(med(swap), 3),
                "ratio_swap_vs_cold_start": round(med(swap) / med(cold), 3),
                "clients": args.clients,
                "queue_wait_median_s": round(med(queue), 3),
                "queue_wait_p95_s": round(queue[int(0.95 * (len(queue) - 1))], 3),
                "latency_median_s": round(med(total), 3),
                "latency_max_s": round(total[-1], 3),
                "wall_s": round(wall, 3),
                "audio_s_per_wall_s": round(len(results) * 11.0 / wall, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
