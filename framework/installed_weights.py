"""Whether a model's weights are on this host (a fact of the host that runs its model server).

`weights` is ``package:<module>`` (a pip-installed model package: installed when importable) or a directory
(installed when it holds the engine's required files)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from schemas.registry import Installed

# What an engine cannot load without.
REQUIRED_FILES = {
    "faster-whisper": ("config.json", "model.bin"),
    "onnx-asr": ("vocab.txt", "config.json"),
    "resemblyzer": ("pretrained.pt",),
}
PACKAGE_PREFIX = "package:"


def weights_dir(weights: str) -> Path | None:
    """The directory of a model's weights (None for a pip-installed model package)."""
    if not weights or weights.startswith(PACKAGE_PREFIX):
        return None
    return Path(weights).expanduser()


def check(model_id: str, weights: str, engine: str) -> Installed:
    """Whether the model's weights are on this host, and where."""
    if weights.startswith(PACKAGE_PREFIX):
        module = weights.removeprefix(PACKAGE_PREFIX)
        found = importlib.util.find_spec(module) is not None
        return Installed(
            model=model_id, installed=found, where=module, missing="" if found else f"python package {module}"
        )
    directory = weights_dir(weights)
    if directory is None:
        return Installed(model=model_id, installed=False, missing=f"models.{model_id}.weights is not set")
    required = REQUIRED_FILES.get(engine, ("config.json",))
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        return Installed(model=model_id, installed=False, where=str(directory.resolve()), missing=", ".join(missing))
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return Installed(model=model_id, installed=True, where=str(directory.resolve()), size_bytes=size)
