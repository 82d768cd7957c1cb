"""The CUDA image of a Whisper model, built offline like the CPU images: its CUDA libraries load inside the
container by the sonames CTranslate2 opens, and through the model server's loader. (No GPU here: what a GPU does
with them is scripts/gpu-check.sh's to check.)"""

from __future__ import annotations

import json

import docker

from actors.lifecycle.runtimes.docker import DockerRuntime
from actors.registry import catalogue as catalogue_of
from asrpro import images
from schemas.gpu import Allocation
from tests.conftest import REPO, make_config


async def test_the_cuda_image_builds_offline_and_its_libraries_load_inside(
    docker_client: docker.DockerClient, jetstream
) -> None:
    config = make_config(jetstream, "admin")
    built = images.build(config, ["whisper-tiny.en"], REPO / ".asrpro" / "images", cuda=True)
    assert built == {"whisper-tiny.en": "asrpro/whisper-tiny.en:0.1.0-cuda"}
    probe = (
        "import ctypes, json, pynvml; from model_server import cuda_libs; "
        "by_soname = [ctypes.CDLL(s) is not None for s in ('libcublasLt.so.12', 'libcublas.so.12')]; "
        "print(json.dumps({'soname': all(by_soname), 'loader': cuda_libs.preload(), 'nvml': pynvml.__file__}))"
    )
    out = docker_client.containers.run(
        built["whisper-tiny.en"],
        ["python3", "-c", probe],
        network_mode="none",
        read_only=True,
        user="10001:10001",
        cap_drop=["ALL"],
        remove=True,
    )
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["soname"] is True
    assert result["nvml"].startswith("/opt/venv/")  # what the server sizes its batches by (model_server/gpu_memory)
    assert all("/opt/venv/" in where for where in result["loader"].values()), result
    # The labels written at build time say what the ctranslate2 inside needs, as read from its library there.
    inside = docker_client.containers.run(
        built["whisper-tiny.en"],
        [
            "python3",
            "-c",
            "import json; from framework import cuda_compat as c; "
            "print(json.dumps(c.installed_ctranslate2().labels()))",
        ],
        network_mode="none",
        read_only=True,
        user="10001:10001",
        cap_drop=["ALL"],
        remove=True,
    )
    labels = docker_client.images.get(built["whisper-tiny.en"]).labels
    read_inside = json.loads(inside.decode().strip().splitlines()[-1])
    assert read_inside and {k: labels.get(k) for k in read_inside} == read_inside
    # The docker runtime checks them before a start: Hopper on R535 cannot compile this PTX; an A10 runs it.
    runtime = DockerRuntime(config)
    try:
        model = catalogue_of(config)["whisper-tiny.en"]
        hopper = Allocation(model=model.id, device="cuda:0", device_index=0, capability="9.0", driver_cuda="12.2")
        problem = await runtime.gpu_problem(model, hopper)
        assert "R570 or newer" in problem and "asrpro/whisper-tiny.en:0.1.0-cuda" in problem
        ampere = Allocation(model=model.id, device="cuda:0", device_index=0, capability="8.6", driver_cuda="12.2")
        assert await runtime.gpu_problem(model, ampere) == ""
    finally:
        await runtime.close()
