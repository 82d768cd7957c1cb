from __future__ import annotations

import secrets
import time
from typing import Annotated, Literal, get_args

import msgspec

from schemas import errors

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]
# Who spoke when (docs/diarization.md): none; speakers (a diarizer model: not built yet); channels (one speaker per
# channel of a multi-channel recording, each channel transcribed, segments labelled A, B, ... and merged by time).
Diarize = Literal["none", "speakers", "channels"]
Task = Literal["transcribe", "translate"]  # translate: into English
Granularity = Literal["word", "segment"]
# faster-whisper's fallback ladder: a decode that fails its compression/log-prob checks is retried hotter.
FALLBACK_TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_SPEAKERS = 8  # speakers a diarizer tells apart at most (min_speakers / max_speakers)
# Known speakers (OpenAI's known_speaker_names[] / known_speaker_references[]): at most 4, each a sample of 2 to
# 10 s of their voice, at most 1 MiB of audio.
MAX_KNOWN_SPEAKERS = 4
MAX_REFERENCE_BYTES = 2**20
MAX_BATCH_SIZE = 64  # chunks decoded at once: beyond it memory grows and the gain does not
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = get_args(ResponseFormat)


def response_format(value: str | None) -> ResponseFormat:
    """A response_format as a front door receives it (form field, query parameter); 400 naming the choices."""
    value = value or "json"
    for known in RESPONSE_FORMATS:
        if value == known:
            return known
    raise errors.AsrError(
        errors.BAD_REQUEST,
        f"response_format '{value}' is not one of {', '.join(RESPONSE_FORMATS)}",
        param="response_format",
    )


class KnownSpeaker(msgspec.Struct, kw_only=True):
    """A speaker to recognise by name: a 2 to 10 s sample of their voice (any audio format the API takes)."""

    # No commas (lists of names travel comma-joined to the diarizer), no surrounding spaces.
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^,\s]([^,]*[^,\s])?$")]
    audio: Annotated[bytes, msgspec.Meta(max_length=MAX_REFERENCE_BYTES)]


class TranscribeRequest(msgspec.Struct, kw_only=True):
    """Audio to transcribe, sent to ``asr.transcribe.<model>``.

    Small audio travels inline in ``audio``; audio too large for one message is put in the sender's own
    JetStream object store bucket ``ASR_AUDIO_<nats user>`` (``audio_bucket``) and named by ``audio_ref``
    (an unguessable name: it is what lets the proxy read it).
    """

    audio: bytes = b""
    audio_ref: str | None = None
    audio_bucket: str | None = None
    filename: Annotated[str, msgspec.Meta(max_length=1024)] = "audio"
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    # OpenAI's semantics: None or 0 = start at 0 and let the model's fallback ladder raise it; > 0 = that one.
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    task: Task = "transcribe"
    timestamp_granularities: list[Granularity] = []  # "word" adds `words` (costs decode time)
    vad_filter: bool | None = None  # None: the model's setting (speaches' extension)
    hotwords: str | None = None  # words to bias the decoder towards (speaches' extension)
    beam_size: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None  # None: the model's (live partials: 1)
    diarize: Diarize = "none"
    # With diarize=speakers: how many speakers the diarizer looks for at least and at most (None: as many as it
    # hears, up to MAX_SPEAKERS).
    min_speakers: Annotated[int, msgspec.Meta(ge=1, le=MAX_SPEAKERS)] | None = None
    max_speakers: Annotated[int, msgspec.Meta(ge=1, le=MAX_SPEAKERS)] | None = None
    # Speakers to name rather than letter where the diarizer hears their voice (diarize=speakers).
    known_speakers: Annotated[list[KnownSpeaker], msgspec.Meta(max_length=MAX_KNOWN_SPEAKERS)] = []
    # Batched decoding (docs/throughput.md): the recording cut at pauses (VAD) into chunks of at most 30 s, decoded
    # `batch_size` at once. None: the model's rule (its decoding.batch_size for jobs and for audio of at least
    # decoding.batch_from_s); 0: sequential, window after window.
    batch_size: Annotated[int, msgspec.Meta(ge=0, le=MAX_BATCH_SIZE)] | None = None
    # Start decoding this many seconds into the audio, timestamps kept those of the whole recording (a durable
    # job resuming from its checkpoint).
    offset: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0
    # The sender keeps the referenced audio (a durable job's, read again if its decode resumes): not deleted after.
    keep_audio: bool = False
    # Which waiter a freed decoding slot goes to first (actors/proxy/queue.py): interactive requests before batch
    # ones (durable jobs), which hold at most all slots but one. Anyone may lower its own priority; "live"
    # (realtime sessions) is reserved for the gateway.
    priority: Literal["live", "interactive", "batch"] = "interactive"
    # Partial results on the reply subject as the audio is decoded (TranscriptionDelta messages with the
    # Asr-Partial header), then the TranscriptionResult; false: the result alone, in one reply.
    stream: bool = False
    request_id: str = ""
    # What a CancelTranscription for this request must carry: request ids may be chosen by callers (and so be
    # guessed by others), this is not. A request sent without one cannot be cancelled.
    cancel_token: str = msgspec.field(default_factory=lambda: secrets.token_hex(16))
    # How long the model stays loaded after this request: seconds or "30s"/"5m"/"1h"; 0 = stop right after,
    # -1 = never. None: the model's inactivity_timeout.
    keep_alive: float | str | None = None
    # seconds the caller waits, queueing included; None: the gateway's request_timeout
    timeout: Annotated[float, msgspec.Meta(gt=0.0, le=86400.0)] | None = None


