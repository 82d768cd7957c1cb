"""Voice activity as audio arrives: the Silero VAD model that faster-whisper ships (ONNX, offline), run on each new
32-ms window with its recurrent state carried over, and OpenAI's server_vad turn rule on top of its probabilities."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actors.live.audio_in import RATE

WINDOW = 512  # samples per VAD step at 16 kHz (32 ms), as the model was trained
CONTEXT = 64  # samples of the previous window the model sees before each one
WINDOW_MS = WINDOW * 1000 // RATE


MODEL_FILE = "silero_vad_v6.onnx"  # Silero VAD v6 (MIT), as faster-whisper ships it in its assets


def model_path() -> Path:
    """The Silero model: beside this module where an image put it (the compose stack's has onnxruntime, not
    faster-whisper), else faster-whisper's own copy, found without importing faster-whisper."""
    here = Path(__file__).parent / "assets" / MODEL_FILE
    if here.is_file():
        return here
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"no {MODEL_FILE}: install faster-whisper, or put it in {here.parent}")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / MODEL_FILE


@functools.cache
def _model() -> Any:
    """One ONNX session per process, shared by every session (each keeps its own recurrent state); one thread, as
    faster-whisper runs it: a 32-ms window is too small to split."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"], sess_options=options)


class SpeechProbability:
    """The probability of speech in each successive 32-ms window of a stream."""

    def __init__(self) -> None:
        self._fed = 0  # samples taken into windows so far
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)

    def feed(self, samples: np.ndarray) -> list[tuple[int, float]]:
        """(the window's first sample in the stream, its probability of speech) for each window completed."""
        self._pending = np.concatenate([self._pending, samples])
        whole = len(self._pending) // WINDOW
        if not whole:
            return []
        windows = self._pending[: whole * WINDOW].reshape(whole, WINDOW)
        self._pending = self._pending[whole * WINDOW :]
        session = _model()
        probabilities = []
        for window in windows:
            framed = np.concatenate([self._context, window])[None, :]
            out, self._h, self._c = session.run(None, {"input": framed, "h": self._h, "c": self._c})
            self._context = window[-CONTEXT:]
            probabilities.append((self._fed, float(np.asarray(out).reshape(-1)[0])))
            self._fed += WINDOW
        return probabilities


@dataclass
class TurnSettings:
    """OpenAI's server_vad: speech starts where the probability reaches `threshold`, stops after
    `silence_duration_ms` below it; the committed audio begins `prefix_padding_ms` before the start."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @property
    def silence_level(self) -> float:
        """Below this a window is silence (Silero's own hysteresis): speech goes on until the probability falls
        clearly below the threshold."""
        return max(0.0, self.threshold - 0.15)


@dataclass
class Turns:
    """Where speech starts and stops, in milliseconds of the session's audio, window after window."""

    settings: TurnSettings = field(default_factory=TurnSettings)
    speaking: bool = False
    started_ms: int = 0
    _silent_since_ms: int | None = None

    def step(self, at: int, probability: float) -> tuple[str, int] | None:
        """("started", ms) or ("stopped", ms) when the window beginning `at` ms into the stream changes the state,
        else None. The start is `prefix_padding_ms` early; the stop is the end of the silence that ended it."""
        settings = self.settings
        if not self.speaking:
            if probability >= settings.threshold:
                self.speaking, self._silent_since_ms = True, None
                self.started_ms = max(0, at - settings.prefix_padding_ms)
                return "started", self.started_ms
            return None
        if probability >= settings.silence_level:
            self._silent_since_ms = None
            return None
        if self._silent_since_ms is None:
            self._silent_since_ms = at
        if at + WINDOW_MS - self._silent_since_ms >= settings.silence_duration_ms:
            self.speaking = False
            return "stopped", at + WINDOW_MS
        return None
