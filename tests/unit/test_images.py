"""What goes into a CUDA image: the CPU image's requirements plus the CUDA ones, a replaced package taken out."""

from __future__ import annotations

from asrpro import images


def requirement_names(text: str) -> set[str]:
    return {
        line.split("==")[0].split("[")[0] for line in text.splitlines() if line.strip() and not line.startswith("#")
    }


def test_cuda_requirements_add_the_cuda_libraries_and_swap_what_they_replace() -> None:
    for family, added, removed in [
        ("whisper", {"nvidia-cublas-cu12"}, set()),
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
