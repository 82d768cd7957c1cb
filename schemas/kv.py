"""Every record kept in a JetStream KV bucket, declared once: its bucket, its key pattern and its type.

    await kv.put(kv_records.SERVER.key(node, model), kv_records.SERVER.encode(status))
    status = kv_records.SERVER.decode(entry.value)

A record's key is built only by `key()` and its value only by `encode()`/`decode()` (msgpack, like the rest of the
wire), so a reader and a writer cannot disagree on either. Model ids may contain dots, so a model is always the
key's last part and a watch over records uses `>` there (`watch_keys`); node names never do.
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

import msgspec

from schemas import subjects
from schemas.gpu import AllocationTable
from schemas.jobs import JobRecord
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord
from schemas.registry import FirstSeen, InstalledModels, ModelList

T = TypeVar("T")
_PART = re.compile(r"\{[a-z_]+\}")


class KvRecord(Generic[T]):
    """A kind of record in a KV bucket: ``KvRecord(bucket, "{node}.{model}", ServerStatus)``."""

    __slots__ = ("_decoder", "_parse", "bucket", "parts", "pattern", "type")

    def __init__(self, bucket: str, pattern: str, type_: type[T]) -> None:
        self.bucket = bucket
        self.pattern = pattern
        self.type = type_
        self.parts = tuple(p[1:-1] for p in _PART.findall(pattern))
        self._decoder = msgspec.msgpack.Decoder(type_)
        # A key read back into its parts: a part is one token, but a model id (always last) may hold dots.
        regex, rest = "", pattern
        for part in self.parts:
            before, _, rest = rest.partition("{" + part + "}")
            regex += re.escape(before) + ("(.+)" if part == "model" and not rest else "([^.]+)")
        self._parse = re.compile(regex + re.escape(rest))

    @property
    def stream(self) -> str:
        """The stream that holds the bucket (what permissions and replicas name)."""
        return "KV_" + self.bucket

    def key(self, *parts: str) -> str:
        """The key of one record: the pattern's parts filled in order."""
        if len(parts) != len(self.parts):
            raise ValueError(f"{self.pattern} takes {len(self.parts)} parts, not {len(parts)}")
        values = iter(parts)
        return _PART.sub(lambda _: next(values), self.pattern)

    def parse(self, key: str) -> tuple[str, ...] | None:
        """The parts of a key of this kind (None: not one): ``SERVER.parse("box.whisper-tiny.en")`` is
        ``("box", "whisper-tiny.en")``."""
        found = self._parse.fullmatch(key)
        return found.groups() if found else None

    @property
    def watch_keys(self) -> str:
        """The key filter of every record of this kind (a model id, always last, may hold dots: `>`)."""
        head = _PART.sub("*", self.pattern)
        return head[:-1] + ">" if self.pattern.endswith("{model}") else head

    def encode(self, value: T) -> bytes:
        if isinstance(value, str):  # a text record is plain UTF-8: any client (`nats kv get`) reads it
            return value.encode()
        return msgspec.msgpack.encode(value)

    def decode(self, data: bytes) -> T:
        """The record; msgspec.DecodeError / ValidationError on a malformed one."""
        if self.type is str:
            try:
                return data.decode()  # type: ignore[return-value]
            except UnicodeDecodeError as exc:
                raise msgspec.DecodeError(f"{self.pattern} is not UTF-8 text") from exc
        return self._decoder.decode(data)

    def __repr__(self) -> str:
        return f"KvRecord({self.bucket}/{self.pattern}: {self.type.__name__})"


# ASR_SERVERS: a node's lifecycle actor's record of a server it runs.
SERVER = KvRecord(subjects.SERVERS_BUCKET, "{node}.{model}", ServerStatus)
# ASR_SERVERS: the claim a proxy takes before starting a model that runs nowhere (state "placing"; no node prefix
# can start with "_", so claims never mix with server records).
PLACEMENT_CLAIM = KvRecord(subjects.SERVERS_BUCKET, "_placing.{model}", ServerStatus)
# ASR_NODES: a node's heartbeat, expiring with the bucket's TTL.
NODE = KvRecord(subjects.NODES_BUCKET, "{node}", NodeRecord)
# ASR_GPU: a node's devices and what is allocated on them (compare-and-set).
GPU_TABLE = KvRecord(subjects.GPU_BUCKET, "{node}", AllocationTable)
# ASR_SETTINGS: the catalogue the registry writes and everyone watches.
CATALOGUE = KvRecord(subjects.SETTINGS_BUCKET, "catalogue", ModelList)
# ASR_SETTINGS: what a node's lifecycle actor found installed on its host.
INSTALLED = KvRecord(subjects.SETTINGS_BUCKET, "installed.{node}", InstalledModels)
# ASR_SETTINGS: what whisper-1 means, as an operator set it (kept across restarts).
DEFAULT_MODEL = KvRecord(subjects.SETTINGS_BUCKET, "default_model", str)
# ASR_SETTINGS: when the registry first saw each model id (OpenAI's `created`), kept across restarts.
FIRST_SEEN = KvRecord(subjects.SETTINGS_BUCKET, "first_seen", FirstSeen)

# ASR_JOBS: a durable job's record (state, progress, checkpoint), changed by compare-and-set.
JOB = KvRecord(subjects.JOBS_BUCKET, "{job}", JobRecord)

ALL = (SERVER, PLACEMENT_CLAIM, NODE, GPU_TABLE, CATALOGUE, INSTALLED, DEFAULT_MODEL, FIRST_SEEN, JOB)
