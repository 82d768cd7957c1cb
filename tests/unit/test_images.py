"""What goes into a CUDA image: the CPU image's requirements plus the CUDA ones, a replaced package taken out."""

from __future__ import annotations

from asrpro import images


def requirement_names(text: str) -> set[str]:
    return {
        line.split("==")[0].split("[")[0] for line in text.splitlines() if line.strip() and not line.startswith("#")
    }


def test_cuda_requirements_add_the_cuda_libraries_and_swap_what_they_replace() -> None:
    for family, added, removed in [
        ("whisper", {"nvidia-cublas-cu12", "nvidia-ml-py"}, set()),
        ("parakeet", {"onnxruntime-gpu"}, {"onnxruntime"}),
    ]:
        directory = images.FAMILY_DIRS[family]
        base = (directory / "requirements.txt").read_text()
        combined = images.cuda_requirements(base, (directory / "requirements-cuda.txt").read_text())
        assert requirement_names(combined) == (requirement_names(base) - removed) | added, family


def test_cuda_images_are_named_after_the_cpu_ones() -> None:
    from tests.unit.fakes import config

    cfg = config()
    assert images.model_image(cfg, "whisper-base", cuda=True) == images.model_image(cfg, "whisper-base") + "-cuda"
    assert images.family_image(cfg, "parakeet", cuda=True).endswith("-cuda")


def test_every_image_requirement_is_pinned_to_one_version_and_ctranslate2_needs_no_cudnn() -> None:
    """An old venv or a new release on the index cannot change what an image contains."""
    import re
    import tomllib

    from tests.conftest import REPO

    versions: dict[str, str] = {}
    for path in sorted((REPO / "containers").glob("*/requirements*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.-]+(\[[a-z,]+\])?==[0-9][0-9A-Za-z.+-]*", line), f"{path}: {line}"
                name, version = line.split("==")
                versions[name] = version
    assert tuple(int(p) for p in versions["ctranslate2"].split(".")) >= (4, 6, 3)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "ctranslate2>=4.6.3" in extras["local"] and "ctranslate2>=4.6.3" in extras["gpu"]


def test_cuda_images_are_labelled_with_what_their_engines_cuda_code_needs(tmp_path) -> None:
    import zipfile

    from framework.cuda_compat import LABEL_PTX, LABEL_RUNTIME, LABEL_SASS
    from tests.unit.test_cuda_compat import fatbin

    with zipfile.ZipFile(tmp_path / "ctranslate2-4.8.5-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as wheel:
        wheel.writestr(
            "ctranslate2.libs/libctranslate2-a7a60d30.so.4.8.5", b"ELF" + fatbin([(2, 80, (1, 7)), (1, 86, (8, 7))])
        )
    assert images.cuda_labels(tmp_path) == {LABEL_SASS: "80", LABEL_PTX: "86:8.7"}
    with zipfile.ZipFile(tmp_path / "onnxruntime_gpu-1.23.2-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as wheel:
        wheel.writestr("onnxruntime/capi/build_and_package_info.py", "cuda_version = '12.8'\n")
    (tmp_path / "ctranslate2-4.8.5-cp311-cp311-manylinux_2_28_x86_64.whl").unlink()
    assert images.cuda_labels(tmp_path) == {LABEL_RUNTIME: "12.8"}


def test_each_family_image_runs_its_models_engine() -> None:
    """The diarizer's image comes from the parakeet Dockerfile with its own ENGINE: what the image's ENGINE is
    set to (the build argument, else the Dockerfile's default) is the engine of the family's models."""
    import re

    from tests.unit.fakes import config

    cfg = config()
    for family in ("whisper", "parakeet", "diarizer"):
        path, build_args = images.dockerfile(family)
        text = path.read_text()
        (env,) = re.findall(r" ENGINE=(\S+) DEVICE=", text)  # the ENV line's
        arguments = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE)) | build_args
        engine = arguments["ENGINE"] if env == "${ENGINE}" else env
        assert {m.engine for m in cfg.models.values() if m.family == family} == {engine}, family
    assert images.dockerfile("diarizer")[0] == images.dockerfile("parakeet")[0]
