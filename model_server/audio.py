"""Turn uploaded bytes in any container/codec PyAV reads into what the engines expect."""

from __future__ import annotations

import io
import itertools

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


def decode_channels(data: bytes, filename: str = "audio") -> list[np.ndarray]:
    """16 kHz float32 samples of each channel, in the recording's channel order."""
    try:
        channels = _decode_channels(data)
    except Exception as exc:
        raise AudioDecodeError(f"could not decode audio (file {filename!r}): {_reason(exc)}") from exc
    return channels


def _decode_channels(data: bytes) -> list[np.ndarray]:
    # Planar float keeps the channels apart: (channels, samples) per frame.
    chunks, count = _resampled(data, mono=False)
    if not chunks:
        return [np.zeros(0, dtype=np.float32) for _ in range(count)]
    joined = np.concatenate(chunks, axis=1).astype(np.float32)
    return [joined[n] for n in range(joined.shape[0])]


def _resampled(data: bytes, *, mono: bool) -> tuple[list[np.ndarray], int]:
    """The first audio stream at SAMPLE_RATE: 16-bit mono samples, or planar float per channel; and its channel
    count."""
    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        count = stream.codec_context.channels
        layout = "mono" if mono else stream.codec_context.layout.name
        resampler = av.AudioResampler(format="s16" if mono else "fltp", layout=layout, rate=SAMPLE_RATE)
        for frame in itertools.chain(container.decode(stream), [None]):  # None flushes what the resampler holds
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1) if mono else out.to_ndarray())
    return chunks, count


def _reason(exc: Exception) -> str:
    if isinstance(exc, IndexError):
        return "no audio stream found"
    # FFmpeg errors carry the readable text in strerror; str() adds an errno and a '<none>' filename.
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _decode(data: bytes) -> np.ndarray:
    # PyAV directly rather than faster_whisper.decode_audio: the Parakeet image carries no faster-whisper.
    chunks, _ = _resampled(data, mono=True)
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0
