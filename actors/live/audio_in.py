"""A session's incoming audio, as its client sends it (base64 of PCM16 at 24 kHz, G.711 mu-law or A-law at 8 kHz),
turned into what the VAD and Whisper take: float32 samples at 16 kHz."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

import numpy as np

RATE = 16000  # what the VAD and Whisper take
Format = Literal["pcm16", "g711_ulaw", "g711_alaw"]  # the beta's names; the current API's are in FORMATS
# The current API's format types and the beta's names for the same thing.
FORMATS: dict[str, Format] = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
NAMES: dict[Format, str] = {name: kind for kind, name in FORMATS.items()}
SOURCE_RATE: dict[Format, int] = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}


class BadAudio(ValueError):
    """An append the session cannot take: not base64, or not whole samples."""


def _ulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32) / 32768.0


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float32) / 32768.0


G711 = {"g711_ulaw": _ulaw_table(), "g711_alaw": _alaw_table()}


@dataclass
class Decoder:
    """Appended chunks to 16-kHz samples, with the resampler's position carried across chunks (a chunk may end
    between two output samples)."""

    format: Format = "pcm16"
    _tail: np.ndarray | None = None  # the last (filtered) sample of the previous chunk: the seam is interpolated
    _raw_tail: np.ndarray | None = None  # the last sample as sent, for the low-pass across the seam
    _phase: float = 0.0  # where the next output sample falls, in input samples from the next chunk's first

    def decode(self, audio_b64: str) -> np.ndarray:
        try:
            raw = base64.b64decode(audio_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadAudio(f"audio is not valid base64: {exc}") from None
        if self.format == "pcm16":
            if len(raw) % 2:
                raise BadAudio("pcm16 audio must be whole 16-bit samples (an even number of bytes)")
            samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = G711[self.format][np.frombuffer(raw, dtype=np.uint8)]
        return self._resample(samples, SOURCE_RATE[self.format])

    def _resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """Linear interpolation to 16 kHz, after a two-tap low-pass where the source is faster (24 kHz holds
        frequencies that Whisper's 8-kHz band would fold back)."""
        if rate == RATE or len(samples) == 0:
            return samples
        if rate > RATE:
            before = self._raw_tail if self._raw_tail is not None else samples[:1]
            self._raw_tail = samples[-1:]
            samples = (np.concatenate([before, samples[:-1]]) + samples) / 2
        # joined[0] is the previous chunk's last sample (or this one's first), joined[1:] this chunk.
        joined = np.concatenate([self._tail if self._tail is not None else samples[:1], samples])
        step, last_index = rate / RATE, len(joined) - 1
        positions = np.arange(1 + self._phase, last_index + 1e-9, step)
        out = np.interp(positions, np.arange(len(joined)), joined).astype(np.float32)
        following = (positions[-1] if len(positions) else 1 + self._phase - step) + step
        # The next chunk's first sample will sit at index last_index + 1 of this one: the phase is relative to it
        # (between -1 and 0: between this chunk's last sample and the next one's first).
        self._phase = following - (last_index + 1)
        self._tail = joined[-1:]
        return out
