"""NVIDIA Parakeet TDT through onnx-asr (ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from containers.model_server.audio import SAMPLE_RATE
from containers.model_server.engines.base import Decoding, WeightsNotFound, check_readable
from schemas.model_server import TranscribeOptions
from schemas.transcribe import Segment, Word

ONNX_ASR_MODEL = "nemo-parakeet-tdt-0.6b-v2"
# onnx-asr's file names for a NeMo TDT export; the .onnx files may also come as int8-quantised variants.
ENCODER, DECODER, VOCAB = "encoder-model", "decoder_joint-model", "vocab.txt"


def _check_directory(directory: Path) -> str | None:
    """The quantisation to ask onnx-asr for (None or "int8"), or WeightsNotFound naming what is missing."""
    if not directory.is_dir():
        raise WeightsNotFound(f"weights not found: {directory} is not a directory (parakeet needs a model directory)")
    check_readable(directory)
    full = all((directory / f"{name}.onnx").is_file() for name in (ENCODER, DECODER))
    int8 = all((directory / f"{name}.int8.onnx").is_file() for name in (ENCODER, DECODER))
    missing = [] if full or int8 else [f"{ENCODER}.onnx", f"{DECODER}.onnx"]
    if not (directory / VOCAB).is_file():
        missing.append(VOCAB)
    if missing:
        raise WeightsNotFound(f"weights not found: looked in {directory} ({'/'.join(missing)} missing)")
    return None if full else "int8"


class ParakeetEngine:
    def __init__(self, weights: str, *, device: str, compute_type: str) -> None:
        directory = Path(weights)
        quantization = _check_directory(directory)
        try:
            import onnx_asr
        except ImportError as exc:
            raise WeightsNotFound(
                f"the parakeet engine needs the onnx-asr package, which is not installed ({exc})"
            ) from exc
        providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        options: dict[str, Any] = {"providers": providers}
        if quantization:
            # Passed only when needed: the keyword is absent from older onnx-asr releases.
            options["quantization"] = quantization
        self._model = onnx_asr.load_model(ONNX_ASR_MODEL, str(directory), **options)
        self.device = device
        self.compute_type = quantization or "float32"

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        # Parakeet v2 is English-only and transcribes only; Whisper's decoding options do not apply to it.
        duration = len(audio) / SAMPLE_RATE

        def pieces() -> Iterator[tuple[Segment, list[Word] | None]]:
            text = str(self._model.recognize(audio, sample_rate=SAMPLE_RATE)).strip()
            if text:
                yield Segment(id=0, start=0.0, end=round(duration, 3), text=text), None

        return Decoding("en", duration, None, pieces())
