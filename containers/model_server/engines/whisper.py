"""Whisper through faster-whisper (CTranslate2)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel

from containers.model_server.engines.base import Transcript, WeightsNotFound, check_readable
from schemas.transcribe import Segment

PACKAGE_PREFIX = "package:"
REQUIRED_FILES = ("config.json", "model.bin")


def resolve_weights(spec: str) -> Path:
    """The CTranslate2 model directory named by ``spec``: a path, or ``package:<module>`` for a pip-installed model."""
    directory = _package_dir(spec.removeprefix(PACKAGE_PREFIX)) if spec.startswith(PACKAGE_PREFIX) else Path(spec)
    check_readable(directory)
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        absent = "" if directory.is_dir() else "directory does not exist; "
        raise WeightsNotFound(f"weights not found: looked in {directory} ({absent}{'/'.join(missing)} missing)")
    return directory


def _package_dir(module_name: str) -> Path:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsNotFound(f"weights not found: package {module_name!r} is not installed ({exc})") from exc
    get_model_path = getattr(module, "get_model_path", None)
    if get_model_path is None:
        raise WeightsNotFound(f"weights not found: package {module_name!r} has no get_model_path()")
    return Path(get_model_path())


class WhisperEngine:
    def __init__(
        self,
        weights: str,
        *,
        device: str,
        compute_type: str,
        concurrency: int = 1,
        cpu_threads: int = 0,
        beam_size: int = 1,
    ) -> None:
        directory = resolve_weights(weights)
        # num_workers is what lets several transcriptions run at once; with 1 they would queue inside CTranslate2.
        self._model = WhisperModel(
            str(directory),
            device=device,
            compute_type=compute_type,
            num_workers=max(1, concurrency),
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self._beam_size = beam_size
        self.device = self._model.model.device
        self.compute_type = self._model.model.compute_type

    def transcribe(
        self, audio: np.ndarray, *, language: str | None, prompt: str | None, temperature: float
    ) -> Transcript:
        # One temperature rather than faster-whisper's fallback ladder keeps latency bounded; VAD is off because
        # it costs time and the callers send speech, not hours of silence.
        pieces, info = self._model.transcribe(
            audio,
            language=language,
            initial_prompt=prompt,
            temperature=temperature,
            beam_size=self._beam_size,
            vad_filter=False,
        )
        segments = [
            Segment(
                id=number,
                start=round(piece.start, 3),
                end=round(piece.end, 3),
                text=piece.text,
                avg_logprob=piece.avg_logprob,
                no_speech_prob=piece.no_speech_prob,
            )
            for number, piece in enumerate(pieces)
        ]
        return segments, info.language, info.duration
