"""Long speech with a known transcript, for benchmarks: paragraphs of plain prose (bench/prose.txt) spoken by
espeak-ng (voices and speeds varied) and joined by sox. The code under test must not care how long it is.

sox runs with -D: its default dither adds random noise whenever it resamples, so every run's audio differed, and
whisper-tiny's word error rate on the same speech moved by up to 0.08 between runs (measured on the live bench)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOICES = ["en-us", "en", "en-us+m3", "en+f2"]


def prose() -> list[str]:
    """Plain English sentences (bench/prose.txt: everyday topics, no figures or identifiers), fixed so that a
    measurement can be repeated. This repository's own docs were the text before: their identifiers and version
    numbers ("0.0.0", "N.N.N") are read by espeak-ng in ways no transcript writes, which put every decode's WER near
    0.44, and every docs edit changed the audio."""
    return [line.strip() for line in (REPO / "bench" / "prose.txt").read_text().splitlines() if line.strip()]


def recording(minutes: float, out: Path) -> Path:
    """`minutes` of speech as 16 kHz mono FLAC: espeak-ng paragraphs, voices and speeds varied, joined by sox."""
    return spoken(minutes, out)[0]


def spoken(minutes: float, out: Path) -> tuple[Path, str]:
    """`minutes` of speech as 16 kHz mono FLAC at `out`, and the text spoken."""
    parts, total, sentences, i, said = [], 0.0, prose(), 0, []
    while total < minutes * 60:
        paragraph = " ".join(sentences[(i * 8) % len(sentences) : (i * 8) % len(sentences) + 8])
        wav = out.parent / f"part{i}.wav"
        speed = ["-s", str(150 + 15 * (i % 3))]
        subprocess.run(["espeak-ng", "-v", VOICES[i % 4], *speed, "-w", str(wav), paragraph], check=True)
        total += float(subprocess.run(["soxi", "-D", str(wav)], capture_output=True, text=True, check=True).stdout)
        parts.append(str(wav))
        said.append(paragraph)
        i += 1
    subprocess.run(["sox", "-D", *parts, "-r", "16000", "-c", "1", str(out)], check=True)
    for part in parts:
        Path(part).unlink()
    return out, " ".join(said)


def utterances(count: int, out: Path) -> list[tuple[bytes, str]]:
    """`count` short recordings (two sentences each, about 5 to 15 s: what a dictation or a voice message is) as
    16 kHz mono WAV bytes, each with the text spoken; voices and speeds varied."""
    sentences, made = prose(), []
    for i in range(count):
        text = " ".join(sentences[(2 * i) % len(sentences) : (2 * i) % len(sentences) + 2])
        raw, wav = out / f"u{i}.raw.wav", out / f"u{i}.wav"
        speed = ["-s", str(150 + 15 * (i % 3))]
        subprocess.run(["espeak-ng", "-v", VOICES[i % 4], *speed, "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", str(wav), "trim", "0", "29"], check=True)
        made.append((wav.read_bytes(), text))
        raw.unlink()
        wav.unlink()
    return made
