"""Durable jobs submitted by applications over NATS (no JetStream rights, at most max_payload per message): the
audio in chunks to a subject only the submitter may publish to, state changes on subjects only it may read. Against
a real nats-server with the rendered permissions, the jobs actor, the proxy and a real faster-whisper server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from actors.jobs.actor import Jobs
from asrpro import client as asr_client
from framework import bus
from schemas import codec, endpoints, subjects
from schemas.errors import AsrError
from schemas.jobs import AppJobQuery, AppListJobs, AppSubmit, PublicJob, UploadChunk, UploadDone
from schemas.transcribe import TranscribeRequest
from tests.conftest import JFK_TEXT, Nats
from tests.integration.test_app_isolation import Violations, add_app, connect
from tests.wer import word_error_rate

MODEL = "whisper-tiny.en"


def rpc(user: str, op: str) -> Any:
    found: dict[str, Any] = {
        "submit": endpoints.JOBS_APP_SUBMIT,
        "get": endpoints.JOBS_APP_GET,
        "result": endpoints.JOBS_APP_RESULT,
        "list": endpoints.JOBS_APP_LIST,
        "cancel": endpoints.JOBS_APP_CANCEL,
    }
    return found[op].on_subject(subjects.jobs_app(user, op))


async def test_an_application_submits_a_job_in_chunks_and_follows_only_its_own_states(
    system, start_actor, jetstream: Nats, meeting: bytes
) -> None:
    await start_actor(Jobs)
    await add_app(jetstream, "alice")
    await add_app(jetstream, "mallory")
    violations = Violations()
    alice = await connect(jetstream, "alice")
    mallory = await connect(jetstream, "mallory", violations)
    try:
        states: list[dict[str, object]] = []

        async def seen(msg: Msg) -> None:
            states.append(json.loads(msg.data))

        await alice.subscribe(subjects.job_state(subjects.nats_owner("alice"), ">"), cb=seen)
        assert len(meeting) > 1 << 20  # more than one chunk
        fields = TranscribeRequest(response_format="text", filename="meeting.flac")
        job = await asr_client.submit_job(alice, "alice", meeting, model=MODEL, fields=fields, metadata={"m": "1"})
        assert job.status == "queued" and job.model == MODEL and job.metadata == {"m": "1"}
        assert job.audio_seconds == pytest.approx(66.0, abs=0.2)
        # mallory: alice's states, subjects and job are out of reach (a violation, or not found by its own subject).
        await mallory.subscribe(subjects.job_state(subjects.nats_owner("alice"), ">"))
        await mallory.publish(subjects.jobs_app("alice", "get"), b"{}")
        await mallory.flush()
        with pytest.raises(AsrError) as err:
            await bus.request(mallory, rpc("mallory", "get"), AppJobQuery(id=job.id))
        assert err.value.kind == "job_not_found"
        with pytest.raises(AsrError) as err:
            await bus.request(mallory, rpc("mallory", "cancel"), AppJobQuery(id=job.id))
        assert err.value.kind == "job_not_found"
        assert (await bus.request(mallory, rpc("mallory", "list"), AppListJobs())).jobs == []
        await asyncio.sleep(0.3)
        assert sum("permissions violation" in v for v in violations.seen) >= 2, violations.seen
        # alice follows her job to its end on her own state subject.
        for _ in range(480):
            if states and states[-1]["status"] == "completed":
                break
            await asyncio.sleep(0.5)
        statuses = [s["status"] for s in states]
        assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "completed", statuses
        assert all(s["id"] == job.id and "owner" not in s and "audio_object" not in s for s in states)
        found = await bus.request(alice, rpc("alice", "result"), AppJobQuery(id=job.id), timeout=30)
        assert found.job.status == "completed"
        assert word_error_rate(" ".join([JFK_TEXT] * 6), found.result.text) < 0.1
        listed = await bus.request(alice, rpc("alice", "list"), AppListJobs())
        assert [j.id for j in listed.jobs] == [job.id]
    finally:
        await alice.close()
        await mallory.close()


async def test_bad_uploads_are_refused_and_lose_nothing(system, start_actor, jetstream: Nats, jfk: bytes) -> None:
    await start_actor(Jobs, ASRPRO_JOBS__MAX_UPLOAD_MB="2")
    await add_app(jetstream, "alice")
    alice: Client = await connect(jetstream, "alice")
    try:
        submit = rpc("alice", "submit")
        with pytest.raises(AsrError) as err:  # an unknown model: before any audio is sent
            await bus.request(alice, submit, AppSubmit(model="no-such-model", size=10), timeout=10)
        assert err.value.kind == "model_not_found"
        with pytest.raises(AsrError) as err:
            await bus.request(alice, submit, AppSubmit(model=MODEL, size=3 << 20))
        assert (err.value.code, err.value.kind) == ("413", "file_too_large")
        # Garbage on the subject: a clear error reply, and the actor goes on.
        reply = await alice.request(subjects.jobs_app("alice", "submit"), b"\xff\x00garbage", timeout=5)
        assert (reply.headers or {}).get(codec.ERROR_CODE_HEADER) == "400", reply.headers
        ticket = await bus.request(alice, submit, AppSubmit(model=MODEL, size=len(jfk)))
        upload = endpoints.JOBS_APP_UPLOAD.on_subject(ticket.upload_subject)
        complete = endpoints.JOBS_APP_COMPLETE.on_subject(ticket.complete_subject)
        with pytest.raises(AsrError) as err:
            await bus.request(alice, upload, UploadChunk(job_id=ticket.job_id, seq=1, data=jfk[:10]))
        assert err.value.code == "400" and "out of order" in err.value.message
        await bus.request(alice, upload, UploadChunk(job_id=ticket.job_id, seq=0, data=jfk[:1000]))
        with pytest.raises(AsrError) as err:
            await bus.request(alice, complete, UploadDone(job_id=ticket.job_id))
        assert err.value.code == "400" and "1000 of the" in err.value.message
        # Not audio: refused when complete, before the job exists; nothing listed.
        junk = b"not audio at all " * 100
        ticket = await bus.request(alice, submit, AppSubmit(model=MODEL, size=len(junk)))
        upload = endpoints.JOBS_APP_UPLOAD.on_subject(ticket.upload_subject)
        await bus.request(alice, upload, UploadChunk(job_id=ticket.job_id, seq=0, data=junk))
        complete = endpoints.JOBS_APP_COMPLETE.on_subject(ticket.complete_subject)
        with pytest.raises(AsrError) as err:
            await bus.request(alice, complete, UploadDone(job_id=ticket.job_id), timeout=30)
        assert (err.value.code, err.value.kind) == ("400", "unsupported_audio")
        assert (await bus.request(alice, rpc("alice", "list"), AppListJobs())).jobs == []
        with pytest.raises(AsrError) as err:
            await bus.request(alice, rpc("alice", "get"), AppJobQuery(id=ticket.job_id))
        assert err.value.kind == "job_not_found"
        # A job of the right kind still goes through.
        job: PublicJob = await asr_client.submit_job(alice, "alice", jfk, model=MODEL)
        assert job.status == "queued"
    finally:
        await alice.close()
