"""OpenAI-compatible routes: transcriptions, translations, models; and the default-model setting."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from nats.aio.client import Client

from asrpro import client
from framework import logs
from framework.config import Config, node_name, start_budget
from gateway.cluster_view import lifecycle_status
from gateway.connection import Connection, GatewayConnection, Settings
from gateway.errors import error_object, status_and_code
from gateway.responses import diarized_segment, render, usage
from gateway.uploads import with_upload
from schemas import codec, endpoints, errors
from schemas.durations import parse_duration
from schemas.errors import AsrError, ErrorCode
from schemas.lifecycle import EnsureServer
from schemas.registry import (
    OPENAI_NAMES,
    Decoding,
    ListModels,
    ModelInfo,
    ModelList,
    SetDefaultModel,
    check_transcriber,
    diarizer_needed,
    find,
    not_installed,
)
from schemas.transcribe import (
    MAX_BATCH_SIZE,
    MAX_KNOWN_SPEAKERS,
    MAX_REFERENCE_BYTES,
    MAX_SPEAKERS,
    Diarize,
    Granularity,
    KnownSpeaker,
    ResponseFormat,
    Task,
    TranscribeRequest,
    TranscriptionDelta,
    TranscriptionResult,
)
from schemas.transcribe import response_format as parse_response_format

router = APIRouter()
DEFAULT_CHUNK_BATCH = Decoding().batch_size  # chunking_strategy's batch size: the models' default
T = TypeVar("T")
Piece = TranscriptionDelta | TranscriptionResult
log = logging.getLogger("asrpro.gateway")
DISCONNECT_CHECK_S = 0.5


File_ = Annotated[UploadFile | None, File()]
Text = Annotated[str | None, Form()]
Texts = list[str] | None


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    request: Request,
    conn: Connection,
    config: Settings,
    file: File_ = None,
    model: Text = None,
    language: Text = None,
    prompt: Text = None,
    response_format: Text = None,
    temperature: Text = None,
    timestamp_granularities: Annotated[Texts, Form(alias="timestamp_granularities[]")] = None,
    timestamp_granularities_plain: Annotated[Texts, Form(alias="timestamp_granularities")] = None,
    stream: Text = None,
    vad_filter: Text = None,
    hotwords: Text = None,
    batch_size: Text = None,
    keep_alive: Text = None,
    diarize: Text = None,
    min_speakers: Text = None,
    max_speakers: Text = None,
    known_speaker_names: Annotated[Texts, Form(alias="known_speaker_names[]")] = None,
    known_speaker_references: Annotated[Texts, Form(alias="known_speaker_references[]")] = None,
    # OpenAI's: include[]=logprobs (per word, from the decoder's word probabilities), chunking_strategy (selects the
    # VAD-chunked batched decoding), keywords[] (faster-whisper's hotwords), languages[] (one: the language).
    include: Annotated[Texts, Form(alias="include[]")] = None,
    chunking_strategy: Text = None,
    keywords: Annotated[Texts, Form(alias="keywords[]")] = None,
    languages: Annotated[Texts, Form(alias="languages[]")] = None,
    model_q: Annotated[str | None, Query(alias="model")] = None,
    response_format_q: Annotated[str | None, Query(alias="response_format")] = None,
) -> Response:
    granularities = (timestamp_granularities or []) + (timestamp_granularities_plain or [])
    for granularity in granularities:
        if granularity not in ("word", "segment"):
            raise AsrError(
                errors.BAD_REQUEST,
                f"timestamp_granularities: {granularity!r} is not 'word' or 'segment'",
                param="timestamp_granularities",
            )
    for wanted in include or []:
        if wanted != "logprobs":
            raise AsrError(errors.BAD_REQUEST, f"include[]: {wanted!r} is not 'logprobs'", param="include")
    logprobs = "logprobs" in (include or [])
    if logprobs and (response_format or "json") != "json":
        raise AsrError(errors.BAD_REQUEST, "include[]=logprobs goes with response_format json", param="include")
    if logprobs and "word" not in granularities:
        granularities.append("word")  # the probabilities come with the words
    if languages and len(languages) == 1 and not language:
        language = languages[0]
    known = known_speakers_field(known_speaker_names or [], known_speaker_references or [])
    form = AudioForm(
        task="transcribe",
        app_client=model_q is not None or response_format_q is not None,
        file=file,
        model=model or model_q,
        language=language,
        prompt=prompt,
        # asrpro's older clients send model and response_format as query parameters.
        fmt=parse_response_format(response_format or response_format_q),
        temperature=_number("temperature", temperature),
        granularities=[g for g in ("word", "segment") if g in granularities],
        vad_filter=_boolean("vad_filter", vad_filter),
        hotwords=" ".join([hotwords or "", *(keywords or [])]).strip() or None,
        batch_size=batch_size_field(batch_size) if batch_size else chunking(chunking_strategy),
        keep_alive=keep_alive,
        logprobs=logprobs,
        diarize=diarize_field(diarize, model or model_q, response_format or response_format_q, known=bool(known)),
        known_speakers=known,
        min_speakers=speakers_field("min_speakers", min_speakers),
        max_speakers=speakers_field("max_speakers", max_speakers),
        stream=bool(_boolean("stream", stream)),
    )
    return await serve(request, conn, config, form)


@router.post("/v1/audio/translations", response_model=None)
async def translations(
    request: Request,
    conn: Connection,
    config: Settings,
    file: File_ = None,
    model: Text = None,
    prompt: Text = None,
    response_format: Text = None,
    temperature: Text = None,
    stream: Text = None,
    vad_filter: Text = None,
    batch_size: Text = None,
    keep_alive: Text = None,
    model_q: Annotated[str | None, Query(alias="model")] = None,
    response_format_q: Annotated[str | None, Query(alias="response_format")] = None,
) -> Response:
    form = AudioForm(
        task="translate",
        batch_size=batch_size_field(batch_size),
        app_client=model_q is not None or response_format_q is not None,
        file=file,
        model=model or model_q,
        fmt=parse_response_format(response_format or response_format_q),
        prompt=prompt,
        temperature=_number("temperature", temperature),
        vad_filter=_boolean("vad_filter", vad_filter),
        keep_alive=keep_alive,
        stream=bool(_boolean("stream", stream)),
    )
    return await serve(request, conn, config, form)


@dataclass(kw_only=True)
class AudioForm:
    """A transcription or translation request as the form said it, checked."""

    task: Task
    file: UploadFile | None
    model: str | None
    fmt: ResponseFormat
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    granularities: list[Granularity] = field(default_factory=list)
    vad_filter: bool | None = None
    hotwords: str | None = None
    batch_size: int | None = None
    keep_alive: str | None = None
    diarize: Diarize = "none"
    min_speakers: int | None = None
    max_speakers: int | None = None
    known_speakers: list[KnownSpeaker] = field(default_factory=list)
    logprobs: bool = False
    stream: bool = False
    # The original asrpro app asks with model and response_format as query parameters, and reads more from
    # `json` than OpenAI's text and usage.
    app_client: bool = False


def _number(name: str, value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise AsrError(errors.BAD_REQUEST, f"{name} must be a number, got {value!r}", param=name) from None
    if not math.isfinite(number):
        raise AsrError(errors.BAD_REQUEST, f"{name} must be a finite number, got {value!r}", param=name)
    return number


def chunking(value: str | None) -> int | None:
    """OpenAI's chunking_strategy: "auto" or {"type": "server_vad", ...} selects the VAD-chunked batched decoding
    (docs/throughput.md) at the model's batch size; absent, the model's rule."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text != "auto":
        try:
            strategy = json.loads(text)
        except json.JSONDecodeError:
            strategy = None
        if not isinstance(strategy, dict) or strategy.get("type") != "server_vad":
            message = 'chunking_strategy must be "auto" or {"type": "server_vad", ...}'
            raise AsrError(errors.BAD_REQUEST, message, param="chunking_strategy")
    return DEFAULT_CHUNK_BATCH


