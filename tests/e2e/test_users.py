"""`asrpro users` against a running `asrpro up`: an application added while the stack runs gets a credentials
file only its owner can read, connects with it (its own inbox and audio bucket) and transcribes; removed, it is
disconnected and cannot come back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest

from asrpro import client as asr_client
from framework import bus
from schemas.transcribe import TranscribeRequest
from tests.conftest import JFK_TEXT
from tests.e2e.stack import REPO, Stack, start_stack
from tests.wer import word_error_rate

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("users"))
    yield s
    assert s.stop() == 0


def asrpro(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.env, "ASRPRO_NATS__URL": stack.nats_url}
    return subprocess.run(
        [sys.executable, "-m", "asrpro.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def credentials(printed: str) -> tuple[str, int, dict[str, str]]:
    """Where `users add` says the credentials are, the file's mode, and what it holds."""
    path = Path(printed.split("credentials are in ")[1].split(" (mode")[0])
    return str(path), path.stat().st_mode & 0o777, json.loads(path.read_text())


async def test_an_application_added_at_run_time_transcribes_and_once_removed_is_out(
    stack: Stack, shared_data: Path
) -> None:
    added = asrpro(stack, "users", "add", "notes-app")
    assert added.returncode == 0, added.stderr
    creds_path, mode, creds = credentials(added.stdout)
    assert mode == 0o600 and Path(creds_path).parent == Path(stack.env["ASRPRO_NATS__CREDENTIALS_DIR"])
    assert creds["user"] == "notes-app" and creds["inbox_prefix"] == "_INBOX.notes-app" and "audio_bucket" not in creds
    assert "notes-app" in asrpro(stack, "users", "list").stdout
    assert asrpro(stack, "users", "add", "gateway").returncode == 1  # an actor's name is not an application's
    assert asrpro(stack, "users", "add", "Bad Name").returncode == 1

    nc = await bus.connect(creds["url"], name="notes-app", user=creds["user"], password=creds["password"])
    jfk = (shared_data / "jfk.flac").read_bytes()
    result = await asr_client.transcribe(
        nc, "whisper-1", TranscribeRequest(audio=jfk, filename="jfk.flac"), timeout=120
    )
    assert word_error_rate(JFK_TEXT, result.text) < 0.15

    # Once the server closes it, this client must end rather than try to reconnect for ever (bus.connect's choice).
    nc.options["allow_reconnect"] = False
    removed = asrpro(stack, "users", "remove", "notes-app")
    assert removed.returncode == 0, removed.stderr
    assert not await asyncio.to_thread(os.path.exists, creds_path)
    for _ in range(50):
        if not nc.is_connected:
            break
        await asyncio.sleep(0.1)
    assert not nc.is_connected
    await nc.close()
    with pytest.raises((nats.errors.Error, OSError)):
        await nats.connect(
            creds["url"], user=creds["user"], password=creds["password"], allow_reconnect=False, connect_timeout=2
        )
