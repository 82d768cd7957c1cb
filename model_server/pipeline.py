"""One transcription from uploaded bytes to a TranscriptionResult, segment by segment; blocking, so it runs in a
worker thread. `stream` yields the frames of ``POST /transcribe?stream=true``; `transcribe` is its last frame."""

from __future__ import annotations

import time
from collections.abc import Iterator

from model_server import audio
from model_server.engines import Engine
from schemas.formats import render_text
from schemas.model_server import Frame, OpenedFrame, ResultFrame, SegmentFrame, TranscribeOptions
from schemas.transcribe import Segment, Timing, TranscriptionResult, Word


def stream(
    engine: Engine, data: bytes, filename: str, options: TranscribeOptions, *, model_id: str, received_at: float
) -> Iterator[Frame]:
    """An OpenedFrame once the audio is decoded, a SegmentFrame per segment as the engine decodes it, then the
    ResultFrame. ``received_at`` is the
    request's perf_counter start, so server_s includes the upload and any queueing. Stop iterating and the
    decoding stops (at the end of the 30-s window under way)."""
    started = time.perf_counter()
    samples = audio.decode(data, filename)
    decoded = time.perf_counter()
    yield OpenedFrame(duration=round(len(samples) / audio.SAMPLE_RATE, 3))
    decoding = engine.decode(samples, options)
    segments: list[Segment] = []
    words: list[Word] | None = [] if options.word_timestamps else None
    for segment, segment_words in decoding.pieces:
        segments.append(segment)
        if words is not None and segment_words:
            words.extend(segment_words)
        yield SegmentFrame(segment=segment, words=segment_words, duration=round(decoding.duration, 3))
    finished = time.perf_counter()
    server_s = finished - received_at
    duration = decoding.duration
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


def transcribe(
    engine: Engine, data: bytes, filename: str, options: TranscribeOptions, *, model_id: str, received_at: float
) -> TranscriptionResult:
    for frame in stream(engine, data, filename, options, model_id=model_id, received_at=received_at):
        if isinstance(frame, ResultFrame):
            return frame.result
    raise RuntimeError("the decoding ended without a result")
