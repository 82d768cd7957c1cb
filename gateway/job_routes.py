"""Durable transcription jobs over HTTP: POST /v1/audio/jobs (202), GET one, its result, the caller's list, DELETE
(cancel). A job belongs to the API key that submitted it (all jobs belong to `local` without keys): another key's
request for it is a 404, as if it did not exist; an admin key sees every job."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from framework import logs
from gateway.connection import Connection
from gateway.openai_routes import (
    File_,
    Text,
    Texts,
    _boolean,
    _number,
    batch_size_field,
    diarize_field,
    known_speakers_field,
    speakers_field,
)
from gateway.responses import render
from gateway.uploads import with_upload
from schemas import endpoints, errors
from schemas.errors import AsrError
from schemas.formats import render_text
from schemas.jobs import (
    ENDED,
    STATUSES,
    JobQuery,
    JobRecord,
    ListJobs,
    SecretQuery,
    SubmitJob,
    job_request_ok,
    job_view,
)
from schemas.registry import check_transcriber, diarizer_needed, not_installed
from schemas.transcribe import Task, TranscribeRequest
from schemas.transcribe import response_format as parse_response_format

router = APIRouter()
EVENTS_POLL_S = 1.0  # how often a job's event stream looks at its record
LOCAL_OWNER = "local"  # every job's owner when the gateway has no API keys (loopback only)


def owner_of(request: Request) -> tuple[str, bool]:
    """(owner, admin): the API key's digest-named owner and whether it is an admin key."""
    state = request.scope.get("state") or {}
    return state.get("api_owner") or LOCAL_OWNER, state.get("api_scope") == "admin"


def job_json(job: JobRecord) -> dict[str, Any]:
    return job_view(job)


@router.post("/v1/audio/jobs", response_model=None)
async def submit(
    request: Request,
    conn: Connection,
    file: File_ = None,
    model: Text = None,
    language: Text = None,
    prompt: Text = None,
    response_format: Text = None,
    temperature: Text = None,
    timestamp_granularities: Annotated[Texts, Form(alias="timestamp_granularities[]")] = None,
    vad_filter: Text = None,
    hotwords: Text = None,
    batch_size: Text = None,
    task: Text = None,
    diarize: Text = None,
    min_speakers: Text = None,
    max_speakers: Text = None,
    known_speaker_names: Annotated[Texts, Form(alias="known_speaker_names[]")] = None,
    known_speaker_references: Annotated[Texts, Form(alias="known_speaker_references[]")] = None,
    metadata: Text = None,
    webhook_url: Text = None,
) -> Response:
    owner, _ = owner_of(request)
    if file is None:
        raise AsrError(errors.BAD_REQUEST, "no file: send the audio as the multipart field 'file'", param="file")
    if (task or "transcribe") not in ("transcribe", "translate"):
        raise AsrError(errors.BAD_REQUEST, f"task must be transcribe or translate, not {task!r}", param="task")
    for granularity in timestamp_granularities or []:
        if granularity not in ("word", "segment"):
            problem = f"timestamp_granularities: {granularity!r} is not 'word' or 'segment'"
            raise AsrError(errors.BAD_REQUEST, problem, param="timestamp_granularities")
    tags = _metadata(metadata)
    known = known_speakers_field(known_speaker_names or [], known_speaker_references or [])
    temp = _number("temperature", temperature)
    if temp is not None and not 0.0 <= temp <= 1.0:
        raise AsrError(errors.BAD_REQUEST, f"temperature must be between 0 and 1, got {temp:g}", param="temperature")
    fmt = parse_response_format(response_format)
    nc = conn.client
    job_task: Task = "translate" if task == "translate" else "transcribe"
    info = conn.catalogue.resolve_for(model or "whisper-1", job_task, language)
    if info.installed is False:
        raise not_installed(info)
    check_transcriber(info)
    message = TranscribeRequest(
        filename=file.filename or "audio",
        language=language or None,
        prompt=prompt or None,
        response_format=fmt,
        temperature=temp,
        task=job_task,
        timestamp_granularities=[g for g in ("word", "segment") if g in (timestamp_granularities or [])],
        vad_filter=_boolean("vad_filter", vad_filter),
        hotwords=hotwords or None,
        batch_size=batch_size_field(batch_size),
        diarize=diarize_field(diarize, model, response_format, known=bool(known)),
        known_speakers=known,
        min_speakers=speakers_field("min_speakers", min_speakers),
        max_speakers=speakers_field("max_speakers", max_speakers),
        request_id=logs.request_id.get() or logs.new_request_id(),
    )
    job_request_ok(message)  # what a job cannot take is a 400 now, not a job that fails later
    diarizer_needed(message, info, conn.catalogue.listing)
    staged = await with_upload(nc, file, message, stage=True)
    submission = SubmitJob(owner=owner, model=info.id, request=staged, metadata=tags, webhook_url=webhook_url or None)
    job = await conn.request(endpoints.JOBS_SUBMIT, submission, timeout=60.0)
    return JSONResponse(job_json(job), status_code=202, headers={"Location": f"/v1/audio/jobs/{job.id}"})


