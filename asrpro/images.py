"""`asrpro images build|list`: model server images built without a container registry.

Where a registry answers, the Dockerfiles' default base (python:3.11-slim) is pulled. Where none
does, a Debian base is made once with debootstrap and imported. Wheels are downloaded on the host
and the build runs with ``--network none``. Layers are cached: a rebuild with nothing changed is fast.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

from framework import cuda_compat
from framework.config import REPO_ROOT, Config

log = logging.getLogger("asrpro.images")

UPSTREAM_BASE = "python:3.11-slim"
LOCAL_BASE = "asrpro/base:bookworm-py311"
FAMILY_DIRS = {name: REPO_ROOT / "containers" / name for name in ("whisper", "parakeet", "diarizer", "stack")}
STACK = "stack"  # not a model: nats-server, actors and gateway for containers/compose.yml
PLATFORM_ARGS = [
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--platform",
    "manylinux_2_28_x86_64",
    "--platform",
    "manylinux_2_27_x86_64",  # NVIDIA's CUDA wheels
    "--platform",
    "manylinux_2_17_x86_64",
    "--platform",
    "manylinux2014_x86_64",
]
# What each image needs from this repo, copied to app/<package>/ (WORKDIR /app, so `python3 -m model_server`
# finds it). A model server imports the wire contract and framework.logs (the rest of framework is copied along
# but never imported there: the image has no NATS client). The stack's local runtime imports model_server.cuda_libs.
APP_PACKAGES: dict[str, tuple[str, ...]] = {
    "whisper": ("schemas", "framework", "model_server"),
    "parakeet": ("schemas", "framework", "model_server"),
    "diarizer": ("schemas", "framework", "model_server"),
}
APP_PACKAGES[STACK] = ("schemas", "model_server", "framework", "actors", "asrpro", "gateway")
STACK_FILES = ("asrpro.toml", "nats.conf")
# Families built from another family's Dockerfile, with the build arguments that make the image theirs: the
# diarizer's image is the parakeet one's but for its engine (its requirements.txt stays its own), so one Dockerfile
# serves both instead of two copies drifting apart.
SHARED_DOCKERFILES: dict[str, tuple[str, dict[str, str]]] = {"diarizer": ("parakeet", {"ENGINE": "resemblyzer"})}


class ImageBuildError(RuntimeError):
    pass


CUDA_SUFFIX = "-cuda"
# Families with a CUDA variant: its requirements-cuda.txt is added to requirements.txt, where a line
# `# replaces: <package>` takes that package out (Parakeet's swaps onnxruntime for onnxruntime-gpu).
CUDA_FAMILIES = ("whisper", "parakeet")


def cuda_requirements(base: str, cuda: str) -> str:
    replaced = {line.split(":", 1)[1].strip().lower() for line in cuda.splitlines() if line.startswith("# replaces:")}

    def name(line: str) -> str:
        return re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0].lower()

    kept = [
        line for line in base.splitlines() if line.startswith("#") or not line.strip() or name(line) not in replaced
    ]
    return "\n".join(kept) + "\n" + cuda


def model_image(config: Config, model_id: str, cuda: bool = False) -> str:
    model = config.models[model_id]
    if cuda:
        return model.cuda_image or f"{config.docker.image_prefix}/{model_id}:{config.docker.image_tag}{CUDA_SUFFIX}"
    return model.image or f"{config.docker.image_prefix}/{model_id}:{config.docker.image_tag}"


def family_image(config: Config, family: str, cuda: bool = False) -> str:
    name = family if family == STACK else f"{family}-server"
    return f"{config.docker.image_prefix}/{name}:{config.docker.image_tag}{CUDA_SUFFIX if cuda else ''}"


def base_image(client: docker.DockerClient, work: Path) -> str:
    """python:3.11-slim where it exists or can be pulled, else a local Debian base (made once)."""
    for name in (UPSTREAM_BASE, LOCAL_BASE):
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            pass
    try:
        client.images.pull(UPSTREAM_BASE)
        return UPSTREAM_BASE
    except docker.errors.APIError as exc:
        log.info("no registry (%s): building the local base %s with debootstrap", str(exc).splitlines()[0], LOCAL_BASE)
    _debootstrap_base(work)
    return LOCAL_BASE


def _debootstrap_base(work: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("no registry answers and debootstrap is not installed: apt-get install debootstrap")
    root = Path(tempfile.mkdtemp(prefix="asrpro-rootfs-", dir=work))
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", LOCAL_BASE], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise ImageBuildError("tar of the debootstrap root failed")
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(f"building the local base image failed: {exc}") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _wheelhouse(family: str, context: Path) -> None:
    requirements = context / "requirements.txt"  # the family's, with the CUDA additions for a CUDA variant
    wheels = context / "wheels"
    stamp = wheels / ".requirements.sha256"
    digest = _digest([requirements])
    if stamp.exists() and stamp.read_text() == digest:
        return
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    log.info("downloading wheels for the %s image", family)
    cmd = [sys.executable, "-m", "pip", "download", "-q", *PLATFORM_ARGS, "-d", str(wheels), "-r", str(requirements)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageBuildError(f"pip download for the {family} image failed: {result.stderr.strip()[-2000:]}")
    stamp.write_text(digest)


def _sync_app(family: str, context: Path) -> None:
    app = context / "app"
    shutil.rmtree(app, ignore_errors=True)
    sources = [s for package in APP_PACKAGES[family] for s in (REPO_ROOT / package).rglob("*.py")]
    if family == STACK:
        sources += [REPO_ROOT / name for name in STACK_FILES]
        sources += sorted((REPO_ROOT / "gateway" / "console").glob("*.*"))  # the console's page, script, style
    for source in sources:
        target = app / source.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if family == STACK:
        # The live actor's voice activity model (1.2 MB), taken from this host's faster-whisper: the stack image
        # runs it on onnxruntime and does not carry faster-whisper.
        from actors.live import vad

        assets = app / "actors" / "live" / "assets"
        assets.mkdir(parents=True, exist_ok=True)
        shutil.copy2(vad.model_path(), assets / vad.MODEL_FILE)


def dockerfile(family: str) -> tuple[Path, dict[str, str]]:
    """The Dockerfile a family's image is built from, and the build arguments that make the image that family's."""
    source, build_args = SHARED_DOCKERFILES.get(family, (family, {}))
    return FAMILY_DIRS[source] / "Dockerfile", build_args


def _context(family: str, work: Path, cuda: bool = False) -> Path:
    context = work / "build" / (family + (CUDA_SUFFIX if cuda else ""))
    context.mkdir(parents=True, exist_ok=True)
    shutil.copy2(dockerfile(family)[0], context / "Dockerfile")
    requirements = (FAMILY_DIRS[family] / "requirements.txt").read_text()
    if cuda:
        requirements = cuda_requirements(requirements, (FAMILY_DIRS[family] / "requirements-cuda.txt").read_text())
    (context / "requirements.txt").write_text(requirements)
    (context / ".dockerignore").write_text("wheels/.requirements.sha256\n")
    _wheelhouse(family, context)
    _sync_app(family, context)
    return context


def cuda_labels(wheels: Path) -> dict[str, str]:
    """What the engine's CUDA code in these wheels needs (its GPU architectures, PTX, CUDA version), as the image's
    labels: the docker runtime checks them against the GPU and the driver before it starts a container."""
    for wheel in sorted(wheels.glob("*.whl")):
        if wheel.name.startswith(("ctranslate2-", "onnxruntime_gpu-")):
            build = cuda_compat.wheel_build(wheel)
            if build is not None:
                return build.labels()
    return {}


def build(config: Config, names: list[str], work: Path, cuda: bool = False) -> dict[str, str]:
    """Build the images of the models in `names` (all models when empty; "stack" for the compose stack); with
    `cuda`, their CUDA variants (`<image>-cuda`, the CUDA libraries inside) instead.

    Returns model id (or "stack") → image tag."""
    unknown = [m for m in names if m not in config.models and m != STACK]
    if unknown:
        known = ", ".join([*sorted(config.models), STACK])
        raise ImageBuildError(f"unknown model(s): {', '.join(unknown)}; known: {known}")
    model_ids = [m for m in names if m != STACK] or ([] if names else list(config.models))
    families = {config.models[m].family for m in model_ids} | ({STACK} if STACK in names else set())
    if cuda:
        unsupported = sorted(families - set(CUDA_FAMILIES))
        if unsupported and names:
            raise ImageBuildError(f"no CUDA image for {', '.join(unsupported)} yet (only {', '.join(CUDA_FAMILIES)})")
        families &= set(CUDA_FAMILIES)
        model_ids = [m for m in model_ids if config.models[m].family in CUDA_FAMILIES]
    work.mkdir(parents=True, exist_ok=True)
    client = docker.from_env(timeout=600)
    base = base_image(client, work)
    built: dict[str, str] = {}
    for family in sorted(families):
        tag = family_image(config, family, cuda)
        context = _context(family, work, cuda)
        labels = cuda_labels(context / "wheels") if cuda else {}
        log.info("building %s from %s", tag, base, extra=labels)
        for chunk in client.api.build(
            path=str(context),
            tag=tag,
            buildargs={"BASE_IMAGE": base, **dockerfile(family)[1]},
            labels=labels,
            network_mode="none",
            rm=True,
            decode=True,
        ):
            if "error" in chunk:
                raise ImageBuildError(f"docker build of {tag} failed: {chunk['error'].strip()}")
            line = chunk.get("stream", "").strip()
            if line.startswith("Step "):
                log.info(line)
        image = client.images.get(tag)
        if family == STACK:
            built[STACK] = tag
        for model_id in model_ids:
            if config.models[model_id].family == family:
                repository, _, version = model_image(config, model_id, cuda).rpartition(":")
                image.tag(repository, version)
                built[model_id] = f"{repository}:{version}"
    return built


def listing(config: Config) -> list[dict[str, str]]:
    client = docker.from_env(timeout=30)
    rows = []
    wanted = [(m, False) for m in config.models]
    wanted += [(m, True) for m, model in config.models.items() if model.family in CUDA_FAMILIES]
    for model_id, cuda in wanted:
        name = model_image(config, model_id, cuda)
        try:
            image = client.images.get(name)
            rows.append(
                {"model": model_id, "image": name, "id": image.short_id, "size_mb": str(image.attrs["Size"] // 2**20)}
            )
        except docker.errors.ImageNotFound:
            rows.append({"model": model_id, "image": name, "id": "missing", "size_mb": ""})
    return rows
