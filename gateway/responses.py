"""A transcription as HTTP answers it: OpenAI's json (text and usage), verbose_json (OpenAI's fields, the language
by name), text, srt and vtt; and the original asrpro app's json, which carries more."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from schemas.languages import language_name
from schemas.transcribe import ResponseFormat, Segment, TranscriptionResult, speaker_letter

_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def usage(result: TranscriptionResult) -> dict[str, Any]:
    """OpenAI's usage of a transcription billed by duration: the audio's seconds, whole ones as OpenAI gives."""
    return {"type": "duration", "seconds": math.ceil(round(result.duration, 2))}  # 11.0000001 s is 11


def render(
    result: TranscriptionResult, fmt: ResponseFormat, *, app_client: bool = False, logprobs: bool = False
) -> Response:
    if fmt in _MEDIA_TYPES:
        return PlainTextResponse(result.formatted or "", media_type=_MEDIA_TYPES[fmt])
    if fmt == "diarized_json":
        # OpenAI's TranscriptionDiarized.
        segments = [diarized_segment(s) for s in result.segments]
        diarized = {"task": "transcribe", "duration": result.duration, "text": result.text, "segments": segments}
        return JSONResponse({**diarized, "usage": usage(result)})
    if fmt == "json" and not app_client:
        plain: dict[str, Any] = {"text": result.text, "usage": usage(result)}  # OpenAI's json, exactly
        if logprobs:
            # OpenAI's logprobs of the text's tokens: here per word, the decoder's word probability (faster-whisper
            # gives no per-token log-probabilities without the words' alignment).
            plain["logprobs"] = [
                {
                    "token": w.word,
                    "bytes": list(w.word.encode()),
                    "logprob": round(math.log(max(w.probability or 0.0, 1e-9)), 6),
                }
                for w in result.words or []
            ]
        return JSONResponse(plain)
    if fmt == "json":
        # What the original asrpro app's json carried: language (its code), its probability, duration, segments
        # with a confidence (a probability: exp of the average log-probability), the model, time, the backend.
        return JSONResponse(
            {
                "text": result.text,
                "language": result.language,
                "language_probability": result.language_probability,
                "duration": result.duration,
                "segments": [
                    {"id": s.id, "start": s.start, "end": s.end, "text": s.text, "confidence": _confidence(s)}
                    for s in result.segments
                ],
                "model_id": result.model,
                "processing_time": result.timing.total_s,
                "backend": "asrpro",
                "usage": usage(result),
            }
        )
    body = msgspec.to_builtins(result)
    body.pop("formatted", None)
    if result.words is None:
        body.pop("words", None)  # OpenAI's verbose_json has words only when they were asked for
    for word in body.get("words") or []:
        if word.get("speaker") is None:
            word.pop("speaker", None)  # OpenAI's words have no speaker: only diarized ones say it
    # OpenAI names the language ("english"); its code stays in a field of its own.
    body["language"], body["language_code"] = language_name(result.language), result.language
    body["usage"] = usage(result)
    return JSONResponse(body)


def diarized_segment(segment: Segment) -> dict[str, Any]:
    """OpenAI's TranscriptionDiarizedSegment (also the stream's transcript.text.segment event)."""
    return {
        "type": "transcript.text.segment",
        "id": f"seg_{segment.id}",
        "start": segment.start,
        "end": segment.end,
        "speaker": segment.speaker or speaker_letter(0),
        "text": segment.text.strip(),
    }


def _confidence(segment: Segment) -> float | None:
    return round(math.exp(segment.avg_logprob), 4) if segment.avg_logprob is not None else None
