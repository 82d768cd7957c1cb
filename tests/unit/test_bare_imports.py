"""What importing costs: the model server's modules change nothing in the importing process (the control plane imports
model_server.cuda_libs; an import used to set HF_HUB_OFFLINE there), and NVML is read without nats-py or msgspec
(scripts/gpu_check.py --nvml-only on a bare GPU machine). Each runs in a fresh interpreter: this one has both
imported already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

IMPORT_ALL = """
import importlib, json, os, pkgutil
before = dict(os.environ)
import model_server
names = ["model_server"] + [
    m.name for m in pkgutil.walk_packages(model_server.__path__, "model_server.") if m.name != "model_server.__main__"
]
for name in names:
    importlib.import_module(name)
after = dict(os.environ)
changed = {k: [before.get(k), after.get(k)] for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
print(json.dumps({"imported": names, "changed": changed}))
"""

NVML_BARE = """
import json, sys
sys.modules["nats"] = None  # an import of nats (or msgspec) now raises ImportError
sys.modules["msgspec"] = None
from framework import nvml
import runpy
runpy.run_path("scripts/gpu_check.py", run_name="gpu_check")  # the script's own imports, without running it
devices, reason = nvml.detect()
print(json.dumps({"devices": len(devices), "reason": reason, "memory": type(nvml.memory_in_use()).__name__}))
"""


def _run(code: str) -> dict[str, object]:
    # A clean environment: only what finds the interpreter; the repo is on sys.path as the working directory.
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_model_server_leaves_the_environment_alone() -> None:
    result = _run(IMPORT_ALL)
    assert {"model_server.cuda_libs", "model_server.app", "model_server.engines.whisper"} <= set(
        result["imported"]  # type: ignore[call-overload]
    )
    assert result["changed"] == {}


def test_nvml_is_read_without_nats_or_msgspec() -> None:
    result = _run(NVML_BARE)
    assert result["memory"] == "dict"
    assert isinstance(result["reason"], str) and result["reason"]
