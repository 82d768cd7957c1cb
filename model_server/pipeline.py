"""One transcription from uploaded bytes to a TranscriptionResult, segment by segment; blocking, so it runs in a
worker thread. `stream` yields the frames of ``POST /transcribe?stream=true``; `transcribe` is its last frame."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
import numpy as np

from model_server import audio
from model_server.engines import Engine
from model_server.engines.base import BadOption, Decoding
from schemas.formats import render_text
from schemas.model_server import Frame, OpenedFrame, ResultFrame, SegmentFrame, TranscribeOptions
from schemas.transcribe import Segment, Timing, TranscriptionResult, Word, cut, speaker_letter


def stream(
    engine: Engine, data: bytes, filename: str, options: TranscribeOptions, *, model_id: str, received_at: float
) -> Iterator[Frame]:
    """An OpenedFrame once the audio is decoded, a SegmentFrame per segment as the engine decodes it, then the
    ResultFrame. ``received_at`` is the
    request's perf_counter start, so server_s includes the upload and any queueing. Stop iterating and the
    decoding stops (at the end of the 30-s window under way)."""
    started = time.perf_counter()
    if options.diarize == "channels":
        channels = audio.decode_channels(data, filename)
        if len(channels) < 2:
            raise ChannelsError(
                f"diarize=channels needs a recording with one speaker per channel; {filename!r} has one channel"
            )
        samples = channels[0]
    else:
        samples = audio.decode(data, filename)
    decoded = time.perf_counter()
    whole = len(samples) / audio.SAMPLE_RATE
    yield OpenedFrame(duration=round(whole, 3))
    # A resumed decode: the audio before `offset` is done already; what follows keeps the recording's timestamps.
    skip = min(len(samples), int(options.offset * audio.SAMPLE_RATE))
    if options.diarize == "channels":
        decoding = _by_channel(engine, [channel[skip:] for channel in channels], options)
    else:
        decoding = engine.decode(samples[skip:], options)
    shift = skip / audio.SAMPLE_RATE
    segments: list[Segment] = []
    words: list[Word] | None = [] if options.word_timestamps else None
    for segment, segment_words in decoding.pieces:
        if shift:
            segment, segment_words = _shifted(segment, segment_words, shift)
        segments.append(segment)
        if words is not None and segment_words:
            words.extend(segment_words)
        yield SegmentFrame(segment=segment, words=segment_words, duration=round(whole, 3))
    finished = time.perf_counter()
    server_s = finished - received_at
    duration = whole
    result = TranscriptionResult(
        text="".join(segment.text for segment in segments).strip(),
        language=decoding.language,
        duration=round(duration, 3),
        segments=segments,
        words=words,
        language_probability=decoding.language_probability,
        task=options.task,
        model=model_id,
        timing=Timing(
            decode_s=round(decoded - started, 4),
            transcribe_s=round(finished - decoded, 4),
            server_s=round(server_s, 4),
            # The model proxy recomputes rtf from its own total; this one is the server's share.
            rtf=round(server_s / duration, 4) if duration > 0 else 0.0,
        ),
    )
    result.formatted = render_text(result, options.response_format)
    yield ResultFrame(result=result)


CHANNEL_PAUSE_S = 1.0  # a channel's segment is cut at a pause this long (the other voice's turn, usually)


class ChannelsError(BadOption):
    """diarize=channels on a recording with a single channel."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "diarize")


def _by_channel(engine: Engine, channels: list[np.ndarray], options: TranscribeOptions) -> Decoding:
    """Each channel transcribed on its own (VAD on: a channel is silent while the other speaks, and Whisper would
    make words of that silence), its segments labelled A, B, ... and all of them merged by start time (overlapping
    speech stays, as it was said)."""
    # Word timestamps, to cut a segment where its channel falls silent: Whisper's segments (VAD on) run across
    # the other voice's turns, which would put this voice where it is not heard.
    alone = msgspec.structs.replace(options, diarize="none", vad_filter=True, batch_size=0, word_timestamps=True)
    merged: list[tuple[float, int, Segment, list[Word] | None]] = []
    first = None
    for number, channel in enumerate(channels):
        decoding = engine.decode(channel, alone)
        first = first or decoding
        speaker = speaker_letter(number)
        for segment, words in decoding.pieces:
            runs = _at_pauses(words or [])
            for piece, run in zip(cut(segment, runs, 0), runs or [words or []], strict=True):
                kept = run if options.word_timestamps else None
                merged.append((piece.start, number, msgspec.structs.replace(piece, speaker=speaker), kept))
    merged.sort(key=lambda item: (item[0], item[1]))
    assert first is not None
    pieces = ((msgspec.structs.replace(segment, id=n), words) for n, (_, _, segment, words) in enumerate(merged))
    return Decoding(first.language, first.duration, first.language_probability, pieces)


def _at_pauses(words: list[Word]) -> list[list[Word]]:
    """Runs of words with no pause longer than CHANNEL_PAUSE_S between them."""
    runs: list[list[Word]] = []
    for word in words:
        if runs and word.start - runs[-1][-1].end <= CHANNEL_PAUSE_S:
            runs[-1].append(word)
        else:
            runs.append([word])
    return runs


def _shifted(segment: Segment, words: list[Word] | None, by: float) -> tuple[Segment, list[Word] | None]:
    """A segment (and its words) of a decode that began `by` seconds into the recording, in the recording's time."""
    moved = None
    if words is not None:
        moved = [msgspec.structs.replace(w, start=round(w.start + by, 3), end=round(w.end + by, 3)) for w in words]
    seek = None if segment.seek is None else segment.seek + round(by * 100)  # in 10-ms frames, as Whisper counts
    segment = msgspec.structs.replace(
        segment, start=round(segment.start + by, 3), end=round(segment.end + by, 3), seek=seek
    )
    return segment, moved


def transcribe(
    engine: Engine, data: bytes, filename: str, options: TranscribeOptions, *, model_id: str, received_at: float
) -> TranscriptionResult:
    for frame in stream(engine, data, filename, options, model_id=model_id, received_at=received_at):
        if isinstance(frame, ResultFrame):
            return frame.result
    raise RuntimeError("the decoding ended without a result")
