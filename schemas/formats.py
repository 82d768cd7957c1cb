"""Renderings of a transcription (OpenAI's response_format values).

Kept beside the schemas because every front door (HTTP gateway, model proxy
for NATS clients, the model server itself) must render them identically.
"""

from __future__ import annotations

from schemas.transcribe import TranscriptionResult


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(result: TranscriptionResult) -> str:
    blocks = []
    for number, seg in enumerate(result.segments, start=1):
        start, end = _timestamp(seg.start, ","), _timestamp(seg.end, ",")
        said = f"{seg.speaker}: {seg.text.strip()}" if seg.speaker else seg.text.strip()
        blocks.append(f"{number}\n{start} --> {end}\n{said}\n")
    return "\n".join(blocks)


def to_vtt(result: TranscriptionResult) -> str:
    blocks = ["WEBVTT\n"]
    for seg in result.segments:
        start, end = _timestamp(seg.start, "."), _timestamp(seg.end, ".")
        said = f"<v {seg.speaker}>{seg.text.strip()}" if seg.speaker else seg.text.strip()  # WebVTT's voice tag
        blocks.append(f"{start} --> {end}\n{said}\n")
    return "\n".join(blocks)


def render_text(result: TranscriptionResult, response_format: str) -> str | None:
    """The text body for text/srt/vtt; None for the JSON formats."""
    if response_format == "text":
        return result.text
    if response_format == "srt":
        return to_srt(result)
    if response_format == "vtt":
        return to_vtt(result)
    return None
