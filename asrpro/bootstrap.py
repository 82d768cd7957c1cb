"""JetStream resources every deployment needs: the event stream and the audio bucket (idempotent)."""

from __future__ import annotations

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from framework.config import Config
from schemas import subjects


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
    await js.create_object_store(
        subjects.AUDIO_BUCKET,
        ObjectStoreConfig(
            description="audio too large for one NATS message", ttl=config.nats.audio_ttl, storage=StorageType.FILE
        ),
    )
