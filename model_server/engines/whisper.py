"""Whisper through faster-whisper (CTranslate2)."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from model_server import cuda_libs
from model_server.audio import SAMPLE_RATE
from model_server.engines.base import Decoding, WeightsNotFound, check_readable, hub_offline
from model_server.engines.batched_pipeline import resegmented, with_fallback
from model_server.gpu_memory import GpuBatchLimit, read_dims
from schemas.model_server import TranscribeOptions
from schemas.transcribe import Segment, Word

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger("model_server")
PACKAGE_PREFIX = "package:"
FALLBACKS = {
    "float16": ("float32",),
    "bfloat16": ("float16", "float32"),
    "int8_float16": ("int8_float32", "int8", "float32"),
    "int8_bfloat16": ("int8_float16", "int8_float32", "int8"),
}
REQUIRED_FILES = ("config.json", "model.bin")
WINDOW_S = 30  # Whisper's window: audio of at most this length decodes in one pass, and may share a batch
TAIL_SPEECH_FRAMES = 10  # 50-ms frames of speech in a row after the last segment: 0.5 s
TAIL_MARGIN_S = 0.3  # after the last segment's end, where a word's tail may still sound
# faster-whisper's thresholds for a window that the sequential decode would decode again at the next temperature
# (or drop as silence): a batched result that crosses one is decoded again alone, the sequential way.
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0


class BatchKey(NamedTuple):
    """What decodes must share to go in one batch."""

    task: str
    language: str
    prompt: str | None
    hotwords: str | None
    beam_size: int
    temperature: float


def resolve_weights(spec: str) -> Path:
    """The CTranslate2 model directory named by ``spec``: a path, or ``package:<module>`` for a pip-installed model."""
    directory = _package_dir(spec.removeprefix(PACKAGE_PREFIX)) if spec.startswith(PACKAGE_PREFIX) else Path(spec)
    check_readable(directory)
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        absent = "" if directory.is_dir() else "directory does not exist; "
        raise WeightsNotFound(f"weights not found: looked in {directory} ({absent}{'/'.join(missing)} missing)")
    return directory


def _package_dir(module_name: str) -> Path:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsNotFound(f"weights not found: package {module_name!r} is not installed ({exc})") from exc
    get_model_path = getattr(module, "get_model_path", None)
    if get_model_path is None:
        raise WeightsNotFound(f"weights not found: package {module_name!r} has no get_model_path()")
    return Path(get_model_path())


def supported_compute_type(wanted: str) -> str:
    """`wanted` when this GPU supports it, else the closest it does (float16 and int8_float16 need compute
    capability 7.0), with a log line saying so."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cuda")
    if wanted in supported or wanted in ("auto", "default"):
        return wanted
    for fallback in FALLBACKS.get(wanted, ()):
        if fallback in supported:
            log.warning(
                "compute_type %s is not supported by this GPU (%s): using %s", wanted, sorted(supported), fallback
            )
            return fallback
    return "default"


