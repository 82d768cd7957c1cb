"""Conversations with a known answer to "who spoke when", for the diarization tests and benchmark: turns of one or
two sentences by distinct espeak-ng voices (accent, variant, pitch and speed differ), pauses and some overlap
between them, mixed to mono — and the same conversation with each voice on a channel of its own — plus the
reference turns; and the diarization error rate of a hypothesis against them."""

from __future__ import annotations

import itertools
import random
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrpro.pcm import read_pcm16

RATE = 16000
# (voice, pitch, words per minute): espeak-ng voices the voice encoder tells apart (mean window similarity across
# voices <= 0.6, within one ~0.8). Several others are alike to it: en-us and en-gb-scotland+m3 score 0.75 against
# each other and 0.8 each against itself, and are merged.
VOICES = [
    ("en-029+m7", 50, 165),
    ("en+f2", 60, 170),
    ("en-us+klatt", 50, 160),
    ("en-us+f4", 75, 180),
    ("en+whisper", 50, 160),
]

# What the voices say: plain meeting talk, fixed here (not drawn from the docs, which change) so that a test's audio
# is the same from one commit to the next.
SENTENCES = [
    "Good morning everyone, thank you for joining the call today.",
    "Let us start with a quick review of last week's numbers.",
    "Sales were a little higher than we expected in the north.",
    "The new warehouse should be ready by the end of the month.",
    "I spoke to the supplier and they can deliver on Tuesday.",
    "We still need a decision about the budget for the spring campaign.",
    "Could you send me the report before the meeting on Friday?",
    "The customer asked whether we can change the colour of the boxes.",
    "I think we should hire two more people for the support team.",
    "The training session went well and most people found it useful.",
    "Our website was slow yesterday afternoon for about an hour.",
    "The engineers found the problem and fixed it quickly.",
    "Next week I will be travelling to visit the factory.",
    "Please remember that the office is closed on Monday.",
    "We have received three complaints about late deliveries.",
    "The price of paper has gone up again this quarter.",
    "I would like to move the planning meeting to Thursday morning.",
    "Everyone agreed that the new design looks much cleaner.",
    "The bank has approved the loan for the new machines.",
    "We should ask the team what they think before we decide.",
    "The contract with the cleaning company ends in June.",
    "I will write a short summary and share it with everyone.",
    "The printer on the second floor is broken again.",
    "Let us keep the presentation short and simple this time.",
    "The first results of the survey are very encouraging.",
    "We sold more umbrellas in one week than in the whole summer.",
    "The new manager starts on the first day of next month.",
    "I need the final numbers by the end of the day.",
    "The lunch on Friday will be in the garden if the weather is good.",
    "Thank you all, that is everything for today.",
]

Turn = tuple[float, float, str]  # start, end (seconds), speaker


@dataclass
class Conversation:
    mono: Path  # 16-kHz mono WAV: the voices mixed
    channels: Path  # one channel per voice, the same timing
    turns: list[Turn]  # the reference, in time order
    text: str  # what was said, in order of the turns

    @property
    def speakers(self) -> int:
        return len({speaker for _, _, speaker in self.turns})


def conversation(
    out: Path, *, speakers: int = 2, seconds: float = 60.0, seed: int = 0, overlap: float = 0.15
) -> Conversation:
    """A conversation of about `seconds`, `speakers` voices taking turns (in a shuffled order, never twice in a
    row), pauses of 0.2 to 0.8 s, and in a fraction `overlap` of the turns the next voice starts 0.3 to 0.8 s
    before the last one ends."""
    rng = random.Random(seed)
    sentences = list(SENTENCES)
    rng.shuffle(sentences)
    tracks = [np.zeros(0, np.float32) for _ in range(speakers)]
    turns: list[Turn] = []
    said: list[str] = []
    cursor, last, turn_start = 0.5, -1, 0.0
    with tempfile.TemporaryDirectory(prefix="conversation-") as scratch:
        for n in itertools.count():
            if cursor >= seconds:
                break
            who = rng.choice([s for s in range(speakers) if s != last]) if speakers > 1 else 0
            last = who
            text = " ".join(sentences[(2 * n) % len(sentences) : (2 * n) % len(sentences) + rng.choice((1, 1, 2))])
            speech = _spoken(text, VOICES[who], Path(scratch) / f"t{n}.wav")
            start = cursor
            if turns and rng.random() < overlap:
                start = max(turn_start + 0.5, cursor - rng.uniform(0.3, 0.8))
            turn_start = start
            at = int(start * RATE)
            track = tracks[who]
            if len(track) < at + len(speech):
                track = np.pad(track, (0, at + len(speech) - len(track)))
            track[at : at + len(speech)] += speech
            tracks[who] = track
            end = start + len(speech) / RATE
            turns.extend((start + a, start + b, _letter(who)) for a, b in _active(speech))
            said.append(text)
            cursor = end + rng.uniform(0.2, 0.8)
    length = max(len(t) for t in tracks) + RATE // 2
    stacked = np.stack([np.pad(t, (0, length - len(t))) for t in tracks])
    mono = stacked.sum(axis=0)
    peak = max(1e-6, float(np.abs(mono).max()), float(np.abs(stacked).max()))
    out.mkdir(parents=True, exist_ok=True)
    mono_path, channels_path = out / f"conversation{seed}.wav", out / f"conversation{seed}.channels.wav"
    _write(mono_path, mono[None, :] / peak * 0.9)
    _write(channels_path, stacked / peak * 0.9)
    turns.sort()
    return Conversation(mono=mono_path, channels=channels_path, turns=turns, text=" ".join(said))


