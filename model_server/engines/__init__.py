"""ASR engines, chosen by name. Each is imported only when asked for, so an image carries only its own runtime."""

from __future__ import annotations

from model_server.engines.base import Decoding, Engine, WeightsNotFound

KNOWN_ENGINES = ("faster-whisper", "onnx-asr", "resemblyzer")

__all__ = ["KNOWN_ENGINES", "Decoding", "Engine", "WeightsNotFound", "load_engine"]


def load_engine(
    engine: str,
    weights: str,
    device: str,
    compute_type: str,
    model_id: str,
    *,
    concurrency: int = 1,
    cpu_threads: int = 0,
) -> Engine:
    if engine == "faster-whisper":
        from model_server.engines import whisper

        return whisper.WhisperEngine(
            weights, device=device, compute_type=compute_type, concurrency=concurrency, cpu_threads=cpu_threads
        )
    if engine == "onnx-asr":
        from model_server.engines import parakeet

        return parakeet.ParakeetEngine(weights, device=device, compute_type=compute_type)
    if engine == "resemblyzer":
        from model_server.engines import diarizer

        return diarizer.DiarizerEngine(weights)
    raise ValueError(f"unknown engine {engine!r} for model {model_id!r}; known engines: {', '.join(KNOWN_ENGINES)}")
