"""Batched decoding of one long recording, measured (issue 22 §1). Prints one JSON object.

A long recording (plain prose, bench/prose.txt, spoken by espeak-ng: its text known) decoded:
- in-process, sequentially, by faster-whisper with the model's default decoding and its best thread setting for
  one request (1 worker x all cores) — the baseline;
- in-process, batched (faster-whisper's BatchedInferencePipeline, batch sizes `--batch-sizes`), to tell the engine's
  gain from the system's overhead;
- through the system (`asrpro up`, POST /v1/audio/transcriptions with `batch_size`), sequential and batched;
and for each: seconds, the speed-up over the baseline, the word error rate against the text spoken and against the
baseline's text, and for the system the model server's peak resident memory (VmHWM) after its runs.

    python bench/batching.py [--minutes 20] [--model whisper-tiny.en] [--batch-sizes 8,16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from actors.proxy.decoding import decoding_for  # noqa: E402
from actors.registry import catalogue  # noqa: E402
from bench.speech import spoken  # noqa: E402
from framework.config import load_config  # noqa: E402
from framework.cores import usable_cores  # noqa: E402
from model_server import pipeline  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402


def in_process(engine: WhisperEngine, model: str, audio: bytes, batch_size: int) -> tuple[float, str]:
    info = catalogue(load_config())[model]
    options = decoding_for(info, TranscribeRequest(batch_size=batch_size))
    t0 = time.perf_counter()
    result = pipeline.transcribe(engine, audio, "long.flac", options, model_id=model, received_at=t0)
    return time.perf_counter() - t0, result.text


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--batch-sizes", default="8,16")
    parser.add_argument("--skip-in-process-batched", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    info = catalogue(load_config())[args.model]
    cores = usable_cores().count
    runs: dict[str, tuple[float, str]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        path, said = spoken(args.minutes, tmp / "long.flac")
        audio = path.read_bytes()
        # The best in-process setting for one request at a time: every core as a thread of one worker.
        engine = WhisperEngine(info.weights, device="cpu", compute_type="int8", concurrency=1, cpu_threads=cores)
        base_s, base_text = in_process(engine, args.model, audio, 0)
        runs["in_process_sequential"] = (base_s, base_text)
        if not args.skip_in_process_batched:
            for size in sizes:
                s, text = in_process(engine, args.model, audio, size)
                runs[f"in_process_batch_{size}"] = (s, text)
        del engine
        stack = start_stack(tmp / "stack")
        try:
            with httpx.Client(base_url=stack.gateway, timeout=3600) as http:
                warm = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
                form = {"model": args.model}
                http.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", warm)}, data=form).raise_for_status()
                for size in [0, *sizes]:
                    t0 = time.perf_counter()
                    reply = http.post(
                        "/v1/audio/transcriptions",
                        files={"file": ("long.flac", audio)},
                        data=form | {"batch_size": str(size), "response_format": "text"},
                    )
                    reply.raise_for_status()
                    name = f"system_batch_{size}" if size else "system_sequential"
                    runs[name] = (time.perf_counter() - t0, reply.text)
                [server] = [m for m in http.get("/api/ps").json()["models"] if m["model"] == args.model]
                server_peak = peak_rss_mb(server["pid"]) if server.get("pid") else None
        finally:
            stack.stop()
    report: dict[str, object] = {
        "benchmark": "batching",
        "model": args.model,
        "audio_s": round(args.minutes * 60, 0),
        "cores": cores,
        "baseline": "in-process faster-whisper, sequential, model defaults, 1 worker x all cores",
        "model_server_peak_rss_mb": server_peak,
    }
    for name, (seconds, text) in runs.items():
        report[name] = {
            "s": round(seconds, 2),
            "speedup_vs_baseline": round(base_s / seconds, 3),
            "wer_vs_spoken": round(word_error_rate(said, text), 4),
            "wer_vs_baseline": round(word_error_rate(base_text, text), 4),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
