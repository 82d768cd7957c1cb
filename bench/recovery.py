"""Time from a model server's death (kill -9) to the next successful transcript, for the local and the
docker runtime, against the same stack's plain warm request as the baseline. Prints JSON.

    python bench/recovery.py [-n 5]        # docker part skipped when no daemon or image is there
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import httpx  # noqa: E402

from actors.lifecycle.runtimes.docker import daemon_problem  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = (REPO.parent / "shared" / "data" / "jfk.flac").read_bytes()
MODEL = "whisper-tiny.en"


def request(stack: Stack, http: httpx.Client) -> float:
    t0 = time.perf_counter()
    http.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO)}).raise_for_status()
    return time.perf_counter() - t0


def kill_server(stack: Stack, http: httpx.Client, runtime: str) -> float:
    [entry] = [m for m in http.get(f"{stack.gateway}/api/ps").json()["models"] if m["model"] == MODEL]
    t0 = time.perf_counter()
    if runtime == "local":
        os.kill(entry["pid"], signal.SIGKILL)
    else:
        docker.from_env().containers.get(entry["container_id"]).kill()
    return t0


def measure(runtime: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(
            Path(tmp),
            ASRPRO_LIFECYCLE__RUNTIME=runtime,
            ASRPRO_DOCKER__DEPLOYMENT="bench-recovery",
            ASRPRO_RECOVERY__BACKOFF="[0]",
        )
        try:
            with httpx.Client(timeout=120) as http:
                request(stack, http)
                warm = [request(stack, http) for _ in range(n)]
                after_death = []
                for _ in range(n):
                    t0 = kill_server(stack, http, runtime)
                    request(stack, http)
                    after_death.append(time.perf_counter() - t0)
                    time.sleep(1.0)  # let the recovery actor's own restart settle before the next kill
        finally:
            stack.stop()
    return {
        f"{runtime}_warm_request_median_s": round(statistics.median(warm), 3),
        f"{runtime}_death_to_transcript_median_s": round(statistics.median(after_death), 3),
        f"{runtime}_death_to_transcript_max_s": round(max(after_death), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    n = parser.parse_args().n
    result: dict[str, object] = {"benchmark": "recovery", "n": n, **measure("local", n)}
    problem = daemon_problem()
    if problem:
        result["docker_skipped"] = problem
    else:
        result.update(measure("docker", n))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
