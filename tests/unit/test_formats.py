from __future__ import annotations

from schemas.formats import render_text, to_srt, to_vtt
from schemas.transcribe import Segment, TranscriptionResult

RESULT = TranscriptionResult(
    text="Hello there. General Kenobi.",
    language="en",
    duration=3725.5,
    segments=[
        Segment(id=0, start=0.0, end=1.5, text=" Hello there."),
        Segment(id=1, start=3723.25, end=3725.5, text=" General Kenobi."),
    ],
)


def test_srt() -> None:
    assert to_srt(RESULT) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:02:03,250 --> 01:02:05,500\nGeneral Kenobi.\n"
    )


def test_vtt() -> None:
    assert to_vtt(RESULT) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n01:02:03.250 --> 01:02:05.500\nGeneral Kenobi.\n"
    )


def test_render_text_only_for_text_formats() -> None:
    assert render_text(RESULT, "text") == RESULT.text
    assert render_text(RESULT, "json") is None and render_text(RESULT, "verbose_json") is None
