"""Turn uploaded bytes in any container/codec PyAV reads into what the engines expect."""

from __future__ import annotations

import io

import numpy as np
from faster_whisper import decode_audio

SAMPLE_RATE = 16_000


class AudioDecodeError(ValueError):
    """The upload is not audio PyAV can decode."""


def decode(data: bytes, filename: str = "audio") -> np.ndarray:
    """16 kHz mono float32 samples; stereo is mixed down and any sample rate resampled."""
    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=SAMPLE_RATE)
    # PyAV fails in many ways on bad input: FFmpegError subclasses for unreadable bytes, IndexError when the
    # container holds no audio stream, and others for truncated streams. To the client they all mean the same.
    except Exception as exc:
        raise AudioDecodeError(f"could not decode audio (file {filename!r}): {_reason(exc)}") from exc
    return np.asarray(samples, dtype=np.float32)


def _reason(exc: Exception) -> str:
    if isinstance(exc, IndexError):
        return "no audio stream found"
    # FFmpeg errors carry the readable text in strerror; str() adds an errno and a '<none>' filename.
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
