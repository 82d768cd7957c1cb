"""Live transcription, measured (issue 23). Prints one JSON object.

Speech with a known text (espeak-ng prose, `--seconds` long, pauses between paragraphs) streamed at real time in
100-ms chunks through WS /v1/realtime (server_vad) of a running `asrpro up`:
- word latency: from the end of each spoken word (its end time from an in-process faster-whisper decode with word
  timestamps of the same audio) to the arrival of the delta that holds it, p50 / p95 — greedy partials (the
  default) and beam-5 partials;
- from `speech_stopped` to the item's `completed`, p50;
- the word error rate of the completed transcripts against the same audio decoded offline in-process with the
  model's decoding (the whole recording; and utterance by utterance, each as the session committed it, from the
  samples the session heard), and each against the text spoken;
- `--sessions` concurrent sessions: how far behind the audio the completed transcripts are, and the live actor's
  memory per session.

    python bench/realtime.py [--seconds 60] [--sessions 4] [--partials greedy,beam5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import websockets  # noqa: E402

from actors.live.audio_in import Decoder  # noqa: E402
from actors.proxy.decoding import decoding_for  # noqa: E402
from actors.registry import catalogue  # noqa: E402
from asrpro.pcm import read_pcm16  # noqa: E402
from bench.batching import peak_rss_mb  # noqa: E402
from bench.speech import spoken  # noqa: E402
from framework.config import load_config  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402
from tests.wer import words as split_words  # noqa: E402

MODEL = "whisper-tiny.en"
RATE = 24000
CHUNK_S = 0.1


def pcm(path: Path, rate: int) -> np.ndarray:
    return read_pcm16(path, rate)


def in_process() -> WhisperEngine:
    info = catalogue(load_config())[MODEL]
    return WhisperEngine(info.weights, device="cpu", compute_type="int8", concurrency=1, cpu_threads=2)


def offline(path: Path, engine: WhisperEngine) -> tuple[str, list[tuple[str, float]]]:
    """The whole recording decoded in-process with the model's decoding: its text, and its words' end times."""
    options = decoding_for(catalogue(load_config())[MODEL], TranscribeRequest(timestamp_granularities=["word"]))
    audio = pcm(path, 16000).astype(np.float32) / 32768
    decoding = engine.decode(audio, options)
    words: list[tuple[str, float]] = []
    texts = []
    for segment, segment_words in decoding.pieces:
        texts.append(segment.text)
        words += [(w.word, w.end) for w in segment_words or []]
    return "".join(texts).strip(), words


async def session(url: str, audio: np.ndarray) -> dict[str, Any]:
    """One session at real time: (arrival time, event) for every event, times from the first audio sent."""
    step = int(RATE * CHUNK_S)
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)] + [np.zeros(step, np.int16)] * 20
    events: list[tuple[float, dict[str, Any]]] = []
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        update = {"type": "transcription", "audio": {"input": {"transcription": {"model": MODEL, "language": "en"}}}}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def send() -> None:
            for n, chunk in enumerate(chunks):
                audio_b64 = base64.b64encode(chunk.astype("<i2").tobytes()).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio_b64}))
                await asyncio.sleep(max(0.0, t0 + (n + 1) * CHUNK_S - loop.time()))

        sender = asyncio.ensure_future(send())
        committed: set[str] = set()
        done: set[str] = set()
        while True:
            try:
                event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            except TimeoutError:
                break
            events.append((loop.time() - t0, event))
            if event["type"] == "input_audio_buffer.committed":
                committed.add(event["item_id"])
            if event["type"].endswith(("transcription.completed", "transcription.failed")):
                done.add(event["item_id"])
            if sender.done() and committed <= done and len(events) > 3 and events[-1][1]["type"].endswith("completed"):
                break
        await sender
    return {"events": events, "audio_s": len(audio) / RATE}


def heard(audio: np.ndarray) -> np.ndarray:
    """The 16-kHz samples a session decodes: the bench's 100-ms chunks through the live actor's own resampler."""
    decoder, step = Decoder("pcm16"), int(RATE * CHUNK_S)
    chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
    return np.concatenate([decoder.decode(base64.b64encode(c.astype("<i2").tobytes()).decode()) for c in chunks])


def by_utterance(run: dict[str, Any], samples: np.ndarray, engine: WhisperEngine) -> str:
    """Each completed item's audio, as the session cut it, decoded offline in-process with the model's decoding."""
    options = decoding_for(catalogue(load_config())[MODEL], TranscribeRequest())
    events = [e for _, e in run["events"]]
    starts = [(e["item_id"], e["audio_start_ms"]) for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stops = {e["item_id"]: e["audio_end_ms"] for e in events if e["type"] == "input_audio_buffer.speech_stopped"}
    done = {e["item_id"] for e in events if e["type"].endswith("transcription.completed")}
    texts = []
    for n, (item, start) in enumerate(starts):
        if item not in done:
            continue
        end = stops.get(item, starts[n + 1][1] if n + 1 < len(starts) else len(samples) * 1000 // 16000)
        decoding = engine.decode(samples[start * 16 : end * 16], options)
        texts.append("".join(segment.text for segment, _ in decoding.pieces).strip())
    return " ".join(texts)


def _norm(word: str) -> str:
    return " ".join(split_words(word))


def analyse(
    run: dict[str, Any], words: list[tuple[str, float]], offline_text: str, said: str, utterances: str = ""
) -> dict[str, Any]:
    events: list[tuple[float, dict[str, Any]]] = run["events"]
    arrived: list[tuple[str, float]] = []  # every word of every delta, with its arrival
    for at, event in events:
        if event["type"].endswith("transcription.delta"):
            arrived += [(w, at) for w in event["delta"].split()]
    reference = [_norm(w) for w, _ in words]
    matcher = difflib.SequenceMatcher(a=reference, b=[_norm(w) for w, _ in arrived], autojunk=False)
    latencies = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            latencies.append(arrived[block.b + k][1] - words[block.a + k][1])
    stopped = {e["item_id"]: at for at, e in events if e["type"] == "input_audio_buffer.speech_stopped"}
    final = [(at, e) for at, e in events if e["type"].endswith("transcription.completed")]
    to_completed = [at - stopped[e["item_id"]] for at, e in final if e["item_id"] in stopped]
    # How far behind the audio each completed transcript came: its arrival less the end of its audio (the audio is
    # sent at real time from 0), so a lag that grows over the run shows here.
    ends = {
        e["item_id"]: e["audio_end_ms"] / 1000 for _, e in events if e["type"] == "input_audio_buffer.speech_stopped"
    }
    lags = [at - ends[e["item_id"]] for at, e in final if e["item_id"] in ends]
    text = " ".join(e["transcript"] for _, e in final)
    last_completed = final[-1][0] if final else float("nan")
    return {
        "words_matched": len(latencies),
        "words_spoken": len(words),
        "word_to_delta_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "word_to_delta_p95_s": round(statistics.quantiles(latencies, n=20)[-1], 3) if len(latencies) > 1 else None,
        "speech_stopped_to_completed_p50_s": round(statistics.median(to_completed), 3) if to_completed else None,
        "utterances": len(final),
        "wer_vs_offline": round(word_error_rate(offline_text, text), 4),
        "wer_vs_spoken": round(word_error_rate(said, text), 4),
        **(
            {
                "wer_vs_offline_utterances": round(word_error_rate(utterances, text), 4),
                "offline_utterances_wer_vs_spoken": round(word_error_rate(said, utterances), 4),
            }
            if utterances
            else {}
        ),
        "last_completed_after_audio_end_s": round(last_completed - run["audio_s"], 2),
        "completed_lag_first_half_last_half_max_s": _halves(lags),
    }


def _halves(lags: list[float]) -> list[float | None]:
    """The largest lag in the run's first half of items and in its second, and the largest: a lag that grows shows."""
    half = len(lags) // 2
    return [round(max(part), 2) if part else None for part in (lags[:half], lags[half:], lags)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--partials", default="greedy,beam5", help="which partial decodings to measure (greedy first)")
    args = parser.parse_args()
    report: dict[str, Any] = {"benchmark": "realtime", "model": MODEL, "chunk_ms": int(CHUNK_S * 1000)}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        path, said = spoken(args.seconds / 60, tmp / "speech.flac")
        audio = pcm(path, RATE)
        engine, samples = in_process(), heard(audio)  # one model load for both offline decodes
        offline_text, words = offline(path, engine)
        report["audio_s"] = round(len(audio) / RATE, 1)
        report["offline_wer_vs_spoken"] = round(word_error_rate(said, offline_text), 4)
        modes = {
            "greedy": ("greedy_partials", {}),
            "beam5": ("beam5_partials", {"ASRPRO_REALTIME__PARTIAL_BEAM_SIZE": "5"}),
        }
        for name, env in (modes[mode] for mode in args.partials.split(",")):
            stack = start_stack(tmp / name, None, **env)
            try:
                url = stack.gateway.replace("http", "ws") + "/v1/realtime?intent=transcription"
                warm = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
                httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("a.flac", warm)}, timeout=120)
                run = asyncio.run(session(url, audio))
                report[name] = analyse(run, words, offline_text, said, by_utterance(run, samples, engine))
                if name == "greedy_partials" and args.sessions > 1:
                    live_pid = stack.pid_of("actor", "live")
                    before = peak_rss_mb(live_pid)

                    async def several(url: str = url) -> list[dict[str, Any]]:
                        return await asyncio.gather(*(session(url, audio) for _ in range(args.sessions)))

                    t0 = time.monotonic()
                    runs = asyncio.run(several())
                    results = [analyse(run, words, offline_text, said) for run in runs]
                    report[f"{args.sessions}_sessions"] = {
                        "wall_s": round(time.monotonic() - t0, 1),
                        "last_completed_after_audio_end_s": [r["last_completed_after_audio_end_s"] for r in results],
                        "word_to_delta_p50_s": [r["word_to_delta_p50_s"] for r in results],
                        "wer_vs_offline": [r["wer_vs_offline"] for r in results],
                        "completed_lag_first_half_last_half_max_s": [
                            r["completed_lag_first_half_last_half_max_s"] for r in results
                        ],
                        "live_actor_peak_rss_mb_before_after": [before, peak_rss_mb(live_pid)],
                    }
            finally:
                stack.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