def diarize_field(value: str | None, model: str | None, fmt: str | None, *, known: bool = False) -> Diarize:
    """The `diarize` form field: none | speakers | channels. diarized_json, known speakers and the model name
    gpt-4o-transcribe-diarize mean speakers unless channels is asked for."""
    wanted = (value or "").strip()
    if wanted and wanted not in ("none", "speakers", "channels"):
        raise AsrError(
            errors.BAD_REQUEST, f"diarize must be none, speakers or channels, not {wanted!r}", param="diarize"
        )
    if known and wanted in ("none", "channels"):
        problem = f"known speakers are recognised by the diarizer: diarize=speakers, not {wanted}"
        raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_names")
    if wanted == "channels":
        return "channels"
    if wanted == "speakers" or known or fmt == "diarized_json" or model == "gpt-4o-transcribe-diarize":
        return "speakers"
    return "none"


def known_speakers_field(names: list[str], references: list[str]) -> list[KnownSpeaker]:
    """OpenAI's known_speaker_names[] with known_speaker_references[] (data URLs of 2 to 10 s of audio), checked
    here; whether each is 2 to 10 s of audio the diarizer says (the gateway decodes no audio). A name given twice
    is refused by schemas.transcribe.diarization, which the NATS path takes too (diarizer_needed calls it before
    the upload; a job's job_request_ok refuses known speakers)."""
    if len(names) != len(references):
        problem = f"{len(names)} known_speaker_names[] but {len(references)} known_speaker_references[]: one each"
        raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_references")
    if len(names) > MAX_KNOWN_SPEAKERS:
        problem = f"at most {MAX_KNOWN_SPEAKERS} known speakers, got {len(names)}"
        raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_names")
    known: list[KnownSpeaker] = []
    for name, reference in zip(names, references, strict=True):
        name = name.strip()
        if not name or len(name) > 64 or "," in name:
            problem = f"known speaker name {name!r}: 1 to 64 characters, no commas"
            raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_names")
        known.append(KnownSpeaker(name=name, audio=_data_url_audio(name, reference)))
    return known


