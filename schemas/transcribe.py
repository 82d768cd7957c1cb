from __future__ import annotations

import msgspec

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class TranscribeRequest(msgspec.Struct, kw_only=True):
    """Audio to transcribe, sent to ``asr.transcribe.<model>``.

    Small audio travels inline in ``audio``; audio too large for one message is
    put in the JetStream object store bucket ``ASR_AUDIO`` and named by ``audio_ref``.
    """

    audio: bytes = b""
    audio_ref: str | None = None
    filename: str = "audio"
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    request_id: str = ""


class Segment(msgspec.Struct, kw_only=True):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class Timing(msgspec.Struct, kw_only=True):
    decode_s: float = 0.0
    transcribe_s: float = 0.0
    server_s: float = 0.0  # inside the model server
    total_s: float = 0.0  # inside the model proxy, cold start included
    cold_start: bool = False
    rtf: float = 0.0  # total_s / audio duration


class TranscriptionResult(msgspec.Struct, kw_only=True):
    text: str
    language: str
    duration: float
    segments: list[Segment]
    model: str = ""
    timing: Timing = msgspec.field(default_factory=Timing)
    formatted: str | None = None  # the text/srt/vtt rendering when response_format asks for it
