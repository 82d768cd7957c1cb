"""The official OpenAI Node SDK (`npm install openai`, tests/node) against the running system: what a Node
application sees — text, usage, a stream, the models, and errors as the SDK's own classes with OpenAI's code and
param — checked from the JSON its script prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import JFK_TEXT, REPO
from tests.e2e.stack import Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e
NODE_DIR = REPO / "tests" / "node"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("node"))
    yield s
    assert s.stop() == 0


def node() -> str:
    found = shutil.which("node")
    if found is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("node and tests/node/node_modules are needed (the test command runs npm ci there)")
        pytest.skip("node or the openai npm package is not installed (cd tests/node && npm ci)")
    return found


def test_the_node_sdk_sees_what_openai_would_send_it(stack: Stack, shared_data: Path) -> None:
    ran = subprocess.run(
        [node(), "sdk_check.mjs", f"{stack.gateway}/v1", str(shared_data / "jfk.flac")],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert word_error_rate(JFK_TEXT, out["text"]) <= 0.15
    assert out["usage"] == {"type": "duration", "seconds": 11}
    assert out["verbose"]["language"] == "english" and out["verbose"]["words"] >= 20
    assert out["stream"]["deltas"] >= 1 and out["stream"]["joined"].strip() == out["stream"]["done"]
    assert out["retrieved"] == "whisper-1" and {"whisper-1", "gpt-4o-transcribe", "whisper-tiny.en"} <= set(
        out["listed"]
    )
    bad = out["badAudio"]
    assert bad["isBadRequest"] and (bad["status"], bad["code"], bad["param"]) == (400, "unsupported_audio", "file")
    assert bad["type"] == "invalid_request_error"
    streamed = out["badAudioStreamed"]  # an error before the stream started: a status, not an error event
    assert streamed["isBadRequest"] and streamed["code"] == "unsupported_audio"
    unknown = out["unknownModel"]
    assert unknown["isNotFound"] and (unknown["code"], unknown["param"]) == ("model_not_found", "model")
    language = out["badLanguage"]
    assert language["isBadRequest"] and (language["code"], language["param"]) == ("invalid_language", "language")
