"""The HTTP contract between the model proxy / lifecycle actor and a model server (process or container).

``GET /health`` answers a `Health` (200 when ok, 503 while loading or after a failed load);
``POST /transcribe`` takes the audio either as a multipart form (``file`` plus the `TranscribeOptions` fields,
handy with ``curl -F``) or raw (any other Content-Type: the body is the audio, the `TranscribeOptions` fields and
``filename`` are query parameters — what the model proxy sends, with no multipart to build or parse), and
answers a `TranscriptionResult` as JSON, or an `ErrorBody` with an HTTP status from `schemas.errors`.
The caller's request id travels in the ``X-Request-Id`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from schemas import errors
from schemas.transcribe import (
    FALLBACK_TEMPERATURES,
    MAX_BATCH_SIZE,
    MAX_SPEAKERS,
    ResponseFormat,
    Segment,
    Task,
    TranscriptionResult,
    Word,
    response_format,
)

HEALTH_PATH = "/health"
TRANSCRIBE_PATH = "/transcribe"
FILE_FIELD = "file"
FILENAME_PARAM = "filename"
# The model the caller means to reach: a server of another model answers 409 (the caller's record is stale).
MODEL_HEADER = "X-Model-Id"
# Options longer than this (a long prompt) go in a multipart body instead of the query string (HTTP servers cap
# the request line and headers, at 16 KiB in h11).
MAX_QUERY_BYTES = 4096

HealthStatus = Literal["loading", "ok", "error"]


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: HealthStatus
    model: str
    engine: str
    device: str
    compute_type: str
    load_s: float | None = None
    error: str | None = None
    # "gpu" when the load failed because the GPU cannot run the engine (CUDA libraries missing, a driver too old for
    # its kernels): the lifecycle actor then fails the start with `cause: gpu`, which no breaker counts.
    cause: Literal["gpu"] | None = None
    # With dynamic batching: batches decoded, and the requests they held (their mean size is the one over the other).
    batches: int | None = None
    batched: int | None = None


class TranscribeOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The text fields of ``POST /transcribe`` beside the file: what to decode and how. The caller (the model
    proxy) sends the model's configured decoding merged with what the request asked for; the defaults are
    faster-whisper's own."""

    response_format: ResponseFormat = "json"
    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: list[float] = msgspec.field(default_factory=lambda: list(FALLBACK_TEMPERATURES))  # in order
    beam_size: int = 5
    condition_on_previous_text: bool = True
    vad_filter: bool = False
    word_timestamps: bool = False
    hotwords: str | None = None
    # Decode from this many seconds into the audio (a resumed job: where its checkpoint stopped); timestamps stay
    # those of the whole recording.
    offset: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    # Batched decoding of VAD-cut chunks, `batch_size` at once (0: sequential), for audio of at least
    # `batch_from_s` seconds (what follows `offset`); shorter audio decodes sequentially.
    batch_size: Annotated[int, msgspec.Meta(ge=0, le=MAX_BATCH_SIZE)] = 0
    batch_from_s: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    # "channels": each channel of the recording transcribed on its own, segments labelled A, B, ... by channel and
    # merged by time (a mono recording is a 400 naming `diarize`).
    diarize: Literal["none", "channels"] = "none"
    # For a diarizer model server: how many speakers to find at least and at most (None: as many as it hears).
    min_speakers: Annotated[int, msgspec.Meta(ge=1, le=MAX_SPEAKERS)] | None = None
    max_speakers: Annotated[int, msgspec.Meta(ge=1, le=MAX_SPEAKERS)] | None = None
    # Known speakers, for a diarizer: their names and their voice samples (base64 of the audio file), in order.
    speaker_names: list[str] = []
    speaker_samples: list[str] = []

    def form(self) -> dict[str, str]:
        """As form fields (and query parameters): lists comma-separated, booleans true/false."""
        fields = {}
        for key, value in msgspec.structs.asdict(self).items():
            if value is None:
                continue
            if isinstance(value, list):
                fields[key] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                fields[key] = "true" if value else "false"
            else:
                fields[key] = str(value)
        return fields

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> TranscribeOptions:
        """What `form()` wrote, read back (form fields or query parameters, as text); 400 naming what is wrong."""
        values: dict[str, object] = {}
        for name in cls.__struct_fields__:
            value = (fields.get(name) or "").strip()
            if value:
                if name == "temperature":
                    values[name] = _temperatures(value)
                elif name in _TEXT_LISTS:
                    values[name] = value.split(",")  # form() joins them with commas (names hold none)
                else:
                    values[name] = value
        values["response_format"] = response_format(str(values.get("response_format") or "json"))
        try:
            options = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise errors.AsrError(errors.BAD_REQUEST, f"bad option: {exc}") from None
        if not options.temperature or not all(0.0 <= t <= 1.0 for t in options.temperature):
            raise errors.AsrError(errors.BAD_REQUEST, f"temperature must be between 0 and 1, got {options.temperature}")
        if options.beam_size < 1:
            raise errors.AsrError(errors.BAD_REQUEST, f"beam_size must be at least 1, got {options.beam_size}")
        return options


_TEXT_LISTS = ("speaker_names", "speaker_samples")


def _temperatures(value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise errors.AsrError(
            errors.BAD_REQUEST, f"temperature must be a number (or a comma-separated list), got {value!r}"
        ) from None


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    retry_after: float | None = None
    kind: str | None = None  # the symbolic code (schemas.errors.ErrorCode)
    param: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    error: ErrorDetail


# ``POST /transcribe?stream=true``: NDJSON, one frame per line — a SegmentFrame per decoded segment, then one
# ResultFrame (or an ErrorFrame when the decode failed after the response started). A client that goes away
# stops the decode (within one 30-s window of audio).
STREAM_PARAM = "stream"
STREAM_MEDIA_TYPE = "application/x-ndjson"


class OpenedFrame(msgspec.Struct, kw_only=True, tag="opened", tag_field="type"):
    """The audio is decoded (it is audio, and this long): sent before the first segment, so that a front door can
    answer an undecodable upload with an HTTP error before it starts a stream."""

    duration: float


class SegmentFrame(msgspec.Struct, kw_only=True, tag="segment", tag_field="type"):
    segment: Segment
    words: list[Word] | None = None
    duration: float  # of the whole audio, for progress


class ResultFrame(msgspec.Struct, kw_only=True, tag="result", tag_field="type"):
    result: TranscriptionResult


class ErrorFrame(msgspec.Struct, kw_only=True, tag="error", tag_field="type"):
    error: ErrorDetail


Frame = OpenedFrame | SegmentFrame | ResultFrame | ErrorFrame
