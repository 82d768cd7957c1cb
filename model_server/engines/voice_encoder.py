"""A speaker embedding network in numpy: Resemblyzer's GE2E voice encoder (3-layer LSTM over 40-band mel frames,
a linear layer, ReLU, L2 norm; Apache-2.0, weights in its PyPI wheel), run without PyTorch.

Features follow the network's training: 16-kHz audio at -30 dBFS (raised only), 25-ms Hann windows every 10 ms,
power spectrum on 40 Slaney-normalised mel bands (no logarithm), 160 frames (1.6 s) per embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model_server.engines.torch_weights import load_state

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms: one frame
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s per embedding
TARGET_DBFS = -30.0
LAYERS = 3
EMBEDDING = 256  # the embedding's size
MEL_BLOCK = 6000  # frames (60 s) of spectrum at once


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear to 1 kHz, logarithmic above.
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


def mel_filters() -> np.ndarray:
    """(N_MELS, N_FFT // 2 + 1) triangular filters from 0 to 8 kHz, each normalised to unit area (Slaney)."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


_FILTERS = mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """(frames, N_MELS) power mel spectrogram, one frame per HOP samples (centred windows, zero padded); computed
    a minute at a time, so that an hour's spectrum (complex, 1 GB) is never held whole."""
    padded = np.pad(audio.astype(np.float32), N_FFT // 2)
    count = 1 + (len(padded) - N_FFT) // HOP if len(padded) >= N_FFT else 0
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, N_FFT), strides=(padded.strides[0] * HOP, padded.strides[0])
    )
    out = np.empty((count, N_MELS), np.float32)
    for start in range(0, count, MEL_BLOCK):
        block = np.fft.rfft(frames[start : start + MEL_BLOCK] * _WINDOW, axis=1)
        power = (block.real**2 + block.imag**2).astype(np.float32)
        out[start : start + MEL_BLOCK] = power @ _FILTERS.T
    return out


def volume_gain(audio: np.ndarray, speech: np.ndarray) -> float:
    """The gain that raises the audio (never lowers it) to TARGET_DBFS, measured over its speech frames (a boolean
    per HOP samples). Mel power grows with its square: the spectrum is scaled, not computed again."""
    usable = min(len(speech), len(audio) // HOP)
    energy = np.mean(np.square(audio[: usable * HOP].reshape(usable, HOP), dtype=np.float32), axis=1)
    heard = energy[speech[:usable]] if speech[:usable].any() else energy
    rms = float(np.sqrt(np.mean(heard, dtype=np.float64))) if len(heard) else 0.0
    if rms <= 0:
        return 1.0
    return max(1.0, float(10 ** ((TARGET_DBFS - 20 * np.log10(rms)) / 20)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


class VoiceEncoder:
    def __init__(self, weights: Path) -> None:
        state = load_state(weights)["model_state"]
        self.layers = [
            (
                np.ascontiguousarray(state[f"lstm.weight_ih_l{n}"].T),
                np.ascontiguousarray(state[f"lstm.weight_hh_l{n}"].T),
                (state[f"lstm.bias_ih_l{n}"] + state[f"lstm.bias_hh_l{n}"]).astype(np.float32),
            )
            for n in range(LAYERS)
        ]
        self.linear_w = np.ascontiguousarray(state["linear.weight"].T)
        self.linear_b = state["linear.bias"]

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """(batch, frames, N_MELS) → (batch, 256) L2-normalised embeddings (the last layer's final state)."""
        x = mels.astype(np.float32)
        batch, steps, _ = x.shape
        for w_ih, w_hh, bias in self.layers:
            hidden = w_hh.shape[0]
            inputs = x @ w_ih + bias  # all time steps at once: (batch, steps, 4 * hidden)
            h = np.zeros((batch, hidden), np.float32)
            c = np.zeros((batch, hidden), np.float32)
            out = np.empty((batch, steps, hidden), np.float32)
            for t in range(steps):
                gates = inputs[:, t] + h @ w_hh
                i, f, g, o = np.split(gates, 4, axis=1)  # PyTorch's gate order
                c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
                h = _sigmoid(o) * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(0.0, x[:, -1] @ self.linear_w + self.linear_b)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norms, 1e-8)
