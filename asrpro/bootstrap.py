"""JetStream resources every deployment needs: the event stream, the KV buckets and one audio bucket per user
that sends audio (idempotent)."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from framework.config import Config
from schemas import subjects

log = logging.getLogger("asrpro.bootstrap")


async def ensure_jetstream(nc: Client, config: Config) -> None:
    js = nc.jetstream()
    stream = StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.EVENTS_ALL],
        retention=RetentionPolicy.LIMITS,
        max_age=config.nats.events_max_age,
        max_msgs=config.nats.events_max_msgs,
        storage=StorageType.FILE,
    )
    try:
        existing = await js.stream_info(subjects.EVENTS_STREAM)
    except NotFoundError:
        await js.add_stream(stream)
    else:
        # Another host of a cluster made it, and may have raised its replicas: never lower them.
        stream.num_replicas = max(existing.config.num_replicas or 1, 1)
        await js.update_stream(stream)
    for bucket, what in (
        (subjects.GPU_BUCKET, "GPU allocations"),
        (subjects.SERVERS_BUCKET, "running model servers"),
        (subjects.SETTINGS_BUCKET, "settings changed at run time"),
    ):
        if not await _exists(js, "KV_" + bucket):
            await js.create_key_value(
                KeyValueConfig(bucket=bucket, description=what, history=1, storage=StorageType.FILE)
            )
    nodes = KeyValueConfig(
        bucket=subjects.NODES_BUCKET,
        description="nodes' heartbeats (a record expires when its node stops beating)",
        history=1,
        ttl=config.node.dead_after,
        storage=StorageType.FILE,
    )
    try:
        if not await _exists(js, "KV_" + subjects.NODES_BUCKET):
            await js.create_key_value(nodes)
    except BadRequestError as exc:  # made before with another node.dead_after: it works, with the old TTL
        log.warning("bucket %s kept as it was: %s", subjects.NODES_BUCKET, exc)
    for owner in subjects.AUDIO_SENDERS:
        await ensure_audio_bucket(nc, config, owner)
    await ensure_jobs(nc, config)


async def ensure_jobs(nc: Client, config: Config) -> None:
    """The jobs' work queue (a job's message stays until its job ended) and their records."""
    js = nc.jetstream()
    await _work_queue(js, subjects.JOBS_STREAM, subjects.JOBS_QUEUE_ALL)
    # A job's end waits here until its webhook is delivered or given up; a second publish of the same end (a worker
    # retrying after a lost acknowledgement) is dropped by its Nats-Msg-Id.
    await _work_queue(js, subjects.JOBS_WEBHOOK_STREAM, subjects.JOBS_WEBHOOKS, duplicate_window=3600.0)
    if not await _exists(js, "KV_" + subjects.JOBS_BUCKET):
        records = KeyValueConfig(bucket=subjects.JOBS_BUCKET, description="durable jobs", history=1)
        await js.create_key_value(records)


async def _work_queue(js: JetStreamContext, name: str, subject: str, duplicate_window: float = 0.0) -> None:
    """A stream whose messages stay until acknowledged, each taken by one consumer."""
    if not await _exists(js, name):
        config = StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=duplicate_window,
        )
        await js.add_stream(config)


async def _exists(js: JetStreamContext, stream: str) -> bool:
    """Made already (by another host of a cluster, or an earlier start): left as it is, replicas and all."""
    try:
        await js.stream_info(stream)
    except NotFoundError:
        return False
    return True


async def ensure_audio_bucket(nc: Client, config: Config, owner: str) -> None:
    """`owner`'s own bucket for audio too large for one message: bounded, so no sender fills the disk for all."""
    bucket = ObjectStoreConfig(
        description=f"audio of {owner} too large for one NATS message",
        ttl=config.nats.audio_ttl,
        max_bytes=int(config.nats.gateway_audio_max_mb * 2**20),
        storage=StorageType.FILE,
    )
    if owner == subjects.JOBS_AUDIO_OWNER:  # a queued job's audio must not expire; bounded by the job limits
        bucket = ObjectStoreConfig(description="durable jobs' audio and results", storage=StorageType.FILE)
    try:
        if not await _exists(nc.jetstream(), "OBJ_" + subjects.audio_bucket(owner)):
            await nc.jetstream().create_object_store(subjects.audio_bucket(owner), bucket)
    except BadRequestError as exc:  # made before with other limits: it still works, the old limits stay
        log.warning("audio bucket of %s kept as it was: %s", owner, exc)