def _letter(n: int) -> str:
    return "ABCDEFGH"[n]


def _spoken(text: str, voice: tuple[str, int, int], wav: Path) -> np.ndarray:
    """The text in that voice, 16-kHz float samples, the silence espeak-ng puts around it trimmed."""
    name, pitch, speed = voice
    subprocess.run(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text], check=True)
    samples = read_pcm16(wav, RATE).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples


def _active(speech: np.ndarray, pause: float = 0.25) -> list[tuple[float, float]]:
    """Where a voice is heard in its own turn (seconds from its start): 10-ms frames within 40 dB of its peak,
    pauses shorter than `pause` bridged — the reference is what was voiced, not the turn's whole span."""
    hop = RATE // 100
    frames = speech[: len(speech) // hop * hop].reshape(-1, hop)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    heard = np.flatnonzero(level > level.max() - 40)
    spans: list[list[float]] = []
    for frame in heard.tolist():
        if spans and frame * 0.01 - spans[-1][1] < pause:
            spans[-1][1] = (frame + 1) * 0.01
        else:
            spans.append([frame * 0.01, (frame + 1) * 0.01])
    return [(round(a, 3), round(b, 3)) for a, b in spans]


def _write(path: Path, channels: np.ndarray) -> None:
    """16-bit WAV of (channels, samples) floats in [-1, 1], through sox (raw in, WAV out)."""
    interleaved = (np.clip(channels.T, -1, 1) * 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", str(len(channels)), "-"]
    subprocess.run(["sox", *raw, str(path)], input=interleaved, check=True)


def error_rate(reference: list[Turn], hypothesis: list[Turn], collar: float = 0.25, step: float = 0.01) -> float:
    """Diarization error rate (NIST's definition, as pyannote.metrics computes it): missed speech, false alarm
    and speaker confusion over the reference's speech time, overlapped speech scored (each of its speakers),
    `collar` seconds around each reference boundary not scored, hypothesis speakers mapped to reference ones
    to minimise the error."""
    end = max([e for _, e, _ in reference + hypothesis] or [0.0])
    frames = int(np.ceil(end / step)) + 1
    ref_names = sorted({s for _, _, s in reference})
    hyp_names = sorted({s for _, _, s in hypothesis})
    ref = _activity(reference, ref_names, frames, step)
    hyp = _activity(hypothesis, hyp_names, frames, step)
    scored = np.ones(frames, bool)
    for start, stop, _ in reference:
        for edge in (start, stop):
            scored[max(0, int((edge - collar) / step)) : int(np.ceil((edge + collar) / step))] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    total = float(ref.sum())
    if total == 0:
        return 0.0 if hyp.sum() == 0 else 1.0
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    missed = np.maximum(0, n_ref - n_hyp).sum()
    false_alarm = np.maximum(0, n_hyp - n_ref).sum()
    # Confusion with the best mapping: the most frames on which a mapped pair is active together.
    together = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (ref speakers, hyp speakers)
    best = 0
    small, large = sorted((len(ref_names), len(hyp_names)))
    for pairing in itertools.permutations(range(large), small):
        if len(ref_names) <= len(hyp_names):
            score = sum(together[r, h] for r, h in enumerate(pairing))
        else:
            score = sum(together[r, h] for h, r in enumerate(pairing))
        best = max(best, score)
    confusion = np.minimum(n_ref, n_hyp).sum() - best
    return float((missed + false_alarm + confusion) / total)


def _activity(turns: list[Turn], names: list[str], frames: int, step: float) -> np.ndarray:
    active = np.zeros((len(names), frames), bool)
    for start, stop, speaker in turns:
        active[names.index(speaker), round(start / step) : round(stop / step)] = True
    return active


def voice_sample(text: str, voice: tuple[str, int, int], out: Path) -> Path:
    """`text` said in `voice` as a 16-kHz mono WAV at `out` (a known speaker's reference sample)."""
    with tempfile.TemporaryDirectory(prefix="voice-") as scratch:
        speech = _spoken(text, voice, Path(scratch) / "raw.wav")
    _write(out, speech[None, :])
    return out
