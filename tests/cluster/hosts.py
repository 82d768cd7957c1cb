"""Three hosts of one cluster on this machine, for the cluster tests and bench/cluster.py: three working
directories, three `asrpro up` (the first with --cluster-port, the others --join with its credentials file)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from actors.lifecycle.runtimes.local import free_port
from tests.e2e.stack import REPO, Launched, Stack, launch_stack, wait_until

CONFIG = str(REPO / "tests" / "fixtures" / "cluster.toml")
NAMES = ("node-a", "node-b", "node-c")


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.cluster_ports = {name: free_port() for name in NAMES}
        self.stacks: dict[str, Stack] = {}
        self.env: dict[str, dict[str, str]] = {}
        self.victim = ""  # the host the host-loss test killed

    @property
    def credentials(self) -> Path:
        return self.base / "node-a" / "state" / "cluster.json"

    def launch(self, name: str) -> Launched:
        home = self.base / name
        home.mkdir(exist_ok=True)
        args: tuple[str, ...] = ("--cluster-port", str(self.cluster_ports[name]))
        if name != "node-a":
            wait_until(self.credentials.exists, 60, "the first host's cluster credentials")
            args += ("--join", f"nats-route://127.0.0.1:{self.cluster_ports['node-a']}")
            args += ("--credentials", str(self.credentials))
        keep = self.env.get(name, {})  # a restarted host keeps its ports
        launched = launch_stack(
            home,
            home / "log.jsonl",
            args,
            ASRPRO_CONFIG=CONFIG,
            ASRPRO_NODE__NAME=name,
            **{k: v for k, v in keep.items() if k in ("ASRPRO_NATS__URL", "ASRPRO_GATEWAY__PORT")},
        )
        self.env[name] = launched.env
        return launched

    def gateway(self, name: str) -> str:
        return self.stacks[name].gateway

    def kill_host(self, name: str) -> None:
        """kill -9 of everything the host runs: its nats-server, supervisor, actors, gateway and model servers."""
        stack = self.stacks.pop(name)
        for pid in stack.leftovers():
            os.kill(pid, signal.SIGKILL)
        stack.proc.wait()
        stack.wait_no_leftovers()

    def start(self) -> None:
        launched = {name: self.launch(name) for name in NAMES}
        for name, host in launched.items():
            self.stacks[name] = host.ready(180)

    def stop(self) -> None:
        for stack in self.stacks.values():
            stack.stop()
