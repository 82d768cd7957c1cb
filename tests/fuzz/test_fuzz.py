"""Fuzzing the running system: every request subject, as each user that may publish to it, and every HTTP route
get thousands of malformed inputs. Every one must be answered with a clear error (or a success): no 500, no
silence, no process crashed or restarted, every actor still answering at the end. Counts by status are printed
(run with -s); ASRPRO_FUZZ_SEED replays a run, ASRPRO_FUZZ_ROUNDS makes it longer."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import nats.errors
import pytest
from nats.aio.client import Client

from framework import bus
from schemas import codec, subjects
from tests.e2e.stack import Stack, start_stack
from tests.fuzz.inputs import EXTREMES, deep_json, mutations

pytestmark = pytest.mark.e2e
SEED = int(os.environ.get("ASRPRO_FUZZ_SEED", "20261129"))
ROUNDS = int(os.environ.get("ASRPRO_FUZZ_ROUNDS", "10"))
ADMIN_KEY = "fuzz-admin-key-" + "c" * 20
MODEL = "whisper-tiny.en"
ACTORS = ("registry", "gpu", "metrics", "lifecycle", "recovery", "proxy")
WAV_HEADER = b"RIFF\x24\x08\x00\x00WAVEfmt "

# A valid request per subject; the fuzzer mutates it. Models that do not exist keep the fuzzer from loading or
# stopping real ones through an otherwise valid message.
BASES: dict[str, dict[str, Any]] = {
    subjects.REGISTRY_LIST: {},
    subjects.REGISTRY_GET: {"id": "whisper-1"},
    subjects.REGISTRY_SET_DEFAULT: {"model_id": "fuzz-none"},
    subjects.LIFECYCLE_ENSURE: {"model": "fuzz-none", "keep_alive": 1.0, "timeout": 2.0},
    subjects.LIFECYCLE_STOP: {"model": "fuzz-none", "force": True},
    subjects.LIFECYCLE_STATUS: {"model": None},
    subjects.GPU_ALLOCATE: {"model": "fuzz-none", "memory_mb": 10},
    subjects.GPU_RELEASE: {"model": "fuzz-none"},
    subjects.GPU_BIND: {"model": "fuzz-none", "pid": 1},
    subjects.GPU_STATUS: {},
    subjects.METRICS_SNAPSHOT: {},
    subjects.RECOVERY_CLOSE_BREAKER: {"model": "fuzz-none", "by": "fuzz"},
    subjects.transcribe(MODEL): {
        "audio": base64.b64encode(WAV_HEADER + b"\x00" * 64).decode(),
        "filename": "a.wav",
        "keep_alive": "5m",
        "temperature": 0.0,
        "timeout": 30,
    },
    subjects.transcribe("fuzz-none"): {"audio": "AAAA", "filename": "a.wav"},
    subjects.transcribe("a.b.c." + "x" * 200): {"audio": "AAAA"},
}
CLIENT_SUBJECTS = {subjects.REGISTRY_LIST, subjects.REGISTRY_GET, subjects.LIFECYCLE_STATUS}
GPU_WRITES = {subjects.GPU_ALLOCATE, subjects.GPU_RELEASE, subjects.GPU_BIND}
PUBLISHERS: dict[str, set[str]] = {
    "admin": set(BASES),
    "gateway": set(BASES) - GPU_WRITES,
    "client": CLIENT_SUBJECTS | {s for s in BASES if s.startswith(subjects.TRANSCRIBE_PREFIX)},
    "proxy": {subjects.LIFECYCLE_ENSURE},
    "recovery": {subjects.LIFECYCLE_ENSURE},
    "lifecycle": GPU_WRITES,
}
REPORT: dict[str, Counter[str]] = {"nats": Counter(), "http": Counter()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # The stack's logs go to a file: thousands of refused inputs are logged, the counts are what to read.
    s = start_stack(tmp, log=tmp / "stack.log", ASRPRO_GATEWAY__ADMIN_KEYS=json.dumps([ADMIN_KEY]))
    yield s
    print(f"\nfuzz (seed {SEED}, {ROUNDS} rounds):")
    for surface, counts in REPORT.items():
        print(json.dumps({"surface": surface, "total": sum(counts.values()), **dict(sorted(counts.items()))}))
    assert s.stop() == 0
    s.wait_no_leftovers()


def processes(stack: Stack) -> dict[str, list[int]]:
    found = {name: stack.pids_of("actor", name) for name in ACTORS}
    found["gateway"] = stack.pids_of("gateway")
    found["nats-server"] = stack.pids_of("nats-server")
    return found


def credentials(stack: Stack) -> dict[str, str]:
    """Every NATS user's password, from the file `asrpro up` keeps them in."""
    passwords: dict[str, str] = json.loads((Path(stack.env["ASRPRO_NATS__STORE_DIR"]) / "credentials.json").read_text())
    return passwords


async def _one(nc: Client, subject: str, body: bytes, headers: dict[str, str]) -> str:
    try:
        reply = await nc.request(subject, body, headers=headers or None, timeout=45)
    except nats.errors.TimeoutError:
        return "no reply"
    except nats.errors.NoRespondersError:
        return "no responders"
    code = (reply.headers or {}).get(codec.ERROR_CODE_HEADER)
    return code or "ok"