def _data_url_audio(name: str, reference: str) -> bytes:
    """The bytes of a data:audio/...;base64,... URL (nothing else: a URL to fetch would be a request forgery)."""
    head, comma, data = reference.strip().partition(",")
    if not (comma and head.startswith("data:audio/") and head.endswith(";base64")):
        problem = f"{name}'s reference must be a data URL of audio (data:audio/<type>;base64,...)"
        raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_references")
    try:
        audio = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise AsrError(
            errors.BAD_REQUEST, f"{name}'s reference is not valid base64", param="known_speaker_references"
        ) from None
    if not audio or len(audio) > MAX_REFERENCE_BYTES:
        problem = f"{name}'s reference holds {len(audio)} bytes: 2 to 10 s of audio, at most {MAX_REFERENCE_BYTES}"
        raise AsrError(errors.BAD_REQUEST, problem, param="known_speaker_references")
    return audio


def speakers_field(name: str, value: str | None) -> int | None:
    """min_speakers / max_speakers: empty for as many as the diarizer hears, else 1 to MAX_SPEAKERS."""
    if value is None or value.strip() == "":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SPEAKERS:
        raise AsrError(
            errors.BAD_REQUEST, f"{name} must be a whole number from 1 to {MAX_SPEAKERS}, got {value!r}", param=name
        )
    return count


def batch_size_field(value: str | None) -> int | None:
    """The `batch_size` form field: empty for the model's rule, 0 for sequential decoding, 1 to MAX_BATCH_SIZE."""
    if value is None or value.strip() == "":
        return None
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_BATCH_SIZE:
        problem = f"batch_size must be a whole number from 0 (sequential) to {MAX_BATCH_SIZE}, got {value!r}"
        raise AsrError(errors.BAD_REQUEST, problem, param="batch_size")
    return size


def _boolean(name: str, value: str | None) -> bool | None:
    if value is None or value.strip() == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise AsrError(errors.BAD_REQUEST, f"{name} must be true or false, got {value!r}", param=name)


