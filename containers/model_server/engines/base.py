"""What every engine offers the server, and the error for weights that are not there."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from schemas.model_server import TranscribeOptions
from schemas.transcribe import Segment, Word


@dataclass
class Transcript:
    segments: list[Segment]
    language: str  # detected, or the one asked for
    duration: float  # seconds of audio
    language_probability: float | None = None
    words: list[Word] | None = None  # when word timestamps were asked for


class WeightsNotFound(RuntimeError):
    """The weights are missing or incomplete; the message says where the server looked and what it lacked."""


class Engine(Protocol):
    # The device and compute type actually in use, which can differ from the requested ones ("auto", "int8").
    device: str
    compute_type: str

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript: ...


def check_readable(directory: Path) -> None:
    """A mounted weights directory the server's user cannot read looks empty: say so instead."""
    if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
        raise WeightsNotFound(
            f"weights not readable: {directory} cannot be read by the model server's user (uid {os.getuid()}); "
            "make the directory world-readable (chmod -R a+rX)"
        )
