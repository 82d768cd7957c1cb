"""`asrpro up` as a real subprocess tree, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from actors.lifecycle.runtimes.local import free_port
from asrpro.nats_server import new_password

REPO = Path(__file__).resolve().parents[2]


def processes_with_env(marker: str) -> list[int]:
    """Live processes whose environment contains `marker`: everything `asrpro up` started inherits it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and not _zombie(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Stack:
    proc: subprocess.Popen[str]
    gateway: str
    nats_url: str
    env: dict[str, str]
    marker: str
    client_password: str

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def leftovers(self) -> list[int]:
        return [pid for pid in processes_with_env(self.marker) if pid != os.getpid()]

    def wait_no_leftovers(self, timeout: float = 15.0) -> None:
        """After stop(): every process of the stack exits. Not a fixed grace period: a child that got its
        SIGTERM from the kernel when its parent went (PR_SET_PDEATHSIG) may still be on its way out."""
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], f"processes of asrpro up left behind: {left}"

    def pids_of(self, *words: str) -> list[int]:
        """The stack's live processes whose arguments include every word (the program by its file name),
        e.g. pids_of("nats-server") or pids_of("actor", "lifecycle"); none while it is being restarted."""
        found = []
        for pid in self.leftovers():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            names = {*argv, Path(argv[0]).name}
            if all(word in names for word in words):
                found.append(pid)
        return found

    def pid_of(self, *words: str) -> int:
        """The one process of pids_of(*words); fails when there is none."""
        pids = self.pids_of(*words)
        assert pids, f"no process of the stack runs with {words}"
        return pids[0]

    def restarted(self, old_pid: int, *words: str) -> bool:
        """A process with these words runs again, and it is not `old_pid` (the supervisor replaced it)."""
        return any(pid != old_pid for pid in self.pids_of(*words))


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Poll `predicate` until it is true; an HTTP error while polling counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def start_stack(tmp: Path, log: Path | None = None, **env_overrides: str) -> Stack:
    """`asrpro up` with these ASRPRO_* overrides; with `log`, every process's JSON log lines go to that file."""
    return launch_stack(tmp, log, (), **env_overrides).ready()


@dataclass
class Launched:
    """`asrpro up` started, its ready line not read yet (a cluster's first host waits for a second one)."""

    proc: subprocess.Popen[str]
    env: dict[str, str]
    marker: str
    client_password: str

    def ready(self, timeout: float = 90.0) -> Stack:
        proc = self.proc
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"asrpro up exited with {proc.returncode} before it was ready")
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                line = proc.stdout.readline()
                with contextlib.suppress(ValueError):
                    info = json.loads(line)
                    if info.get("status") == "ready":
                        return Stack(proc, info["gateway"], info["nats"], self.env, self.marker, self.client_password)
        proc.kill()
        raise RuntimeError(f"asrpro up did not print its ready line within {timeout:g} s")


def launch_stack(tmp: Path, log: Path | None = None, args: tuple[str, ...] = (), **env_overrides: str) -> Launched:
    marker = f"ASRPRO_TEST_MARKER={secrets.token_hex(6)}"
    client_password = new_password()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASRPRO_")}
    env.update(
        {
            "ASRPRO_NATS__URL": f"nats://127.0.0.1:{free_port()}",
            "ASRPRO_GATEWAY__PORT": str(free_port()),
            "ASRPRO_NATS__STORE_DIR": str(tmp / "state"),
            "ASRPRO_NATS__CREDENTIALS_DIR": str(tmp / "credentials"),  # not beside the store: as configured
            # Not the repository's .asrpro/api_keys: a developer's own keys must not change what a test sees.
            "ASRPRO_GATEWAY__API_KEYS_FILE": str(tmp / "api_keys"),
            "ASRPRO_NATS__CLIENT_PASSWORD": client_password,
            "ASRPRO_LIFECYCLE__RUNTIME": "local",
            marker.split("=")[0]: marker.split("=")[1],
        }
    )
    env.update(env_overrides)
    stderr = log.open("w") if log is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "asrpro.cli", "up", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    return Launched(proc, env, marker, client_password)
