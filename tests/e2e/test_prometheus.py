"""/metrics as Prometheus's own tools read it: `promtool check metrics` passes (base units, _total counters, help
text), label values come only from the catalogue (a made-up model name is `unknown`, a made-up path is no route),
each request is counted once with its outcome, and the gateway measures every answer by route template."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from asrpro import client as asr_client
from framework import bus
from schemas.errors import AsrError
from schemas.transcribe import TranscribeRequest
from tests.e2e.stack import Stack, start_stack, wait_until

pytestmark = pytest.mark.e2e
MODEL = "whisper-tiny.en"
MADE_UP = "made-up-model-" + "x" * 150


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("prometheus"))
    yield s
    assert s.stop() == 0


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is needed (apt-get install prometheus; the test command installs it)")
        pytest.skip("promtool is not installed")
    return found


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    families = text_string_to_metric_families(text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


async def ask_for_a_made_up_model(stack: Stack, times: int) -> None:
    """What any NATS application may do: ask for a model that does not exist (each a 404 from the proxy)."""
    nc = await bus.connect(stack.nats_url, name="flood", user="client", password=stack.client_password)
    try:
        for _ in range(times):
            with pytest.raises(AsrError):
                await asr_client.transcribe(nc, MADE_UP, TranscribeRequest(audio=b"RIFF"), timeout=30)
    finally:
        await nc.close()


def test_metrics_pass_promtool_and_cannot_be_flooded(stack: Stack, shared_data: Path) -> None:
    jfk = (shared_data / "jfk.flac").read_bytes()
    ok = httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("jfk.flac", jfk)}, timeout=120)
    assert ok.status_code == 200
    bad = httpx.post(f"{stack.gateway}/v1/audio/transcriptions", files={"file": ("x.wav", b"no audio" * 50)})
    assert bad.status_code == 400
    assert httpx.get(f"{stack.gateway}/v1/models/{MADE_UP}").status_code == 404
    assert httpx.get(f"{stack.gateway}/no/such/{MADE_UP}").status_code == 404
    asyncio.run(ask_for_a_made_up_model(stack, times=3))

    def counted() -> bool:
        found = samples(httpx.get(f"{stack.gateway}/metrics").text)
        unknown = (("code", "404"), ("model", "unknown"), ("outcome", "client_error"))
        return found.get(("asrpro_requests_total", unknown), 0) >= 3

    wait_until(counted, what="the made-up model's requests to be counted")
    text = httpx.get(f"{stack.gateway}/metrics").text
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    assert MADE_UP not in text and "/no/such" not in text
    found = samples(text)
    # Each request once, by outcome: the bad audio is the client's, not an error of the service.
    requests = {labels: value for (name, labels), value in found.items() if name == "asrpro_requests_total"}
    assert requests[(("code", "200"), ("model", MODEL), ("outcome", "ok"))] == 1
    assert requests[(("code", "400"), ("model", MODEL), ("outcome", "client_error"))] == 1
    assert not any(dict(labels)["outcome"] == "server_error" for labels in requests)
    # The bad audio's 400 came from the proxy: the gateway does not count it again as a refusal of its own.
    rejected = {dict(labels).get("code") for (name, labels) in found if name == "asrpro_gateway_rejected_total"}
    assert "unsupported_audio" not in rejected and "model_not_found" in rejected
    routes = {dict(labels)["route"] for (name, labels) in found if name.startswith("asrpro_gateway_request_dur")}
    assert {"/v1/audio/transcriptions", "/v1/models/{model_id:path}", "unmatched"} <= routes
    assert ("asrpro_queue_limit", (("limit", "max_queue"), ("model", MODEL))) in found
    assert any(name == "asrpro_build_info" for name, _ in found)
    assert found[("asrpro_real_time_factor_count", (("model", MODEL),))] == 1
    assert found[("asrpro_gateway_process_resident_memory_bytes", ())] > 0
    assert found[("asrpro_model_server_resident_memory_bytes", (("model", MODEL),))] > 10 * 2**20  # a loaded model
    actors = {dict(labels)["actor"] for (name, labels) in found if name == "asrpro_actor_resident_memory_bytes"}
    assert {"registry", "lifecycle", "gpu", "proxy", "recovery", "metrics"} <= actors  # found by $SRV.INFO
