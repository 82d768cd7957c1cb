"""Docker runtime figures, each against a baseline measured in the same run. Prints JSON.

- cold start through the system (no container → first transcript, via the gateway) against a bare
  `docker run` of the same image until /health answers 200;
- a warm request through the docker runtime against the same request through the local runtime.

    python bench/docker_runtime.py [-n 5]      # needs a Docker Engine and `asrpro images build whisper-tiny.en`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import httpx  # noqa: E402

from framework import bus  # noqa: E402
from schemas import endpoints  # noqa: E402
from schemas.lifecycle import StopServer  # noqa: E402
from tests.e2e.stack import Stack, start_stack  # noqa: E402

AUDIO = REPO.parent / "shared" / "data" / "jfk.flac"
IMAGE = "asrpro/whisper-tiny.en:0.1.0"
MODEL = "whisper-tiny.en"


def bare_docker_run(client: docker.DockerClient) -> float:
    t0 = time.perf_counter()
    container = client.containers.run(IMAGE, detach=True, ports={"9000/tcp": ("127.0.0.1", None)})
    try:
        while True:
            container.reload()
            bindings = container.attrs["NetworkSettings"]["Ports"].get("9000/tcp")
            if bindings:
                try:
                    if httpx.get(f"http://127.0.0.1:{bindings[0]['HostPort']}/health", timeout=1).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
            time.sleep(0.02)
    finally:
        container.remove(force=True)


def request(stack: Stack, http: httpx.Client) -> float:
    t0 = time.perf_counter()
    r = http.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", AUDIO.read_bytes())})
    r.raise_for_status()
    return time.perf_counter() - t0


def stop_model(stack: Stack) -> None:
    creds = json.loads((Path(stack.env["ASRPRO_NATS__STORE_DIR"]) / "credentials.json").read_text())

    async def run() -> None:
        nc = await bus.connect(stack.nats_url, name="bench", user="admin", password=creds["admin"])
        await bus.request(nc, endpoints.LIFECYCLE_STOP, StopServer(model=MODEL), timeout=60)
        await nc.close()

    asyncio.run(run())


def run_stack(runtime: str, n: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), ASRPRO_LIFECYCLE__RUNTIME=runtime, ASRPRO_DOCKER__DEPLOYMENT="bench")
        try:
            cold: list[float] = []
            warm: list[float] = []
            with httpx.Client(timeout=300) as http:
                for _ in range(n):
                    stop_model(stack)
                    cold.append(request(stack, http))
                    warm.extend(request(stack, http) for _ in range(3))
            return cold, warm
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5)
    n = parser.parse_args().n
    client = docker.from_env()
    client.images.get(IMAGE)  # fail early: build it with `asrpro images build whisper-tiny.en`
    bare = [bare_docker_run(client) for _ in range(n)]
    docker_cold, docker_warm = run_stack("docker", n)
    local_cold, local_warm = run_stack("local", n)
    med = statistics.median
    print(
        json.dumps(
            {
                "benchmark": "docker_runtime",
                "n": n,
                "bare_docker_run_to_healthy_median_s": round(med(bare), 3),
                "docker_cold_start_to_transcript_median_s": round(med(docker_cold), 3),
                "ratio_cold_start_vs_bare_run": round(med(docker_cold) / med(bare), 3),
                "local_cold_start_to_transcript_median_s": round(med(local_cold), 3),
                "docker_warm_request_median_s": round(med(docker_warm), 4),
                "local_warm_request_median_s": round(med(local_warm), 4),
                "ratio_warm_docker_vs_local": round(med(docker_warm) / med(local_warm), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
