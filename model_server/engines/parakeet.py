"""NVIDIA Parakeet TDT through onnx-asr (ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model_server.audio import SAMPLE_RATE
from model_server.engines.base import Decoding, WeightsNotFound, check_readable, hub_offline
from schemas.model_server import TranscribeOptions
from schemas.transcribe import Segment, Word

ONNX_ASR_MODEL = "nemo-parakeet-tdt-0.6b-v2"
# onnx-asr's file names for a NeMo TDT export; the .onnx files may also come as int8-quantised variants.
ENCODER, DECODER, VOCAB, CONFIG = "encoder-model", "decoder_joint-model", "vocab.txt", "config.json"
# Parakeet's encoder attends over the whole input: onnx-asr's README says to cut long audio (its VAD needs a
# model download this offline server does not have), so audio longer than this is cut at its quietest moments.
MAX_CHUNK_S = 20.0
SEARCH_S = 5.0  # where in the last part of a chunk the quietest 100 ms is looked for


def _check_directory(directory: Path) -> str | None:
    """The quantisation to ask onnx-asr for (None or "int8"), or WeightsNotFound naming what is missing."""
    if not directory.is_dir():
        raise WeightsNotFound(f"weights not found: {directory} is not a directory (parakeet needs a model directory)")
    check_readable(directory)
    full = all((directory / f"{name}.onnx").is_file() for name in (ENCODER, DECODER))
    int8 = all((directory / f"{name}.int8.onnx").is_file() for name in (ENCODER, DECODER))
    missing = [] if full or int8 else [f"{ENCODER}.onnx", f"{DECODER}.onnx"]
    # The float32 encoder (2.4 GB) is beyond protobuf's 2 GB: its weights are an external file beside it.
    if full and not int8 and not (directory / f"{ENCODER}.onnx.data").is_file():
        missing.append(f"{ENCODER}.onnx.data")
    missing += [name for name in (VOCAB, CONFIG) if not (directory / name).is_file()]
    if missing:
        raise WeightsNotFound(f"weights not found: looked in {directory} ({'/'.join(missing)} missing)")
    return None if full else "int8"


def chunks(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges of at most MAX_CHUNK_S each, cut at the quietest 100 ms in the last SEARCH_S of each."""
    limit, search, frame = (int(x * SAMPLE_RATE) for x in (MAX_CHUNK_S, SEARCH_S, 0.1))
    ranges, start = [], 0
    while len(audio) - start > limit:
        window = audio[start + limit - search : start + limit]
        frames = window[: len(window) // frame * frame].reshape(-1, frame)
        quietest = int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1)))
        cut = start + limit - search + quietest * frame + frame // 2
        ranges.append((start, cut))
        start = cut
    ranges.append((start, len(audio)))
    return ranges


def _load_cuda_libraries() -> None:
    """onnxruntime-gpu's own loader for the CUDA wheels beside it (the CUDA image); a CPU onnxruntime cannot."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise RuntimeError(
            "onnxruntime has no CUDA provider here (the CPU build is installed): use the CUDA image "
            "(asrpro images build parakeet-tdt-0.6b --cuda) or run this model on the CPU"
        )
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is not None:
        preload()


def _sessions(model: object, depth: int = 4) -> list[Any]:
    """The ONNX Runtime sessions inside an onnx-asr model (its attributes, a few levels down)."""
    import onnxruntime

    if isinstance(model, onnxruntime.InferenceSession):
        return [model]
    if depth == 0 or not hasattr(model, "__dict__"):
        return []
    return [s for value in vars(model).values() for s in _sessions(value, depth - 1)]


class ParakeetEngine:
    def __init__(self, weights: str, *, device: str, compute_type: str) -> None:
        directory = Path(weights)
        quantization = _check_directory(directory)
        hub_offline()
        try:
            import onnx_asr
        except ImportError as exc:
            raise WeightsNotFound(
                f"the parakeet engine needs the onnx-asr package, which is not installed ({exc})"
            ) from exc
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            _load_cuda_libraries()
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        options: dict[str, Any] = {"providers": providers}
        if quantization:
            # Passed only when needed: the keyword is absent from older onnx-asr releases.
            options["quantization"] = quantization
        self._model = onnx_asr.load_model(ONNX_ASR_MODEL, str(directory), **options)
        if device != "cpu":
            # ONNX Runtime falls back to the CPU silently when CUDA cannot be used: refuse instead, so /health never
            # says cuda while the work runs on the CPU (and the GPU memory sits allocated for nothing).
            in_use = {p for session in _sessions(self._model) for p in session.get_providers()}
            if "CUDAExecutionProvider" not in in_use:
                raise RuntimeError(f"ONNX Runtime runs this model on {sorted(in_use) or 'no provider'}, not CUDA")
        self.device = device
        self.compute_type = quantization or "float32"

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        # Parakeet v2 is English-only and transcribes only; Whisper's decoding options do not apply to it.
        duration = len(audio) / SAMPLE_RATE

        def pieces() -> Iterator[tuple[Segment, list[Word] | None]]:
            number = 0
            for start, end in chunks(audio):
                text = str(self._model.recognize(audio[start:end], sample_rate=SAMPLE_RATE)).strip()
                if text:
                    at, until = round(start / SAMPLE_RATE, 3), round(end / SAMPLE_RATE, 3)
                    yield Segment(id=number, start=at, end=until, text=text), None
                    number += 1

        return Decoding("en", duration, None, pieces())