class Segment(msgspec.Struct, kw_only=True):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    seek: int | None = None
    tokens: list[int] = []
    temperature: float | None = None
    compression_ratio: float | None = None
    speaker: str | None = None  # with diarization: A, B, ... (channels: the channel's letter)


class Word(msgspec.Struct, kw_only=True):
    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = None  # with diarize=speakers: whose turn the word falls in


class Timing(msgspec.Struct, kw_only=True):
    decode_s: float = 0.0
    transcribe_s: float = 0.0
    server_s: float = 0.0  # inside the model server
    total_s: float = 0.0  # inside the model proxy, queueing and cold start included
    queue_s: float = 0.0  # waiting for a slot of the model (max_parallel)
    cold_start: bool = False
    rtf: float = 0.0  # total_s / audio duration


class TranscriptionResult(msgspec.Struct, kw_only=True):
    text: str
    language: str
    duration: float
    segments: list[Segment]
    words: list[Word] | None = None  # with timestamp_granularities word
    language_probability: float | None = None
    task: Task = "transcribe"
    model: str = ""
    timing: Timing = msgspec.field(default_factory=Timing)
    formatted: str | None = None  # the text/srt/vtt rendering when response_format asks for it


class TranscriptionDelta(msgspec.Struct, kw_only=True):
    """A piece of a streamed transcription: the segment just decoded and how far the audio is done."""

    request_id: str
    model: str
    text: str  # the segment's text, as it is to be appended
    # None in the first partial: the request was admitted and its audio opened (text empty, progress 0); a front
    # door answers errors until then with a status of their own, and starts its stream on it.
    segment: Segment | None = None
    words: list[Word] | None = None
    progress: float  # 0..1 of the audio's duration
    elapsed_s: float


class TranscriptionProgress(msgspec.Struct, kw_only=True):
    """Published on asr.progress.<model> at most every 0.5 s per request, streamed or not."""

    model: str
    request_id: str
    progress: float  # 0..1: the end of the last decoded segment / the audio's duration
    done_s: float
    duration: float
    elapsed_s: float
    filename: str = ""
    at: float = msgspec.field(default_factory=time.time)


class CancelTranscription(msgspec.Struct, kw_only=True):
    """Sent to asr.cancel.<request id> by a requester that gave up."""

    reason: str = "cancelled by the requester"
    token: str = ""  # the request's cancel_token


def diarization(msg: TranscribeRequest) -> Diarize:
    """What is asked about speakers: `channels` the model server does itself; `speakers` (also meant by
    response_format=diarized_json) the proxy has a diarizer model do beside the transcription
    (actors/proxy/speakers.py). 400 for speaker counts that contradict each other."""
    if msg.min_speakers and msg.max_speakers and msg.min_speakers > msg.max_speakers:
        raise errors.AsrError(
            errors.BAD_REQUEST,
            f"min_speakers ({msg.min_speakers}) is more than max_speakers ({msg.max_speakers})",
            param="min_speakers",
        )
    # The one check that each name is given once, for the NATS path and the HTTP one (the gateway's
    # known_speakers_field checks the form's names and data URLs only).
    names = [k.name for k in msg.known_speakers]
    for name in names:
        if names.count(name) > 1:
            problem = f"known speaker name {name!r} given {names.count(name)} times: each known speaker's name once"
            raise errors.AsrError(errors.BAD_REQUEST, problem, param="known_speaker_names")
    if msg.known_speakers and msg.diarize == "channels":
        problem = "known speakers are recognised by the diarizer: diarize=speakers, not channels"
        raise errors.AsrError(errors.BAD_REQUEST, problem, param="known_speaker_names")
    if msg.diarize == "channels":
        return "channels"
    if msg.diarize == "speakers" or msg.known_speakers or msg.response_format == "diarized_json":
        return "speakers"
    return "none"


def speaker_letter(n: int) -> str:
    """The label of the n-th speaker (0: A): channel n, or the n-th voice heard, where none has a name."""
    return chr(ord("A") + n) if n < 26 else f"S{n}"


def cut(segment: Segment, runs: list[list[Word]], first_id: int) -> list[Segment]:
    """A segment cut into pieces, one per run of its words (in order; all its words): each piece has its run's text
    and times (the first keeps the segment's start, the last its end), ids from `first_id` on, no tokens (the
    segment's cannot be shared out by word). One run: the segment as it is, renumbered."""
    if len(runs) <= 1:
        return [msgspec.structs.replace(segment, id=first_id)]
    return [
        msgspec.structs.replace(
            segment,
            id=first_id + n,
            start=segment.start if n == 0 else run[0].start,
            end=segment.end if n == len(runs) - 1 else run[-1].end,
            text="".join(w.word for w in run),
            tokens=[],
        )
        for n, run in enumerate(runs)
    ]
