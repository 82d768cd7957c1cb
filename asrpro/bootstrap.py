"""JetStream resources every deployment needs: the event stream, the KV buckets and one audio bucket per user
that sends audio (idempotent)."""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

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
        await js.add_stream(stream)
    except BadRequestError:
        await js.update_stream(stream)
    for bucket, what in (
        (subjects.GPU_BUCKET, "GPU allocations"),
        (subjects.SERVERS_BUCKET, "running model servers"),
        (subjects.SETTINGS_BUCKET, "settings changed at run time"),
    ):
        await js.create_key_value(KeyValueConfig(bucket=bucket, description=what, history=1, storage=StorageType.FILE))
    nodes = KeyValueConfig(
        bucket=subjects.NODES_BUCKET,
        description="nodes' heartbeats (a record expires when its node stops beating)",
        history=1,
        ttl=config.node.dead_after,
        storage=StorageType.FILE,
    )
    try:
        await js.create_key_value(nodes)
    except BadRequestError as exc:  # made before with another node.dead_after: it works, with the old TTL
        log.warning("bucket %s kept as it was: %s", subjects.NODES_BUCKET, exc)
    for owner in subjects.AUDIO_SENDERS:
        await ensure_audio_bucket(nc, config, owner)


async def ensure_audio_bucket(nc: Client, config: Config, owner: str) -> None:
    """`owner`'s own bucket for audio too large for one message: bounded, so no sender fills the disk for all."""
    bucket = ObjectStoreConfig(
        description=f"audio of {owner} too large for one NATS message",
        ttl=config.nats.audio_ttl,
        max_bytes=int(config.nats.gateway_audio_max_mb * 2**20),
        storage=StorageType.FILE,
    )
    try:
        await nc.jetstream().create_object_store(subjects.audio_bucket(owner), bucket)
    except BadRequestError as exc:  # made before with other limits: it still works, the old limits stay
        log.warning("audio bucket of %s kept as it was: %s", owner, exc)
