"""Is an upload audio, and how long is it? Asked before a job's 202, so that a file that is not audio is refused at
once rather than after minutes in a queue. The jobs actor has PyAV (the gateway has no audio decoder): it opens the
container and decodes its first frame, since a header alone can lie about what follows; the length comes from the
container, or is left 0 (found by the decode) where the container does not say."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av

PROBE_FRAMES = 3  # frames decoded: enough to know the codec works, a few milliseconds of audio


class NotAudio(ValueError):
    """The upload is not audio PyAV can decode; the message says why."""


def probe(source: bytes | Path) -> float:
    """The recording's length in seconds (0.0 when its container does not say); NotAudio when it is not audio.
    `source`: the bytes, or a file holding them (an upload spooled to disk)."""
    opened = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    try:
        with av.open(opened, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NotAudio("it holds no audio stream")
            stream = container.streams.audio[0]
            decoded = 0
            for _ in container.decode(stream):
                decoded += 1
                if decoded >= PROBE_FRAMES:
                    break
            if not decoded:
                raise NotAudio("its audio stream holds no decodable frame")
            return _seconds(container, stream)
    except NotAudio:
        raise
    except Exception as exc:  # PyAV fails in many ways on bad input; to the caller they all mean the same
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise NotAudio(reason) from exc


def _seconds(container: Any, stream: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE: microseconds
    return 0.0
