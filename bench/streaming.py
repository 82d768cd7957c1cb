"""Time to the first streamed text against the whole transcription, on about 5 minutes of speech, beside the
time the first 30-s window takes in-process with the same decoding parameters. Prints JSON.

    python bench/streaming.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
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
from framework.config import load_config  # noqa: E402
from model_server import audio as audio_decoding  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402
from tests.e2e.test_streaming import SENTENCES  # noqa: E402

MODEL = "whisper-tiny.en"


def speech(minutes: float, tmp: Path) -> bytes:
    """Synthesised sentences in a shuffled order until `minutes` of audio."""
    rng = random.Random(7)
    parts: list[str] = []
    total = 0.0
    while total < minutes * 60:
        for i in rng.sample(range(len(SENTENCES)), len(SENTENCES)):
            part = tmp / f"{len(parts)}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(part), SENTENCES[i]], check=True)
            parts.append(str(part))
            total += float(subprocess.run(["soxi", "-D", str(part)], capture_output=True, text=True).stdout)
    out = tmp / "long.wav"
    subprocess.run(["sox", "-D", *parts, "-r", "16000", "-c", "1", str(out)], check=True)
    return out.read_bytes()


def in_process(audio: bytes) -> tuple[float, float]:
    """(first segment, whole) seconds with the system's decoding parameters, in-process."""
    model = catalogue(load_config())[MODEL]
    options = decoding_for(model, TranscribeRequest())
    engine = WhisperEngine(model.weights, device="cpu", compute_type="int8")
    samples = audio_decoding.decode(audio, "long.wav")
    list(engine.decode(samples[: 16000 * 5], options).pieces)  # warm
    t0 = time.perf_counter()
    pieces = engine.decode(audio_decoding.decode(audio, "long.wav"), options).pieces
    next(pieces)
    first = time.perf_counter() - t0
    for _ in pieces:
        pass
    return first, time.perf_counter() - t0


def through_system(audio: bytes) -> tuple[float, float, int]:
    """(first delta, done, deltas) seconds through the gateway's SSE, warm server."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp))
        try:
            url = f"{stack.gateway}/v1/audio/transcriptions"
            with httpx.Client(timeout=900) as http:
                http.post(url, files={"file": ("warm.wav", audio[: 16000 * 2 * 5])}).raise_for_status()
                t0 = time.perf_counter()
                first, deltas = None, 0
                with http.stream("POST", url, files={"file": ("long.wav", audio)}, data={"stream": "true"}) as r:
                    for line in r.iter_lines():
                        if "transcript.text.delta" in line:
                            deltas += 1
                            first = first or time.perf_counter() - t0
                        elif "transcript.text.done" in line:
                            return first or 0.0, time.perf_counter() - t0, deltas
        finally:
            stack.stop()
    raise RuntimeError("the stream ended without transcript.text.done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio = speech(args.minutes, Path(tmp))
    direct_first, direct_total = in_process(audio)
    first, total, deltas = through_system(audio)
    print(
        json.dumps(
            {
                "benchmark": "streaming",
                "audio_minutes": args.minutes,
                "model": MODEL,
                "in_process_first_window_s": round(direct_first, 3),
                "in_process_total_s": round(direct_total, 3),
                "system_first_delta_s": round(first, 3),
                "system_done_s": round(total, 3),
                "deltas": deltas,
                "first_delta_vs_first_window": round(first / direct_first, 3),
                "first_delta_share_of_total": round(first / total, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
