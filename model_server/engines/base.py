"""What every engine offers the server, and the error for weights that are not there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from schemas.model_server import TranscribeOptions
from schemas.transcribe import Segment, Word


@dataclass
class Decoding:
    """A transcription under way: what is known before the first segment, and the segments as they are decoded
    (lazily: stop iterating and the decoding stops)."""

    language: str
    duration: float
    language_probability: float | None
    pieces: Iterator[tuple[Segment, list[Word] | None]]


def hub_offline() -> None:
    """Weights come from a directory or an installed package, never from the network at request time.
    huggingface_hub (which faster_whisper and onnx-asr import) reads HF_HUB_OFFLINE once, when it is first
    imported, so the engines call this before importing their runtime, and not at import (no side effects)."""
    os.environ["HF_HUB_OFFLINE"] = "1"


class BadOption(ValueError):
    """An option the audio or the engine cannot honour (diarize=channels on one channel, a known speaker's sample
    that is not 2-10 s of audio): a 400 naming `param`."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class WeightsNotFound(RuntimeError):
    """The weights are missing or incomplete; the message says where the server looked and what it lacked."""


class Engine(Protocol):
    # The device and compute type actually in use, which can differ from the requested ones ("auto", "int8").
    device: str
    compute_type: str

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding: ...


def check_readable(directory: Path) -> None:
    """A mounted weights directory the server's user cannot read looks empty: say so instead."""
    if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
        raise WeightsNotFound(
            f"weights not readable: {directory} cannot be read by the model server's user (uid {os.getuid()}); "
            "make the directory world-readable (chmod -R a+rX)"
        )
