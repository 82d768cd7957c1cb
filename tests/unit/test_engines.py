"""Engine logic that needs no model: where Parakeet cuts long audio, what its weights check asks for, the
compute-type fallback on a GPU that lacks float16, and the CUDA libraries' loader on a machine without them."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from model_server import cuda_libs
from model_server.audio import SAMPLE_RATE
from model_server.engines import parakeet, whisper
from model_server.engines.base import WeightsNotFound


def test_long_audio_is_cut_at_its_quiet_moments_short_audio_is_not() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.3, SAMPLE_RATE * 50).astype(np.float32)
    quiet_at = int(17.5 * SAMPLE_RATE)
    audio[quiet_at : quiet_at + SAMPLE_RATE // 5] = 0.0  # a pause inside the first search window
    ranges = parakeet.chunks(audio)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous, nothing lost
    assert all(end - start <= parakeet.MAX_CHUNK_S * SAMPLE_RATE for start, end in ranges)
    assert quiet_at <= ranges[0][1] <= quiet_at + SAMPLE_RATE // 5
    assert parakeet.chunks(audio[: SAMPLE_RATE * 10]) == [(0, SAMPLE_RATE * 10)]


def test_parakeet_weights_need_config_and_the_encoders_external_data(tmp_path: Path) -> None:
    for name in ("encoder-model.onnx", "decoder_joint-model.onnx", "vocab.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(WeightsNotFound) as err:
        parakeet._check_directory(tmp_path)
    assert "encoder-model.onnx.data" in str(err.value) and "config.json" in str(err.value)
    (tmp_path / "encoder-model.onnx.data").write_bytes(b"x")
    (tmp_path / "config.json").write_text("{}")
    assert parakeet._check_directory(tmp_path) is None


def test_compute_type_falls_back_to_what_the_gpu_supports(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_supported_compute_types", lambda device: {"float32", "int8_float32"})
    assert whisper.supported_compute_type("float16") == "float32"
    assert whisper.supported_compute_type("int8_float16") == "int8_float32"
    assert whisper.supported_compute_type("int8_float32") == "int8_float32"


def test_missing_cuda_libraries_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_libs, "SONAMES", ("libasrpro-no-such-lib.so.12",))
    probed = cuda_libs.probe()
    assert probed["libasrpro-no-such-lib.so.12"].startswith("missing")
    with pytest.raises(cuda_libs.CudaLibrariesMissing, match=r"\.\[gpu\]"):
        cuda_libs.preload()
