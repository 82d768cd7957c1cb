"""Speaker diarization, measured (issue 24). Prints one JSON object.

- Diarization error rate (NIST's definition, collar 0.25 s, overlapped speech scored; bench/conversation.py's
  `error_rate`) of the diarizer model server on synthesised conversations (2, 3 and 4 espeak-ng voices taking
  turns with pauses and 15 % overlapped turns, `--minutes` long each), speaker counts found vs spoken;
- the same conversation with one voice per channel, diarized by channel (diarize=channels, whisper transcribing
  each channel): its DER from the segments' times;
- ../shared/data/stereo_diarization.wav mixed down to mono, diarized, against its channels' own speech;
- diarization time as a fraction of transcription time of the same audio by whisper-base in-process (its
  defaults: beam 5, temperature fallback), a `--long-minutes` meeting's diarization time, and the diarizer
  server's peak memory (VmHWM) over all of it.

    python bench/diarization.py [--minutes 3] [--model whisper-base]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from actors.proxy.decoding import decoding_for  # noqa: E402
from actors.registry import catalogue  # noqa: E402
from bench.batching import peak_rss_mb  # noqa: E402
from bench.conversation import Turn, conversation, error_rate  # noqa: E402
from framework.config import load_config  # noqa: E402
from model_server import audio, pipeline  # noqa: E402
from model_server.engines.diarizer import speech_frames  # noqa: E402
from model_server.engines.voice_encoder import mel_frames  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.model_server import ResultFrame  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402

DIARIZER = "diarizer-resemblyzer"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    info = catalogue(load_config())[DIARIZER]
    command = [sys.executable, "-m", "model_server", "--port", str(port), "--engine", info.engine]
    process = subprocess.Popen(
        [*command, "--weights", str(REPO / info.weights), "--model-id", DIARIZER], cwd=REPO, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1).json().get("status") == "ok":
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the diarizer server did not start")


def _diarize(url: str, path: Path) -> tuple[list[Turn], float]:
    started = time.perf_counter()
    reply = httpx.post(f"{url}/transcribe", content=path.read_bytes(), params={"filename": path.name}, timeout=600)
    reply.raise_for_status()
    return [(s["start"], s["end"], s["speaker"]) for s in reply.json()["segments"]], time.perf_counter() - started


def _channel_speech(path: Path) -> list[Turn]:
    """Each channel's own speech (the diarizer's energy rule on that channel alone), lettered by channel."""
    turns: list[Turn] = []
    for n, samples in enumerate(audio.decode_channels(path.read_bytes(), path.name)):
        speech = speech_frames(mel_frames(samples))
        edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
        turns += [(a * 0.01, b * 0.01, "AB"[n]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return sorted(turns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="one long meeting: time and memory")
    args = parser.parse_args()
    config = load_config()
    info = catalogue(config)[args.model]
    engine = WhisperEngine(info.weights, device="cpu", compute_type="int8", concurrency=1, cpu_threads=0)
    options = decoding_for(info, TranscribeRequest())
    out: dict[str, Any] = {"model": args.model, "diarizer": DIARIZER, "minutes": args.minutes, "conversations": []}
    process, url = _server()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-diarization-") as scratch:
            for speakers, seed in ((2, 1), (3, 2), (4, 3)):
                talk = conversation(Path(scratch), speakers=speakers, seconds=args.minutes * 60, seed=seed)
                turns, diarize_s = _diarize(url, talk.mono)
                row: dict[str, Any] = {
                    "speakers": talk.speakers,
                    "found": len({s for *_, s in turns}),
                    "audio_s": round(talk.turns[-1][1], 1),
                    "der": round(error_rate(talk.turns, turns), 4),
                    "diarize_s": round(diarize_s, 2),
                }
                if speakers == 2:
                    data = talk.mono.read_bytes()
                    started = time.perf_counter()
                    list(pipeline.stream(engine, data, "x.wav", options, model_id=args.model, received_at=started))
                    row["transcribe_s"] = round(time.perf_counter() - started, 2)
                    row["diarize_over_transcribe"] = round(diarize_s / row["transcribe_s"], 4)
                    by_channel = msgspec.structs.replace(options, diarize="channels")
                    frames = pipeline.stream(
                        engine, talk.channels.read_bytes(), "c.wav", by_channel, model_id=args.model, received_at=0.0
                    )
                    last = list(frames)[-1]
                    assert isinstance(last, ResultFrame)
                    channel_turns = [(s.start, s.end, s.speaker or "?") for s in last.result.segments]
                    row["channels_der"] = round(error_rate(talk.turns, channel_turns), 4)
                out["conversations"].append(row)
            if args.long_minutes:
                talk = conversation(Path(scratch), speakers=3, seconds=args.long_minutes * 60, seed=9)
                turns, diarize_s = _diarize(url, talk.mono)
                out["long"] = {
                    "speakers": talk.speakers,
                    "found": len({s for *_, s in turns}),
                    "audio_s": round(talk.turns[-1][1], 1),
                    "der": round(error_rate(talk.turns, turns), 4),
                    "diarize_s": round(diarize_s, 2),
                }
            stereo = REPO.parent / "shared" / "data" / "stereo_diarization.wav"
            if stereo.is_file():
                mono = Path(scratch) / "stereo_mixed.wav"
                subprocess.run(["sox", str(stereo), "-c", "1", str(mono)], check=True)
                turns, _ = _diarize(url, mono)
                out["stereo_mixed_down"] = {
                    "found": len({s for *_, s in turns}),
                    "der": round(error_rate(_channel_speech(stereo), turns), 4),
                }
        out["diarizer_peak_rss_mb"] = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    ders = [c["der"] for c in out["conversations"]]
    out["mean_der"] = round(float(np.mean(ders)), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