def _metadata(raw: str | None) -> dict[str, str]:
    """A small JSON object of strings, echoed back with the job."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if (
        not isinstance(value, dict)
        or len(value) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in value.items()
        )
    ):
        problem = "metadata must be a JSON object of at most 16 string values (keys <= 64, values <= 512 characters)"
        raise AsrError(errors.BAD_REQUEST, problem, param="metadata")
    return value


@router.get("/v1/audio/jobs/webhook_secret")
async def webhook_secret(request: Request, conn: Connection) -> dict[str, Any]:
    """The caller's webhook signing secret (Standard Webhooks' whsec_...): one per API key, the same for all its
    jobs; an admin key gets its own, like any key."""
    owner, _ = owner_of(request)
    found = await conn.request(endpoints.JOBS_SECRET, SecretQuery(owner=owner))
    return {"object": "webhook.secret", "secret": found.secret}


@router.get("/v1/audio/jobs/{job_id}")
async def get_job(job_id: str, request: Request, conn: Connection) -> dict[str, Any]:
    owner, admin = owner_of(request)
    return job_json(await conn.request(endpoints.JOBS_GET, JobQuery(owner=owner, id=job_id, admin=admin)))


@router.get("/v1/audio/jobs/{job_id}/events", response_model=None)
async def job_events(job_id: str, request: Request, conn: Connection) -> Response:
    """Server-sent events of one job: `job` with its state each time its status or progress changes, the last when
    it ended (then the stream closes). 404 before anything when it is not the caller's."""
    owner, admin = owner_of(request)
    query = JobQuery(owner=owner, id=job_id, admin=admin)
    first = await conn.request(endpoints.JOBS_GET, query)

    async def events() -> AsyncIterator[str]:
        job, last = first, None
        yield f"retry: {int(EVENTS_POLL_S * 2000)}\n\n"
        while True:
            seen = (job.status, job.processed_seconds, job.attempts)
            if seen != last:
                last = seen
                yield f"event: job\ndata: {json.dumps(job_json(job))}\n\n"
            if job.status in ENDED or await request.is_disconnected():
                return
            await asyncio.sleep(EVENTS_POLL_S)
            try:
                job = await conn.request(endpoints.JOBS_GET, query)
            except AsrError as exc:  # the jobs actor restarting: said, and the stream goes on; gone: it ends
                yield f"event: error\ndata: {json.dumps({'message': exc.message})}\n\n"
                if exc.code == errors.NOT_FOUND:
                    return

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.get("/v1/audio/jobs/{job_id}/result", response_model=None)
async def job_result(
    job_id: str, request: Request, conn: Connection, format: Annotated[str | None, Query()] = None
) -> Response:
    owner, admin = owner_of(request)
    found = await conn.request(endpoints.JOBS_RESULT, JobQuery(owner=owner, id=job_id, admin=admin), timeout=30.0)
    fmt = parse_response_format(format or found.job.request.response_format)
    result = found.result
    if fmt != found.job.request.response_format:  # stored rendered as submitted: rendered again as asked
        result.formatted = render_text(result, fmt)
    return render(result, fmt)


@router.get("/v1/audio/jobs")
async def list_jobs(
    request: Request,
    conn: Connection,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query()] = None,
    status: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    owner, admin = owner_of(request)
    if status is not None and status not in STATUSES:
        raise AsrError(errors.BAD_REQUEST, f"status must be one of {', '.join(STATUSES)}", param="status")
    query = ListJobs(owner=owner, admin=admin, limit=limit, after=after, status=status)
    page = await conn.request(endpoints.JOBS_LIST, query, timeout=30.0)
    data = [job_json(j) for j in page.jobs]
    return {
        "object": "list",
        "data": data,
        "has_more": page.has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


@router.delete("/v1/audio/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request, conn: Connection) -> dict[str, Any]:
    owner, admin = owner_of(request)
    return job_json(await conn.request(endpoints.JOBS_CANCEL, JobQuery(owner=owner, id=job_id, admin=admin)))
