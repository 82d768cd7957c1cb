"""Durable jobs through the real parts of the integration tier: nats-server (the work queue, the records, the
buckets, each actor's own NATS user and permissions), the jobs actor, the proxy and a real faster-whisper model
server; the gateway's side is played by a connection as the `gateway` user, sending what its routes send."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client

from actors.jobs.actor import Jobs
from asrpro import client as asr_client
from framework import bus
from schemas import endpoints
from schemas.errors import AsrError
from schemas.jobs import JobQuery, JobRecord, ListJobs, SubmitJob
from schemas.transcribe import TranscribeRequest
from tests.conftest import JFK_TEXT, Nats, assert_whole_meeting
from tests.wer import word_error_rate

MODEL = "whisper-tiny.en"


async def submit(
    nc: Client, audio: bytes, owner: str = "key-a", webhook_url: str | None = None, **fields: object
) -> JobRecord:
    staged = await asr_client.stage(nc, TranscribeRequest(audio=audio, filename="meeting.flac", **fields))  # type: ignore[arg-type]
    submission = SubmitJob(owner=owner, model=MODEL, request=staged, webhook_url=webhook_url)
    return await bus.request(nc, endpoints.JOBS_SUBMIT, submission, timeout=30)


async def until_ended(nc: Client, job_id: str, owner: str = "key-a", timeout: float = 240.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = await bus.request(nc, endpoints.JOBS_GET, JobQuery(owner=owner, id=job_id))
        if job.status in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout} s: {job}"
        await asyncio.sleep(0.5)


async def test_a_job_completes_and_only_its_owner_sees_it(system, start_actor, gateway_nc: Client, jfk: bytes) -> None:
    await start_actor(Jobs)
    job = await submit(gateway_nc, jfk, response_format="srt", prompt="Kennedy.")
    assert job.status == "queued" and job.id.startswith("job_") and len(job.id) == 36
    done = await until_ended(gateway_nc, job.id)
    assert done.status == "completed" and done.attempts == 1 and abs(done.audio_seconds - 11.0) < 0.2
    found = await bus.request(gateway_nc, endpoints.JOBS_RESULT, JobQuery(owner="key-a", id=job.id))
    assert word_error_rate(JFK_TEXT, found.result.text) <= 0.1 and "-->" in (found.result.formatted or "")
    # Another application: as if the job did not exist, by id, result, cancel or list.
    for rpc in (endpoints.JOBS_GET, endpoints.JOBS_RESULT, endpoints.JOBS_CANCEL):
        with pytest.raises(AsrError) as err:
            await bus.request(gateway_nc, rpc, JobQuery(owner="key-b", id=job.id))  # type: ignore[misc]
        assert (err.value.code, err.value.kind) == ("404", "job_not_found")
    theirs = await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-b"))
    mine = await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-a"))
    everyone = await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-b", admin=True))
    assert theirs.jobs == [] and [j.id for j in mine.jobs] == [job.id] == [j.id for j in everyone.jobs]
    # Made-up and hostile ids are not found either.
    for made_up in ("job_" + "0" * 32, "../x", "*", ">", ""):
        with pytest.raises(AsrError) as err:
            await bus.request(gateway_nc, endpoints.JOBS_GET, JobQuery(owner="key-a", id=made_up))
        assert err.value.code == "404"


async def test_a_job_whose_worker_dies_resumes_from_its_checkpoint_and_completes_once(
    system, start_actor, gateway_nc: Client, meeting: bytes
) -> None:
    env = {"ASRPRO_JOBS__ACK_WAIT": "4", "ASRPRO_JOBS__CHECKPOINT_EVERY": "10"}
    first = await start_actor(Jobs, **env)
    # Batched, as jobs are by default, one 30-s chunk at a time: a checkpoint after the first, the rest to resume.
    job = await submit(gateway_nc, meeting, batch_size=1)
    deadline = time.monotonic() + 120
    while True:  # until its first checkpoint is stored
        seen = await bus.request(gateway_nc, endpoints.JOBS_GET, JobQuery(owner="key-a", id=job.id))
        if seen.checkpoint is not None:
            break
        assert time.monotonic() < deadline, seen
        await asyncio.sleep(0.2)
    await first.stop()  # the worker dies mid-decode: no ack, no more beats
    await start_actor(Jobs, **env)
    done = await until_ended(gateway_nc, job.id)
    assert done.status == "completed" and done.attempts == 2, done
    assert 10.0 <= done.resumed_from < 66.0  # the second attempt started at the checkpoint, not at 0
    found = await bus.request(gateway_nc, endpoints.JOBS_RESULT, JobQuery(owner="key-a", id=job.id))
    assert abs(found.result.duration - 66.0) < 0.5
    assert_whole_meeting(found.result.text)
    assert [s.id for s in found.result.segments] == list(range(len(found.result.segments)))


async def test_a_cancelled_job_stops_and_bad_submissions_are_refused(
    system, start_actor, gateway_nc: Client, meeting: bytes
) -> None:
    await start_actor(Jobs)
    job = await submit(gateway_nc, meeting)
    cancelled = await bus.request(gateway_nc, endpoints.JOBS_CANCEL, JobQuery(owner="key-a", id=job.id))
    assert cancelled.status == "cancelled"
    assert (await until_ended(gateway_nc, job.id)).status == "cancelled"
    with pytest.raises(AsrError) as err:
        await bus.request(gateway_nc, endpoints.JOBS_RESULT, JobQuery(owner="key-a", id=job.id))
    assert (err.value.code, err.value.kind) == ("409", "job_not_completed")
    # Audio that is not staged in the gateway's bucket, and an owner that is not one subject token.
    inline = SubmitJob(owner="key-a", model=MODEL, request=TranscribeRequest(audio=b"abc"))
    with pytest.raises(AsrError) as err:
        await bus.request(gateway_nc, endpoints.JOBS_SUBMIT, inline)
    assert err.value.code == "400" and err.value.param == "file"
    with pytest.raises(AsrError) as err:
        await submit(gateway_nc, b"RIFF", owner="a.b.>")
    assert err.value.code == "400"
    # Not audio, and an empty file: refused before anything is stored or queued, with the decoder's reason.
    for junk in (b"this is not audio at all" * 100, b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64)):
        with pytest.raises(AsrError) as err:
            await submit(gateway_nc, junk)
        assert (err.value.code, err.value.kind, err.value.param) == ("400", "unsupported_audio", "file")
    listed = await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-a"))
    assert [j.id for j in listed.jobs] == [job.id]


async def test_an_application_cannot_reach_the_jobs_subjects_or_buckets(jetstream: Nats) -> None:
    """The `client` application: no jobs requests of its own (the gateway names owners), no work queue, no records."""
    nc = await jetstream.connect("client")
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc._error_cb = on_error
    try:
        for subject in ("asr.jobs.submit", "asr.jobs.list", "asr.jobs.queue.key-a", "$KV.ASR_JOBS.job_x"):
            await nc.publish(subject, b"{}")
        await nc.flush()
        await asyncio.sleep(0.3)
        assert sum("permissions violation" in str(e).lower() for e in errors) == 4, errors
    finally:
        await nc.close()


async def test_jobs_storage_is_bounded_and_ended_jobs_are_deleted_after_their_retention(
    system, start_actor, gateway_nc: Client, jfk: bytes
) -> None:
    jobs = await start_actor(Jobs, ASRPRO_JOBS__RETENTION="0.5")
    done = await until_ended(gateway_nc, (await submit(gateway_nc, jfk)).id)
    assert done.status == "completed"
    await asyncio.sleep(0.6)
    assert await jobs.sweep() == 1
    with pytest.raises(AsrError) as err:
        await bus.request(gateway_nc, endpoints.JOBS_GET, JobQuery(owner="key-a", id=done.id))
    assert err.value.kind == "job_not_found"
    await jobs.stop()
    # 1 kB for all jobs: refused before anything is stored (the upload staged by the gateway is all there is).
    await start_actor(Jobs, ASRPRO_JOBS__STORAGE_MAX_GB="0.000001")
    with pytest.raises(AsrError) as err:
        await submit(gateway_nc, jfk)
    assert (err.value.code, err.value.kind) == ("507", "storage_full") and "jobs.storage_max_gb" in err.value.message
    listed = await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-a", admin=True))
    assert listed.jobs == []
