"""Turn uploaded bytes in any container/codec PyAV reads into what the engines expect."""

from __future__ import annotations

import io

import av
import numpy as np

SAMPLE_RATE = 16_000


class AudioDecodeError(ValueError):
    """The upload is not audio PyAV can decode."""


def decode(data: bytes, filename: str = "audio") -> np.ndarray:
    """16 kHz mono float32 samples; stereo is mixed down and any sample rate resampled."""
    try:
        samples = _decode(data)
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


def _decode(data: bytes) -> np.ndarray:
    # PyAV directly rather than faster_whisper.decode_audio: the Parakeet image carries no faster-whisper.
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks = []
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):  # flush what the resampler still holds
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0
