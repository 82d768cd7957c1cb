"""One transcription from uploaded bytes to a TranscriptionResult; blocking, so it runs in a worker thread."""

from __future__ import annotations

import time

from containers.model_server import audio
from containers.model_server.engines import Engine
from schemas.formats import render_text
from schemas.model_server import TranscribeOptions
from schemas.transcribe import Timing, TranscriptionResult


def transcribe(
    engine: Engine, data: bytes, filename: str, options: TranscribeOptions, *, model_id: str, received_at: float
) -> TranscriptionResult:
    """``received_at`` is the request's perf_counter start, so server_s includes the upload and any queueing."""
    started = time.perf_counter()
    samples = audio.decode(data, filename)
    decoded = time.perf_counter()
    decoded_text = engine.transcribe(samples, options)
    finished = time.perf_counter()
    server_s = finished - received_at
    duration = decoded_text.duration
    result = TranscriptionResult(
        text="".join(segment.text for segment in decoded_text.segments).strip(),
        language=decoded_text.language,
        duration=round(duration, 3),
        segments=decoded_text.segments,
        words=decoded_text.words,
        language_probability=decoded_text.language_probability,
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
    return result
