"""Durable jobs as an HTTP user meets them, on the whole stack (`asrpro up`, separate processes): submitted once,
finished whatever is killed — `kill -9` of the jobs actor mid-decode, SIGTERM of the whole stack and `asrpro up`
again on the same store — resumed from the checkpoint, completed once, seen only by the key that submitted it."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import JFK_TEXT, assert_whole_meeting
from tests.e2e.stack import Stack, start_stack, wait_until
from tests.wer import word_error_rate

KEY_A, KEY_B, ADMIN = "sk-jobs-app-a-0123456789", "sk-jobs-app-b-0123456789", "sk-jobs-admin-0123456789"
JOBS_ENV = {
    "ASRPRO_GATEWAY__API_KEYS": json.dumps([KEY_A, KEY_B]),
    "ASRPRO_GATEWAY__ADMIN_KEYS": json.dumps([ADMIN]),
    "ASRPRO_JOBS__ACK_WAIT": "5",
    "ASRPRO_JOBS__CHECKPOINT_EVERY": "10",
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(stack: Stack, audio: bytes, key: str = KEY_A, **form: str) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/audio/jobs",
        files={"file": ("meeting.flac", audio)},
        data={"model": "whisper-tiny.en", **form},
        headers=bearer(key),
        timeout=60,
    )


def job(stack: Stack, job_id: str, key: str = KEY_A) -> dict[str, Any]:
    reply = httpx.get(f"{stack.gateway}/v1/audio/jobs/{job_id}", headers=bearer(key), timeout=10)
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def ended(stack: Stack, job_id: str, timeout: float = 240.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def done() -> bool:
        found.update(job(stack, job_id))
        return found["status"] in ("completed", "failed", "cancelled")

    wait_until(done, timeout=timeout, what=f"job {job_id} to end")
    return found


def test_a_job_survives_a_killed_worker_and_only_its_key_sees_it(
    tmp_path: Path, meeting: bytes, shared_data: Path
) -> None:
    stack = start_stack(tmp_path, None, **JOBS_ENV)
    try:
        # Batched, as jobs are by default, a chunk at a time: checkpoints between chunks, a rest to resume.
        accepted = submit(
            stack, meeting, response_format="srt", metadata=json.dumps({"meeting": "weekly"}), batch_size="1"
        )
        assert accepted.status_code == 202, accepted.text
        created = accepted.json()
        assert accepted.headers["Location"] == f"/v1/audio/jobs/{created['id']}"
        assert (created["object"], created["status"], created["metadata"]) == (
            "audio.job",
            "queued",
            {"meeting": "weekly"},
        )
        # Another key: 404, as if it did not exist; the admin key sees it.
        other = httpx.get(f"{stack.gateway}/v1/audio/jobs/{created['id']}", headers=bearer(KEY_B), timeout=10)
        assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
        assert job(stack, created["id"], ADMIN)["id"] == created["id"]
        # Once it has a checkpoint, the jobs actor is killed mid-decode; the supervisor starts it again.
        wait_until(lambda: job(stack, created["id"])["processed_seconds"] >= 10, timeout=120, what="a checkpoint")
        worker = stack.pid_of("actor", "jobs")
        os.kill(worker, signal.SIGKILL)
        done = ended(stack, created["id"])
        assert done["status"] == "completed" and done["attempts"] == 2 and done["progress"] == 1.0, done
        result = httpx.get(f"{stack.gateway}/v1/audio/jobs/{created['id']}/result", headers=bearer(KEY_A), timeout=30)
        assert result.status_code == 200 and result.text.count("-->") >= 6, result.text
        as_json = httpx.get(
            f"{stack.gateway}/v1/audio/jobs/{created['id']}/result", params={"format": "json"}, headers=bearer(KEY_A)
        )
        # Resumed from its checkpoint, it reads as one decode of the whole: the synchronous transcription of it,
        # decoded the same way (batched chunks; a sequential decode conditions on earlier text, and on six
        # repetitions of one speech tiny.en may skip some, which would compare two different decodes).
        once = httpx.post(
            f"{stack.gateway}/v1/audio/transcriptions",
            files={"file": ("meeting.flac", meeting)},
            data={"model": "whisper-tiny.en", "batch_size": "1"},
            headers=bearer(KEY_A),
            timeout=120,
        ).json()["text"]
        resumed = as_json.json()["text"]
        print(f"resumed job: {resumed}\nsynchronous: {once}")  # whole, on failure (an assertion's is cut short)
        # Nothing lost in the resume (what was spoken), then the same words as one uninterrupted decode.
        assert_whole_meeting(resumed)
        assert word_error_rate(once, resumed) <= 0.1
        mine = httpx.get(f"{stack.gateway}/v1/audio/jobs", headers=bearer(KEY_A), timeout=10).json()
        theirs = httpx.get(f"{stack.gateway}/v1/audio/jobs", headers=bearer(KEY_B), timeout=10).json()
        assert [j["id"] for j in mine["data"]] == [created["id"]] and theirs["data"] == []
        # The command line: submit and wait, with a progress bar, then the result as text; the list.
        cli = [sys.executable, "-m", "asrpro.cli", "jobs"]
        common = ["--url", stack.gateway, "--api-key", KEY_A]
        waited = subprocess.run(
            [
                *cli,
                "submit",
                str(shared_data / "jfk.flac"),
                "--wait",
                "--format",
                "text",
                "--model",
                "whisper-tiny.en",
                *common,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert waited.returncode == 0, waited.stderr
        assert word_error_rate(JFK_TEXT, waited.stdout) <= 0.1 and "100.0%" in waited.stderr
        listed = subprocess.run([*cli, "list", *common], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and created["id"] in listed.stdout and listed.stdout.count("completed") == 2
        bad = submit(stack, b"", key=KEY_A)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "file"
        unknown = submit(stack, meeting, model="whisper-huge")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        # A recording with one speaker per channel, as a job: diarized by channel, or by the diarizer from the
        # voices mixed; known speakers are refused at once (each job record would carry their samples).
        stereo = (shared_data / "stereo_diarization.wav").read_bytes()
        reference = "data:audio/wav;base64," + base64.b64encode(stereo).decode()
        refused = submit(stack, stereo, **{"known_speaker_names[]": "Ann", "known_speaker_references[]": reference})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "known_speaker_names", refused.text
        mixed = submit(stack, stereo, response_format="diarized_json")
        assert mixed.status_code == 202, mixed.text
        assert ended(stack, mixed.json()["id"])["status"] == "completed"
        by_voice = httpx.get(
            f"{stack.gateway}/v1/audio/jobs/{mixed.json()['id']}/result", headers=bearer(KEY_A), timeout=10
        ).json()
        assert by_voice["segments"] and {s["speaker"] for s in by_voice["segments"]} <= {"A", "B"}, by_voice
        channels = submit(stack, stereo, response_format="diarized_json", diarize="channels")
        assert channels.status_code == 202, channels.text
        assert ended(stack, channels.json()["id"])["status"] == "completed"
        diarized = httpx.get(
            f"{stack.gateway}/v1/audio/jobs/{channels.json()['id']}/result", headers=bearer(KEY_A), timeout=10
        ).json()
        assert {s["speaker"] for s in diarized["segments"]} == {"A", "B"}, diarized
    finally:
        assert stack.stop() == 0


def test_a_job_survives_the_whole_stack_restarting_on_the_same_store(tmp_path: Path, long_meeting: bytes) -> None:
    stack = start_stack(tmp_path, None, **JOBS_ENV)
    try:
        created = submit(stack, long_meeting, batch_size="1").json()
        wait_until(lambda: job(stack, created["id"])["processed_seconds"] >= 10, timeout=120, what="a checkpoint")
    finally:
        assert stack.stop() == 0  # SIGTERM of everything, mid-decode
    stack = start_stack(tmp_path, None, **JOBS_ENV)
    try:
        # Its events, as a browser's EventSource reads them: the state as it changes, the last one completed.
        states = []
        with httpx.stream(
            "GET", f"{stack.gateway}/v1/audio/jobs/{created['id']}/events", headers=bearer(KEY_A), timeout=240
        ) as events:
            assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
            for line in events.iter_lines():
                if line.startswith("data: "):
                    states.append(json.loads(line.removeprefix("data: ")))
        assert states and states[-1]["status"] == "completed" and states[-1]["progress"] == 1.0, states
        assert [s["processed_seconds"] for s in states] == sorted(s["processed_seconds"] for s in states)
        other = httpx.get(f"{stack.gateway}/v1/audio/jobs/{created['id']}/events", headers=bearer(KEY_B), timeout=10)
        assert other.status_code == 404
        done = ended(stack, created["id"])
        assert done["status"] == "completed" and done["attempts"] >= 2, done
        text = httpx.get(
            f"{stack.gateway}/v1/audio/jobs/{created['id']}/result", params={"format": "text"}, headers=bearer(KEY_A)
        ).text
        assert_whole_meeting(text, times=12)
        t0 = time.monotonic()
        cancelled = httpx.delete(f"{stack.gateway}/v1/audio/jobs/{created['id']}", headers=bearer(KEY_A), timeout=10)
        assert cancelled.json()["status"] == "completed" and time.monotonic() - t0 < 5  # an ended job stays as it is
    finally:
        assert stack.stop() == 0
