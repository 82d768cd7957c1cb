"""Who spoke when: speaker turns of a recording, as a diarizer model server answers them.

Speech is found by frame energy, embedded every STEP_S in 1.6-s windows by the voice encoder, the windows
clustered (average-linkage agglomerative on cosine similarity, stopped at SAME_SPEAKER or held between
min_speakers and max_speakers, then refined against the clusters' centroids), and each speech frame takes the
speaker of the nearest window. Turns are answered as segments with a `speaker` and no text: the server's
contract, its streaming and everything around it stay those of a transcription. Overlapped speech gets one
speaker (the dominant one); docs/diarization.md says what that costs.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from model_server.audio import decode as decode_audio
from model_server.engines.base import BadOption, Decoding, WeightsNotFound, check_readable
from model_server.engines.voice_encoder import (
    EMBEDDING,
    HOP,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    VoiceEncoder,
    mel_frames,
    volume_gain,
)
from schemas.model_server import TranscribeOptions
from schemas.transcribe import MAX_SPEAKERS, Segment, speaker_letter

WEIGHTS_FILE = "pretrained.pt"
FRAME_S = HOP / SAMPLE_RATE
STEP_FRAMES = 40  # a window every 0.4 s
BATCH = 32  # windows through the network at once (memory: BATCH x 160 x 1024 floats per layer)
# Average cosine similarity of two clusters' windows above which they are one voice (measured on bench/conversation.py's
# voices: one voice's windows 0.78-0.83 on average, two distinct voices' 0.43-0.65).
SAME_SPEAKER = 0.68
MIN_TURN_S = 0.3  # a run shorter than this between two of the same speaker is theirs
SPEECH_DB = 35.0  # speech: frames within this many dB of the loud ones...
NOISE_DB = 6.0  # ...and this far above the noise floor
MIN_GAP_S = 0.3  # pauses shorter than this do not end a stretch of speech
BLIP_S = 0.08  # sounds shorter than this between silences are not speech
MIN_SPEAKER_WINDOWS = 4  # a speaker is heard in at least this many windows (about 2.8 s of speech)...$
MIN_SPEAKER_SHARE = 0.02  # ...and at least this share of them
# A cluster is a known speaker's when its centroid and their sample's embedding are at least this alike
# (bench/conversation.py's voices: one voice's sample against its cluster 0.85-0.95, another's 0.5-0.75).
KNOWN_SPEAKER = 0.8
REFERENCE_S = (1.5, 12.0)  # a known speaker's sample: OpenAI asks for 2 to 10 s, a little slack either side
MAX_CLUSTERED = 600  # windows clustered one by one; more are first pooled in runs (long recordings)
# Known speakers' voices kept by their sample's SHA-256: a client sends the same samples with every request, and
# embedding one (2 to 10 s) costs more than the rest of a short request. 32 voices of 1 KiB each at most.
VOICE_CACHE = 32


class DiarizerEngine:
    device = "cpu"
    compute_type = "float32"

    def __init__(self, weights: str) -> None:
        directory = Path(weights)
        check_readable(directory)
        path = directory / WEIGHTS_FILE if directory.is_dir() else directory
        if not path.is_file():
            raise WeightsNotFound(f"diarizer weights not found: {path} (asrpro models pull <diarizer id>)")
        self.encoder = VoiceEncoder(path)
        self._voices: OrderedDict[bytes, np.ndarray] = OrderedDict()  # sample's sha256 -> voice, least recent first
        self._voices_lock = threading.Lock()  # requests decode in worker threads

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        duration = len(audio) / SAMPLE_RATE
        known = self.known(options.speaker_names, options.speaker_samples)
        turns = self.turns(audio, options.min_speakers, options.max_speakers, known)
        pieces = (
            (Segment(id=n, start=start, end=end, text="", speaker=speaker), None)
            for n, (start, end, speaker) in enumerate(turns)
        )
        return Decoding(language="", duration=duration, language_probability=None, pieces=iter(pieces))

    def known(self, names: list[str], samples: list[str]) -> dict[str, np.ndarray]:
        """Each known speaker's voice: the mean embedding of their sample (2 to 10 s of audio, base64)."""
        if len(names) != len(samples):
            raise BadOption("known_speaker_names and known_speaker_references differ in number", "known_speaker_names")
        voices = {}
        for name, sample in zip(names, samples, strict=True):
            try:
                data = base64.b64decode(sample, validate=True)
            except ValueError as exc:
                raise BadOption(f"{name}'s reference is not audio: {exc}", "known_speaker_references") from None
            key = hashlib.sha256(data).digest()
            with self._voices_lock:
                voice = self._voices.get(key)
                if voice is not None:
                    self._voices.move_to_end(key)
            if voice is None:  # only samples that passed the checks below are kept: a bad one is refused each time
                voice = self._voice(name, data)
                with self._voices_lock:
                    self._voices[key] = voice
                    while len(self._voices) > VOICE_CACHE:
                        self._voices.popitem(last=False)
            voices[name] = voice
        return voices

    def _voice(self, name: str, data: bytes) -> np.ndarray:
        """A known speaker's voice from their sample's bytes: checked, embedded, averaged, L2-normalised."""
        try:
            audio = decode_audio(data, f"{name}'s reference")
        except ValueError as exc:  # AudioDecodeError is one
            raise BadOption(f"{name}'s reference is not audio: {exc}", "known_speaker_references") from None
        seconds = len(audio) / SAMPLE_RATE
        if not REFERENCE_S[0] <= seconds <= REFERENCE_S[1]:
            problem = f"{name}'s reference lasts {seconds:.1f} s: a sample of 2 to 10 s of their voice"
            raise BadOption(problem, "known_speaker_references")
        _, _, embeddings = self._embedded(audio, whole=True)
        mean = embeddings.mean(axis=0)
        voice = mean / max(float(np.linalg.norm(mean)), 1e-8)
        voice.setflags(write=False)  # shared by every request that sends this sample
        return voice

    def turns(
        self,
        audio: np.ndarray,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        known: dict[str, np.ndarray] | None = None,
    ) -> list[tuple[float, float, str]]:
        """(start, end, speaker) in time order; speakers named where their voice is a known one's, the others
        lettered by first appearance."""
        speech, starts, embeddings = self._embedded(audio)
        if not len(starts):
            return []
        labels = cluster(embeddings, min_speakers or 1, max_speakers or MAX_SPEAKERS)
        centres = np.array(starts) + WINDOW_FRAMES // 2
        return _turns(speech, centres, labels, _named(embeddings, labels, known or {}))

    def _embedded(self, audio: np.ndarray, *, whole: bool = False) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Its speech frames, the windows' starts, and their embeddings (none where nothing is heard; `whole`:
        one window at least, for a known speaker's sample)."""
        power = mel_frames(audio)
        speech = speech_frames(power)
        if not speech.any() and not whole:
            return speech, [], np.zeros((0, EMBEDDING))
        mels = power * np.float32(volume_gain(audio, speech) ** 2)
        starts = _windows(speech) if speech.any() else [0]
        embeddings = np.concatenate(
            [
                self.encoder.embed(np.stack([_frames(mels, s) for s in starts[i : i + BATCH]]))
                for i in range(0, len(starts), BATCH)
            ]
        )
        return speech, starts, embeddings