async def serve(request: Request, conn: GatewayConnection, config: Config, form: AudioForm) -> Response:
    if form.stream and form.fmt not in ("json", "text", "diarized_json"):
        problem = f"stream=true goes with response_format json, text or diarized_json, not {form.fmt}"
        raise AsrError(errors.BAD_REQUEST, problem, param="response_format")
    if form.temperature is not None and not 0.0 <= form.temperature <= 1.0:
        problem = f"temperature must be between 0 and 1, got {form.temperature:g}"
        raise AsrError(errors.BAD_REQUEST, problem, param="temperature")
    if form.file is None:
        raise AsrError(errors.BAD_REQUEST, "no file: send the audio as the multipart field 'file'", param="file")
    try:
        parse_duration(form.keep_alive)
    except ValueError as exc:
        raise AsrError(errors.BAD_REQUEST, str(exc), param="keep_alive") from None
    nc = conn.client  # 503 at once while the bus is down, before anything else is said
    # whisper-1 (what OpenAI clients send) means the default model, or one that can translate or decode the
    # language asked for where the default cannot; the response's `model` says which.
    info = conn.catalogue.resolve_for(form.model or "whisper-1", form.task, form.language)
    if info.installed is False:
        raise not_installed(info)
    check_transcriber(info)
    timeout = config.gateway.request_timeout
    message = TranscribeRequest(
        filename=form.file.filename or "audio",
        language=form.language or None,
        prompt=form.prompt or None,
        response_format=form.fmt,
        temperature=form.temperature,
        task=form.task,
        timestamp_granularities=form.granularities,
        vad_filter=form.vad_filter,
        hotwords=form.hotwords,
        batch_size=form.batch_size,
        diarize=form.diarize,
        min_speakers=form.min_speakers,
        max_speakers=form.max_speakers,
        known_speakers=form.known_speakers,
        request_id=logs.request_id.get() or logs.new_request_id(),
        keep_alive=form.keep_alive or None,
        timeout=timeout,
    )
    diarizer_needed(message, info, conn.catalogue.listing)  # no diarizer: a 400 before the upload is staged
    message = await with_upload(nc, form.file, message)
    if form.stream:
        pieces = client.transcribe_stream(nc, info.id, message, timeout=timeout + 5, via=node_name(config))
        # The 200 and the first bytes only once the proxy says the request was admitted and its audio opened (its
        # first partial): an unknown or uninstalled model, a full queue or undecodable audio is then still an HTTP
        # error the SDKs raise as such, never a 200 followed by an error event (the gateway decodes no audio).
        first = await until_disconnected(request, nc, message, anext(pieces))
        return StreamingResponse(
            server_sent_events(nc, message, first, pieces),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    # The proxy answers 504 itself at `timeout`; the bus waits a little longer so that answer arrives.
    result = await until_disconnected(
        request, nc, message, client.transcribe(nc, info.id, message, timeout=timeout + 5, via=node_name(config))
    )
    log.info(
        "transcribed",
        extra={
            "model": info.id,
            "task": form.task,
            "format": form.fmt,
            "audio_s": result.duration,
            "total_s": result.timing.total_s,
        },
    )
    return render(result, form.fmt, app_client=form.app_client, logprobs=form.logprobs)


async def until_disconnected(request: Request, nc: Client, message: TranscribeRequest, work: Awaitable[T]) -> T:
    """The result (or the first piece of a stream), unless the client goes away first: then the proxy is told to
    stop (its slot is freed)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=DISCONNECT_CHECK_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client went away: cancelling", extra={"file": message.filename})
                await client.cancel(nc, message, "the HTTP client went away")
                raise AsrError(ErrorCode.CANCELLED, "the client went away")
    finally:
        task.cancel()


async def server_sent_events(
    nc: Client, message: TranscribeRequest, first: Piece, rest: AsyncIterator[Piece]
) -> AsyncIterator[str]:
    """OpenAI's transcription stream: transcript.text.delta events as segments are decoded, then
    transcript.text.done; an error after the stream began (the server lost mid-way) is an `error` event."""
    finished = False

    async def pieces() -> AsyncIterator[Piece]:
        yield first
        async for piece in rest:
            yield piece

    try:
        async for piece in pieces():
            if isinstance(piece, TranscriptionDelta):
                if piece.text:  # the first partial says only that the audio opened
                    delta: dict[str, Any] = {"type": "transcript.text.delta", "delta": piece.text}
                    if piece.segment is not None:
                        delta["segment_id"] = f"seg_{piece.segment.id}"
                    yield _sse(delta)
                    if piece.segment is not None and piece.segment.speaker is not None:
                        # OpenAI's diarized stream: each finished segment with its speaker.
                        yield _sse(diarized_segment(piece.segment))
            else:
                finished = True
                # OpenAI's done event, plus the segments (so that a page can offer subtitles without a second run).
                segments = [
                    {"id": s.id, "start": s.start, "end": s.end, "text": s.text}
                    | ({"speaker": s.speaker} if s.speaker is not None else {})
                    for s in piece.segments
                ]
                done = {"type": "transcript.text.done", "text": piece.text, "segments": segments}
                yield _sse({**done, "usage": usage(piece)})
    except AsrError as exc:
        finished = True
        status, code = status_and_code(exc)
        yield _sse({"type": "error", "error": error_object(status, exc.message, code)})
    finally:
        if not finished:  # the client went away mid-stream
            await client.cancel(nc, message, "the HTTP client went away")


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


def openai_model(m: ModelInfo, default_model: str, running: set[str], name: str = "") -> dict[str, Any]:
    """A model as OpenAI lists it (`id`, `object`, `created`, `owned_by`), with what the original asrpro app
    requires of every entry (`ready`) and more. `name`: an OpenAI name (whisper-1, ...), listed as an entry of its
    own whose `target` is the model it means now."""
    entry: dict[str, Any] = {
        "id": name or m.id,
        "object": "model",
        "created": m.created,
        "owned_by": "asrpro",
        "ready": m.id in running,  # its server runs now (asrpro's meaning); installed is separate
        "name": m.name,
        "family": m.family,
        "size": m.size,
        "engine": m.engine,
        "languages": m.languages,
        "aliases": m.aliases,
        "default": m.id == default_model,
        "installed": m.installed,
        "installed_where": m.installed_where,
        "size_bytes": m.size_bytes,
    }
    if name:
        entry["target"] = m.id  # for a translation or another language it may mean another (registry docs)
    return entry


def openai_entries(listing: ModelList, running: set[str]) -> list[dict[str, Any]]:
    """OpenAI's names first (each pointing at the default model), then every model."""
    default = find(listing, listing.default_model)
    names = [openai_model(default, listing.default_model, running, n) for n in OPENAI_NAMES] if default else []
    return [*names, *(openai_model(m, listing.default_model, running) for m in listing.models)]


async def running_models(conn: GatewayConnection) -> set[str]:
    """Models whose server is ready now (none known while the lifecycle actor does not answer)."""
    try:
        status = await lifecycle_status(conn, timeout=2.0)
    except AsrError:
        return set()
    return {s.model for s in status.servers if s.state == "ready"}


@router.get("/v1/models")
async def models(conn: Connection) -> dict[str, Any]:
    listing = conn.catalogue.listing
    if listing is None:
        listing = await conn.request(endpoints.REGISTRY_LIST, ListModels())
    return {"object": "list", "data": openai_entries(listing, await running_models(conn))}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, conn: Connection) -> dict[str, Any]:
    """A model by id, alias or OpenAI name; the entry's `id` is the name asked for (OpenAI's SDKs check it)."""
    info = conn.catalogue.resolve(model_id)
    running = await running_models(conn)
    if model_id != info.id:
        return openai_model(info, conn.catalogue.default_model, running, model_id)
    return openai_model(info, conn.catalogue.default_model, running)


