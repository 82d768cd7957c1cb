"""The CUDA image of a Whisper model, built offline like the CPU images: its CUDA libraries load inside the
container by the sonames CTranslate2 opens, and through the model server's loader. (No GPU here: what a GPU does
with them is scripts/gpu-check.sh's to check.)"""

from __future__ import annotations

import json

import docker

from asrpro import images
from tests.conftest import REPO, make_config


def test_the_cuda_image_builds_offline_and_its_libraries_load_inside(
    docker_client: docker.DockerClient, jetstream
) -> None:
    config = make_config(jetstream, "admin")
    built = images.build(config, ["whisper-tiny.en"], REPO / ".asrpro" / "images", cuda=True)
    assert built == {"whisper-tiny.en": "asrpro/whisper-tiny.en:0.1.0-cuda"}
    probe = (
        "import ctypes, json; from model_server import cuda_libs; "
        "by_soname = [ctypes.CDLL(s) is not None for s in ('libcublasLt.so.12', 'libcublas.so.12')]; "
        "print(json.dumps({'soname': all(by_soname), 'loader': cuda_libs.preload()}))"
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
    assert all("/opt/venv/" in where for where in result["loader"].values()), result