class WhisperEngine:
    def __init__(
        self,
        weights: str,
        *,
        device: str,
        compute_type: str,
        concurrency: int = 1,
        cpu_threads: int = 0,
    ) -> None:
        directory = resolve_weights(weights)
        hub_offline()
        from faster_whisper import WhisperModel  # here, after hub_offline(): it imports huggingface_hub

        if device == "cuda":
            cuda_libs.preload()
            compute_type = supported_compute_type(compute_type)
        # num_workers is what lets several transcriptions run at once; with 1 they would queue inside CTranslate2.
        self._model: WhisperModel = WhisperModel(
            str(directory),
            device=device,
            compute_type=compute_type,
            num_workers=max(1, concurrency),
            cpu_threads=cpu_threads,
            local_files_only=True,
        )
        self.device = self._model.model.device
        self.compute_type = self._model.model.compute_type
        if self.device == "cuda":
            # cuBLAS is opened at the first GPU computation, not at load: decode half a second of silence now, so a
            # broken GPU setup fails the start (and says why) instead of every request.
            pieces, _ = self._model.transcribe(np.zeros(8000, dtype=np.float32), beam_size=1, language="en")
            list(pieces)
        self._gpu_limit = _gpu_limit(directory, self.device, self.compute_type, max(1, concurrency))

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        """faster-whisper with exactly the options given (the caller merged the model's configured decoding,
        faster-whisper's defaults unless configured otherwise, with what the request asked for)."""
        if _batched_mode(audio, options):
            return self._decode_batched(audio, options)
        pieces, info = self._sequential(audio, options)
        return _decoding(pieces, info, options)

    def _sequential(self, audio: np.ndarray, options: TranscribeOptions, **overrides: Any) -> tuple[Any, Any]:
        """faster-whisper's sequential decode with these options (and `overrides` of its own arguments)."""
        arguments: dict[str, Any] = {
            "task": options.task,
            "language": options.language,
            "initial_prompt": options.prompt,
            "temperature": options.temperature,
            "beam_size": options.beam_size,
            "condition_on_previous_text": options.condition_on_previous_text,
            "vad_filter": options.vad_filter,
            "word_timestamps": options.word_timestamps,
            "hotwords": options.hotwords,
        }
        return self._model.transcribe(audio, **(arguments | overrides))

    def batch_key(self, audio: np.ndarray, options: TranscribeOptions) -> Hashable | None:
        """What a decode must share with others to be batched with them, or None: it goes alone (longer than one
        window, word timestamps, VAD, a language still to detect, the long-recording batched mode)."""
        if _batched_mode(audio, options) or options.word_timestamps or options.vad_filter or options.offset:
            return None
        if not 0 < len(audio) <= WINDOW_S * SAMPLE_RATE:
            return None
        language = options.language if self._model.model.is_multilingual else "en"
        if language is None:
            return None
        first = options.temperature[0] if options.temperature else 0.0
        return BatchKey(options.task, language, options.prompt, options.hotwords, options.beam_size, first)

    def batch_limit(self, key: Hashable, wanted: int) -> int:
        """The largest batch of `key`'s decodes that fits on the GPU now (`wanted` on the CPU, or unreadable)."""
        return self._sized(wanted, key.beam_size) if isinstance(key, BatchKey) else wanted

    def _sized(self, wanted: int, beam_size: int) -> int:
        return self._gpu_limit(wanted, beam_size) if self._gpu_limit is not None else wanted

    def decode_batch(self, audios: Sequence[np.ndarray], options: TranscribeOptions) -> list[Decoding | None]:
        """Short recordings of one `batch_key`, decoded as one batch: each in a window of its own, one encoder
        pass and one beam search for all. A result that the sequential decode would have decoded again at a higher
        temperature (or dropped as silence) is None: its caller decodes it alone, so batching changes no text
        that the thresholds would have changed. Speech left after a recording's last segment is decoded in a second
        batch."""
        found = self._batch_pass(audios, [0.0] * len(audios), options)
        # A second pass over what follows the last segment where that is speech (see _speech_after).
        tails = [
            n
            for n, (audio, mine) in enumerate(zip(audios, found, strict=True))
            if mine and _speech_after(audio, mine[-1].end)
        ]
        if tails:
            rest = self._batch_pass([audios[n] for n in tails], [found[n][-1].end for n in tails], options)
            for n, more in zip(tails, rest, strict=True):
                found[n] += more
        results: list[Decoding | None] = []
        for audio, mine in zip(audios, found, strict=True):
            if any(_would_retry(piece) for piece in mine) or (not mine and _speech_after(audio, 0.0)):
                results.append(None)
                continue
            results.append(
                Decoding(
                    options.language or "en",
                    len(audio) / SAMPLE_RATE,
                    1.0,
                    (_segment(k, piece, False) for k, piece in enumerate(mine)),
                )
            )
        return results

    def _batch_pass(
        self, audios: Sequence[np.ndarray], starts: Sequence[float], options: TranscribeOptions
    ) -> list[list[Any]]:
        """One batched decode of each recording from its `starts` second on: its faster-whisper segments, timed
        from the recording's start."""
        from faster_whisper import BatchedInferencePipeline

        # Each recording at the start of a 30-s slot of one long array: its window is its slot (from `start`), and a
        # segment's `seek` (10-ms frames from the array's start) says whose it is.
        slot = WINDOW_S * SAMPLE_RATE
        joined = np.zeros(slot * len(audios), dtype=np.float32)
        clips = []
        for n, (audio, start) in enumerate(zip(audios, starts, strict=True)):
            joined[n * slot : n * slot + len(audio)] = audio
            clips.append({"start": n * WINDOW_S + start, "end": n * WINDOW_S + len(audio) / SAMPLE_RATE})
        pieces, _ = BatchedInferencePipeline(self._model).transcribe(
            joined,
            task=options.task,
            language=options.language if self._model.model.is_multilingual else "en",
            initial_prompt=options.prompt,
            temperature=options.temperature[:1],
            beam_size=options.beam_size,
            hotwords=options.hotwords,
            batch_size=len(audios),
            without_timestamps=False,
            clip_timestamps=clips,
        )
        found: list[list[Any]] = [[] for _ in audios]
        for piece in pieces:
            n = min(len(audios) - 1, piece.seek // (WINDOW_S * 100))
            shift = n * WINDOW_S
            found[n].append(dataclasses.replace(_shifted(piece, -shift), seek=0))
        return found

    def _decode_batched(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        """faster-whisper's batched pipeline: the audio cut at pauses by its VAD into chunks of at most 30 s,
        `batch_size` chunks through the encoder and the decoder at once; segments come in order as each batch ends.
        Unlike the sequential decode, no chunk sees the previous one's text; a chunk is decoded at the first
        temperature, and one that crosses the sequential decode's thresholds is decoded again alone, with the
        whole temperature ladder (batched_pipeline.with_fallback)."""
        from faster_whisper import BatchedInferencePipeline

        # One pipeline per decode: it keeps per-transcription state, and it is a thin wrapper round the model.
        pieces, info = BatchedInferencePipeline(self._model).transcribe(
            audio,
            task=options.task,
            language=options.language,
            initial_prompt=options.prompt,
            temperature=options.temperature[:1],
            beam_size=options.beam_size,
            hotwords=options.hotwords,
            # As many chunks as asked for, or as fit in the GPU's free memory now.
            batch_size=self._sized(options.batch_size, options.beam_size),
            # One text per chunk, cut into segments from its words (batched_pipeline.py): decoding with timestamps
            # loses the last sentence of most chunks, and one segment per chunk would make subtitles 30 s long.
            without_timestamps=True,
            word_timestamps=True,
            vad_filter=True,
        )
        tokenizer = self._model.hf_tokenizer
        language = options.language or info.language

        def again(start_s: float, end_s: float) -> Iterator[Any]:
            stretch = audio[int(start_s * SAMPLE_RATE) : int(end_s * SAMPLE_RATE)]
            # From the second temperature (the first was the batch's), without the VAD (the chunk is speech).
            alone, _ = self._sequential(
                stretch,
                options,
                language=language,
                temperature=options.temperature[1:],
                vad_filter=False,
                word_timestamps=True,
            )
            return (_shifted(piece, start_s) for piece in alone)

        # Each chunk's `seek` is where it starts, in 10-ms frames of the recording, as a sequential window's is: the
        # pipeline's counts in audio with the silences taken out (and came out 0 for every chunk of a 66-s recording
        # here); a job checkpoints where it changes (actors/jobs/checkpoints.py).
        chunks = (dataclasses.replace(piece, seek=round(piece.start * 100)) for piece in pieces)
        # With one temperature there is no ladder to climb: the sequential decode keeps such a chunk too.
        settled = with_fallback(chunks, info.duration, _would_retry, again) if options.temperature[1:] else chunks
        return _decoding(
            resegmented(settled, lambda text: tokenizer.encode(text, add_special_tokens=False).ids), info, options
        )


def _gpu_limit(directory: Path, device: str, compute_type: str, runners: int) -> GpuBatchLimit | None:
    """On a GPU: batches sized by its free memory (model_server/gpu_memory.py), the estimate logged at start."""
    if device != "cuda":
        return None
    from framework import nvml

    free_mb = nvml.free_memory_reader()
    try:
        dims = read_dims(directory / "model.bin")
    except (OSError, ValueError) as exc:
        log.warning("batch sizes not taken from GPU memory: %s", exc)
        return None
    if free_mb is None:
        log.warning("batch sizes not taken from GPU memory: NVML cannot read this server's GPU")
        return None
    limit = GpuBatchLimit(dims, compute_type, runners, free_mb)
    free, window, fits = free_mb(), limit.window_mb(5), limit.fits(5)
    log.info(
        "batches sized by free GPU memory: %s MB free now, ~%.0f MB a 30-s window at beam 5: %s a batch (%d workers)",
        free,
        window,
        fits,
        runners,
        extra={"free_mb": free, "window_mb": round(window), "fits": fits},
    )
    return limit


def _batched_mode(audio: np.ndarray, options: TranscribeOptions) -> bool:
    """Whether this recording goes through the long-recording batched mode: asked for (or the model's rule, which
    sets `batch_size` on every request and `batch_from_s` for the length from which it applies)."""
    return options.batch_size > 0 and len(audio) / SAMPLE_RATE >= options.batch_from_s


def _decoding(pieces: Any, info: Any, options: TranscribeOptions) -> Decoding:
    """faster-whisper's lazy segments and transcription info, sequential or batched, as the server takes them."""
    return Decoding(
        info.language,
        info.duration,
        round(float(info.language_probability), 4),
        (_segment(n, piece, options.word_timestamps) for n, piece in enumerate(pieces)),
    )


def _speech_after(audio: np.ndarray, at_s: float) -> bool:
    """Whether speech follows the last segment decoded: half a second of it without a break, starting 0.3 s or more
    after that segment's end. Whisper, given a window that ends in the middle of a sentence, may close its text at the
    last segment it could time and leave the rest to a next window; in a batch there is none (measured: 2 of 16
    dictation-length clips lost their last sentence), so such a recording's rest is decoded in a second batch.
    Speech: 50-ms frames above a tenth of the recording's loud level (its 95th percentile); a breath or a click is
    not half a second of it."""
    frame = SAMPLE_RATE // 20
    levels = np.sqrt(np.mean(audio[: len(audio) // frame * frame].reshape(-1, frame) ** 2, axis=1))
    if len(levels) == 0:
        return False
    loud = float(np.percentile(levels, 95))
    after = levels[max(0, int((at_s + TAIL_MARGIN_S) * 20)) :] > 0.1 * loud
    longest = run = 0
    for speech in after:
        run = run + 1 if speech else 0
        longest = max(longest, run)
    return loud > 0 and longest >= TAIL_SPEECH_FRAMES


def _shifted(piece: Any, by: float) -> Any:
    """A faster-whisper segment (and its words, and its window's `seek`) `by` seconds later."""
    words = [dataclasses.replace(w, start=w.start + by, end=w.end + by) for w in piece.words or []]
    seek = piece.seek + round(by * 100)
    return dataclasses.replace(piece, start=piece.start + by, end=piece.end + by, words=words or piece.words, seek=seek)


def _would_retry(piece: Any) -> bool:
    return bool(piece.compression_ratio > COMPRESSION_RATIO_THRESHOLD or piece.avg_logprob < LOG_PROB_THRESHOLD)


def _segment(number: int, piece: Any, with_words: bool) -> tuple[Segment, list[Word] | None]:
    segment = Segment(
        id=number,
        start=round(float(piece.start), 3),
        end=round(float(piece.end), 3),
        text=piece.text,
        avg_logprob=float(piece.avg_logprob),
        no_speech_prob=float(piece.no_speech_prob),
        seek=piece.seek,
        tokens=list(piece.tokens),
        temperature=None if piece.temperature is None else float(piece.temperature),
        compression_ratio=float(piece.compression_ratio),
    )
    if not with_words:
        return segment, None
    words = [
        Word(
            word=w.word,
            start=round(float(w.start), 3),
            end=round(float(w.end), 3),
            probability=round(float(w.probability), 4),
        )
        for w in piece.words or []
    ]
    return segment, words