@router.post("/v1/settings/model")
async def set_default(request: Request, conn: Connection, config: Settings) -> dict[str, Any]:
    """The default model (what `whisper-1` means), then loaded, as the original asrpro app expects:
    `{"status": "success" | "error", "model"}` (404 for an unknown model, 409 for one not installed)."""
    if "json" not in request.headers.get("content-type", ""):
        # Not text/plain: a web page may send that to any site without asking first.
        raise AsrError(errors.UNSUPPORTED_MEDIA, 'send JSON: Content-Type application/json, {"model_id": "<model>"}')
    try:
        wanted = codec.decode(await request.body(), SetDefaultModel, codec.JSON)
    except codec.DecodeError:
        raise AsrError(errors.BAD_REQUEST, 'expected a JSON body {"model_id": "<model>"}') from None
    info = await conn.request(endpoints.REGISTRY_SET_DEFAULT, wanted)
    # What whisper-1 means changed: the next request through this gateway must see it.
    await conn.catalogue.wait_for_default(info.id, timeout=2.0)
    reply: dict[str, Any] = {"status": "success", "model": info.id, "default_model": info.id}
    try:
        budget = start_budget(config)
        await conn.request(endpoints.LIFECYCLE_ENSURE, EnsureServer(model=info.id, timeout=budget), timeout=budget + 5)
    except AsrError as exc:
        reply.update(status="error", error=exc.message)
    return reply
