"""Webhook deliveries of ended jobs, durable and at least once: a job's end is a message on the work queue
ASR_JOB_WEBHOOKS (its id, de-duplicated by Nats-Msg-Id), taken by one node, acknowledged after a 2xx and retried with
jobs.webhook_retry's back-off otherwise, so a restart of this actor or the loss of its node delays a delivery but
never loses it. Every attempt carries the same webhook-id, for receivers to de-duplicate; none follows a 2xx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from actors.jobs import webhooks
from framework.cancelling import still_running
from schemas import subjects
from schemas.jobs import JobRecord, WebhookState, job_view

if TYPE_CHECKING:
    from actors.jobs.actor import Jobs
    from actors.jobs.store import JobStore

PARALLEL = 8  # deliveries at once per node: one slow receiver does not hold up the others
IDLE_S = 1.0


def webhook_id(job_id: str) -> str:
    return "msg_" + job_id.removeprefix("job_")


def payload(record: JobRecord) -> bytes:
    """Standard Webhooks' envelope: type, timestamp, data (the job as GET /v1/audio/jobs/{id} shows it)."""
    ended = datetime.fromtimestamp(record.finished_at or time.time(), UTC).isoformat().replace("+00:00", "Z")
    body = {"type": f"audio.job.{record.status}", "timestamp": ended, "data": job_view(record)}
    return json.dumps(body, separators=(",", ":")).encode()


class Notifier:
    def __init__(self, actor: Jobs, store: JobStore) -> None:
        self.actor = actor
        self.store = store
        self.cfg = actor.config.jobs
        self.sender = webhooks.Sender(self.cfg.webhook_allowed_hosts)
        self.slots = asyncio.Semaphore(PARALLEL)
        self.pending: set[asyncio.Task[None]] = set()
        self.subscription: Any = None

    async def ended(self, record: JobRecord) -> None:
        """Queue the webhook of a job that just ended (no-op without a webhook_url)."""
        if not record.webhook_url:
            return
        js = self.actor.connection.jetstream()
        try:
            await js.publish(subjects.JOBS_WEBHOOKS, record.id.encode(), headers={"Nats-Msg-Id": record.id})
        except Exception as exc:
            self.actor.log.warning("job %s: its webhook could not be queued: %s", record.id, exc)

    async def secret(self, owner: str) -> bytes:
        configured = self.cfg.webhook_secret.encode()
        return webhooks.owner_secret(configured or await self.store.server_secret(), owner)

    async def run(self) -> None:
        while still_running():  # framework.cancelling: a lost cancellation ends it too
            try:
                if self.subscription is None:
                    self.subscription = await self._subscribe()
                messages = await self.subscription.fetch(PARALLEL, timeout=IDLE_S)
            except TimeoutError:
                continue
            except Exception as exc:  # the bus is down, the stream is being made: look again soon
                if isinstance(exc, NotFoundError):
                    self.subscription = None
                self.actor.log.info("webhook queue: %s", exc)
                await asyncio.sleep(IDLE_S)
                continue
            for message in messages:
                await self.slots.acquire()
                task = asyncio.ensure_future(self._deliver(message))
                self.pending.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.pending.discard(task)
        self.slots.release()

    async def _subscribe(self) -> Any:
        js = self.actor.connection.jetstream()
        config = ConsumerConfig(
            ack_wait=webhooks.POST_TIMEOUT_S * 4,
            max_deliver=len(self.cfg.webhook_retry) + 2,  # the last attempt terminates it; this is a guard
            max_ack_pending=1000,
        )
        return await js.pull_subscribe(
            subjects.JOBS_WEBHOOKS, durable="webhooks", stream=subjects.JOBS_WEBHOOK_STREAM, config=config
        )

    async def _deliver(self, message: Any) -> None:
        job_id = message.data.decode(errors="replace")
        try:
            record = await self.store.get(job_id)
        except Exception as exc:  # the bus: try again soon
            self.actor.log.info("webhook of %s: %s", job_id, exc)
            await message.nak(delay=5.0)
            return
        if record is None or not record.webhook_url or (record.webhook and record.webhook.delivered_at):
            await message.ack()  # deleted, or delivered before a crash lost the acknowledgement
            return
        attempt = message.metadata.num_delivered
        status: int | None = None
        error: str | None = None
        try:
            key = await self.secret(record.owner)
            status = await self.sender.post(record.webhook_url, key, webhook_id(record.id), payload(record))
        except Exception as exc:  # refused, unreachable, timed out: retried like a 5xx
            error = f"{type(exc).__name__}: {exc}"
        delivered = status is not None and 200 <= status < 300
        last = attempt > len(self.cfg.webhook_retry)
        if error is None and not delivered:
            error = f"the destination answered {status}"

        def note(r: JobRecord) -> None:
            state = r.webhook or WebhookState()
            state.attempts, state.last_status, state.last_error = attempt, status, None if delivered else error
            if delivered:
                state.delivered_at = time.time()
            elif last:
                state.gave_up = True
            r.webhook = state

        try:
            await self.store.change(record.id, note)
        except Exception as exc:  # noted next time; the delivery itself is what counts
            self.actor.log.info("webhook of %s: its state was not noted: %s", job_id, exc)
        if delivered:
            await message.ack()
            self.actor.log.info("webhook delivered", extra={"job": job_id, "attempt": attempt, "status": status})
        elif last:
            await message.term()
            self.actor.log.warning("webhook given up", extra={"job": job_id, "attempt": attempt, "error": error})
        else:
            delay = self.cfg.webhook_retry[attempt - 1]
            await message.nak(delay=delay)
            self.actor.log.info(
                "webhook attempt failed", extra={"job": job_id, "attempt": attempt, "error": error, "retry_s": delay}
            )

    async def stop(self) -> None:
        for task in list(self.pending):
            task.cancel()
        # Not left to the connection's drain: a pull subscription whose fetch was cancelled would hold it for
        # its whole drain timeout (30 s), past the supervisor's patience.
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await self.subscription.unsubscribe()
        await self.sender.close()