def speech_frames(power: np.ndarray) -> np.ndarray:
    """A boolean per frame: loud enough to be speech (relative to this recording's loud frames and its noise
    floor), pauses under MIN_GAP_S filled, blips under BLIP_S dropped."""
    level = 10 * np.log10(power.sum(axis=1) + 1e-10)
    loud, floor = np.percentile(level, 95), np.percentile(level, 10)
    speech = (level > loud - SPEECH_DB) & (level > floor + NOISE_DB)
    speech = _fill(speech, int(MIN_GAP_S / FRAME_S), value=False)  # short pauses become speech
    return _fill(speech, int(BLIP_S / FRAME_S), value=True)  # clicks become silence


def _fill(mask: np.ndarray, longest: int, *, value: bool) -> np.ndarray:
    """Runs of `value` no longer than `longest` frames, between runs of the other value, flipped."""
    out = mask.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[not value], mask == value, [not value]]).astype(np.int8)))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start <= longest and start > 0 and end < len(mask):
            out[start:end] = not value
    return out


def _windows(speech: np.ndarray) -> list[int]:
    """Window starts (frames), every STEP_FRAMES within each stretch of speech and not across the pauses between
    them (voices change at pauses: a window across one would hear two); a stretch too short for a window gets one
    centred on it."""
    count = len(speech)
    if count <= WINDOW_FRAMES:
        return [0]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    starts: list[int] = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if end - start >= WINDOW_FRAMES:
            starts += list(range(start, end - WINDOW_FRAMES + 1, STEP_FRAMES))
            if (end - WINDOW_FRAMES - start) % STEP_FRAMES:
                starts.append(end - WINDOW_FRAMES)  # the stretch's last 1.6 s too
        else:
            centre = (start + end) // 2
            starts.append(min(max(0, centre - WINDOW_FRAMES // 2), count - WINDOW_FRAMES))
    return sorted(set(starts))


def _frames(mels: np.ndarray, start: int) -> np.ndarray:
    window = mels[start : start + WINDOW_FRAMES]
    if len(window) < WINDOW_FRAMES:
        window = np.pad(window, ((0, WINDOW_FRAMES - len(window)), (0, 0)))
    return window


def cluster(embeddings: np.ndarray, least: int, most: int) -> np.ndarray:
    """A speaker label per embedding (0, 1, ...): average-linkage agglomerative clustering on cosine similarity,
    merging while two clusters are more alike than SAME_SPEAKER and more than `most` remain, never below `least`;
    then each embedding moves to its nearest centroid (twice)."""
    n = len(embeddings)
    if n == 1:
        return np.zeros(1, dtype=int)
    # Many windows: pooled in runs of consecutive ones first (one voice usually holds the floor a while).
    pool = max(1, -(-n // MAX_CLUSTERED))
    groups = np.arange(n) // pool
    pooled = np.stack([embeddings[groups == g].mean(axis=0) for g in range(groups[-1] + 1)])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-8)
    members = _agglomerate(pooled, least, most)[groups]
    members = _refined(embeddings, members)
    # Refined clusters may have become alike enough to be one voice: agglomerate them again, as wholes.
    for _ in range(3):
        ids = np.unique(members)
        if len(ids) <= max(least, 1):
            break
        merged = _merged(embeddings, members, ids, least, most)
        if len(np.unique(merged)) == len(ids):
            break
        members = _refined(embeddings, merged)
    # A handful of windows is a cough, laughter, two voices at once — not a speaker: its windows join the nearest.
    ids, counts = np.unique(members, return_counts=True)
    keep = counts >= max(MIN_SPEAKER_WINDOWS, MIN_SPEAKER_SHARE * n)
    if not keep.all() and max(least, 1) <= keep.sum():
        centroids = np.stack([embeddings[members == k].mean(axis=0) for k in ids[keep]])
        members = _refined(embeddings, ids[keep][np.argmax(embeddings @ centroids.T, axis=1)])
    _, labels = np.unique(members, return_inverse=True)
    return labels


def _merged(embeddings: np.ndarray, members: np.ndarray, ids: np.ndarray, least: int, most: int) -> np.ndarray:
    """Clusters joined by average linkage over their windows (the same rule as the first pass)."""
    # At most MAX_CLUSTERED windows of each (evenly spread): an hour's clusters hold thousands.
    spread = [embeddings[members == k][:: max(1, -(-int((members == k).sum()) // MAX_CLUSTERED))] for k in ids]
    similarity = np.array([[float((a @ b.T).mean()) for b in spread] for a in spread])
    sizes = np.array([(members == k).sum() for k in ids], dtype=float)
    groups = _agglomerate_matrix(similarity, sizes, least, most)
    return ids[groups][np.searchsorted(ids, members)]


def _refined(embeddings: np.ndarray, members: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Each embedding moved to its nearest cluster centroid, `rounds` times."""
    for _ in range(rounds):
        ids = np.unique(members)
        centroids = np.stack([embeddings[members == k].mean(axis=0) for k in ids])
        members = ids[np.argmax(embeddings @ centroids.T, axis=1)]
    return members


def _agglomerate(points: np.ndarray, least: int, most: int) -> np.ndarray:
    return _agglomerate_matrix((points @ points.T).astype(np.float64), np.ones(len(points)), least, most)


def _agglomerate_matrix(similarity: np.ndarray, sizes: np.ndarray, least: int, most: int) -> np.ndarray:
    """Average-linkage agglomeration of items with these pairwise (average) similarities and sizes: the index of
    the item each one's cluster is named by."""
    count = len(similarity)
    similarity = similarity.copy()
    sizes = sizes.copy()
    members = np.arange(count)
    np.fill_diagonal(similarity, -np.inf)
    clusters = count
    while clusters > max(1, least):
        flat = int(np.argmax(similarity))
        a, b = divmod(flat, count)
        if similarity[a, b] < SAME_SPEAKER and clusters <= most:
            break
        # Lance-Williams update for average linkage: b joins a.
        merged = (sizes[a] * similarity[a] + sizes[b] * similarity[b]) / (sizes[a] + sizes[b])
        similarity[a], similarity[:, a] = merged, merged
        similarity[a, a] = -np.inf
        similarity[b], similarity[:, b] = -np.inf, -np.inf
        sizes[a] += sizes[b]
        members[members == b] = a
        clusters -= 1
    return members


def _named(embeddings: np.ndarray, labels: np.ndarray, known: dict[str, np.ndarray]) -> dict[int, str]:
    """Clusters whose voice is a known speaker's: the most alike pairs first, each name and cluster used once, a
    pair only when as alike as one voice's windows are on average (KNOWN_SPEAKER)."""
    if not known:
        return {}
    ids = np.unique(labels)
    centroids = np.stack([embeddings[labels == k].mean(axis=0) for k in ids])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-8)
    names = list(known)
    likeness = centroids @ np.stack([known[n] for n in names]).T
    named: dict[int, str] = {}
    for flat in np.argsort(likeness, axis=None)[::-1]:
        row, col = divmod(int(flat), len(names))
        if likeness[row, col] < KNOWN_SPEAKER:
            break
        if int(ids[row]) not in named and names[col] not in named.values():
            named[int(ids[row])] = names[col]
    return named


def _turns(
    speech: np.ndarray, centres: np.ndarray, labels: np.ndarray, names: dict[int, str] | None = None
) -> list[tuple[float, float, str]]:
    """Each speech frame takes the label of the nearest window centre; runs of one label are turns, a run shorter
    than MIN_TURN_S between two of the same speaker goes to them; speakers lettered by first appearance."""
    frames = np.flatnonzero(speech)
    order = np.argsort(centres)
    centres, labels = centres[order], labels[order]
    nearest = np.clip(np.searchsorted(centres, frames), 1, len(centres) - 1) if len(centres) > 1 else None
    if nearest is None:
        frame_labels = np.full(len(frames), labels[0])
    else:
        left = np.abs(frames - centres[nearest - 1]) <= np.abs(centres[nearest] - frames)
        frame_labels = np.where(left, labels[nearest - 1], labels[nearest])
    runs: list[list[int]] = []  # [first frame, last frame, label]
    for frame, label in zip(frames.tolist(), frame_labels.tolist(), strict=True):
        if runs and runs[-1][2] == label and frame - runs[-1][1] <= int(MIN_GAP_S / FRAME_S):
            runs[-1][1] = frame
        else:
            runs.append([frame, frame, label])
    shortest = int(MIN_TURN_S / FRAME_S)
    for i in range(1, len(runs) - 1):
        if runs[i][1] - runs[i][0] < shortest and runs[i - 1][2] == runs[i + 1][2]:
            runs[i][2] = runs[i - 1][2]
    merged: list[list[int]] = []
    for run in runs:
        if merged and merged[-1][2] == run[2] and run[0] - merged[-1][1] <= int(MIN_GAP_S / FRAME_S) + 1:
            merged[-1][1] = run[1]
        else:
            merged.append(list(run))
    letters: dict[int, str] = {}
    taken = set((names or {}).values())  # a known speaker named "A" keeps it: the lettered ones go round
    turns = []
    for first, last, label in merged:
        if names and label in names:
            speaker = names[label]
        else:
            if label not in letters:
                used, n = taken | set(letters.values()), 0
                while speaker_letter(n) in used:
                    n += 1
                letters[label] = speaker_letter(n)
            speaker = letters[label]
        turns.append((round(first * FRAME_S, 2), round((last + 1) * FRAME_S, 2), speaker))
    return turns