async def test_every_subject_as_every_user_that_may_send_to_it(stack: Stack) -> None:
    before = processes(stack)
    rng = random.Random(SEED)
    passwords = await asyncio.to_thread(credentials, stack)
    passwords["client"] = stack.client_password
    failures: list[str] = []
    for user, allowed in PUBLISHERS.items():
        nc = await bus.connect(stack.nats_url, name=f"fuzz-{user}", user=user, password=passwords[user])
        try:
            cases = [
                (subject, what, body, headers)
                for _ in range(ROUNDS)
                for subject in sorted(allowed)
                for what, body, headers in mutations(rng, BASES[subject])
            ]
            for start in range(0, len(cases), 16):
                batch = cases[start : start + 16]
                results = await asyncio.gather(*(_one(nc, s, b, h) for s, _, b, h in batch))
                for (subject, what, _, _), status in zip(batch, results, strict=True):
                    REPORT["nats"][status] += 1
                    if status in ("500", "no reply"):
                        failures.append(f"{user} {subject} {what}: {status}")
        finally:
            await nc.close()
    assert not failures, f"{len(failures)} bad answers, e.g. {failures[:10]}"
    assert processes(stack) == before, "a process of the stack crashed or was restarted"
    # Every actor still answers a valid request (recovery and proxy with a clear 404 for a model that is not).
    nc = await bus.connect(stack.nats_url, name="fuzz-after", user="admin", password=passwords["admin"])
    try:
        for subject, expected in (
            (subjects.REGISTRY_LIST, "ok"),
            (subjects.LIFECYCLE_STATUS, "ok"),
            (subjects.GPU_STATUS, "ok"),
            (subjects.METRICS_SNAPSHOT, "ok"),
            (subjects.RECOVERY_CLOSE_BREAKER, "ok"),  # closing a closed breaker is no error
            (subjects.transcribe("fuzz-none"), "404"),  # no such model
        ):
            base = BASES.get(subject, {"model": "fuzz-none", "by": "fuzz"})
            status = await _one(nc, subject, json.dumps(base).encode(), {"Content-Type": "application/json"})
            assert status == expected, f"{subject} answers {status} after the fuzzing, not {expected}"
    finally:
        await nc.close()


def http_cases(rng: random.Random, routes: list[tuple[str, str]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, url path with query, httpx keyword arguments)."""
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for method, path in routes:
        for _ in range(ROUNDS * 20):
            odd = rng.choice(EXTREMES)
            filled = path.replace("{model}", quote(str(odd)[:300], safe="")).replace(
                "{model_id}", quote(str(odd)[:300], safe="")
            )
            query = "&".join(
                f"{rng.choice(['model', 'since', 'since_seq', 'force', 'progress', 'keep_alive', 'x'])}="
                f"{quote(str(rng.choice(EXTREMES))[:500], safe='')}"
                for _ in range(rng.randint(0, 3))
            )
            headers = dict(auth) if rng.random() < 0.9 else {}
            kind = rng.randrange(6)
            kwargs: dict[str, Any] = {"headers": headers}
            if kind == 0:
                kwargs["content"] = rng.randbytes(rng.randint(0, 2048))
                headers["Content-Type"] = rng.choice(["application/json", "text/plain", "multipart/form-data", "x/y"])
            elif kind == 1:
                kwargs["content"] = deep_json(rng.choice([100, 10_000]))
                headers["Content-Type"] = "application/json"
            elif kind == 2:
                value = rng.choice(EXTREMES)
                kwargs["content"] = json.dumps({"model_id": value, "model": value}, default=str).encode()
                headers["Content-Type"] = "application/json"
            elif kind == 3:
                fields = {
                    k: str(rng.choice(EXTREMES))[:1000]
                    for k in rng.sample(
                        ["model", "response_format", "temperature", "language", "keep_alive", "stream", "prompt"], 3
                    )
                }
                audio = rng.choice([b"", rng.randbytes(512), WAV_HEADER + rng.randbytes(256)])
                kwargs["files"] = {"file": (str(rng.choice(EXTREMES))[:100] or "f", audio)}
                kwargs["data"] = fields
            elif kind == 4:
                headers.update({"X-Request-Id": "y" * 3000, "Accept": "x" * 100, "Origin": "null"})
            else:
                headers["Content-Type"] = "multipart/form-data; boundary=" + "b" * rng.randint(1, 80)
                kwargs["content"] = b"--" + b"b" * 10 + b"\r\n" + rng.randbytes(100)
            yield method, f"{filled}?{query}" if query else filled, kwargs


def test_every_http_route(stack: Stack) -> None:
    before = processes(stack)
    spec = httpx.get(f"{stack.gateway}/openapi.json").json()
    routes = sorted((m.upper(), p) for p, ops in spec["paths"].items() for m in ops)
    routes.append(("GET", "/ws"))
    failures: list[str] = []
    rng = random.Random(SEED + 1)
    with httpx.Client(base_url=stack.gateway, timeout=60) as http:
        for method, url, kwargs in http_cases(rng, routes):
            try:
                with http.stream(method, url, **kwargs) as response:
                    status = response.status_code  # a stream (SSE) is not read to its end
            except httpx.RemoteProtocolError as exc:
                failures.append(f"{method} {url[:80]}: connection dropped ({exc})")
                continue
            REPORT["http"][str(status)] += 1
            if status >= 500 and status not in (503, 504):
                failures.append(f"{method} {url[:80]}: {status}")
    assert not failures, f"{len(failures)} bad answers, e.g. {failures[:10]}"
    assert processes(stack) == before, "a process of the stack crashed or was restarted"
    assert httpx.get(f"{stack.gateway}/health").status_code == 200
