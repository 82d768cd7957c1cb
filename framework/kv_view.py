"""A live copy of keys of a JetStream KV bucket, kept by a KV watch: how actors share state without asking
each other (the catalogue, the ready model servers)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec
import nats.errors
from nats.js.kv import KV_DEL, KV_PURGE

from framework.cancelling import still_running
from framework.transport import KeyValueStore, Transport
from schemas import kv as kv_records
from schemas.kv import KvRecord
from schemas.nodes import NodeRecord

T = TypeVar("T")
log = logging.getLogger("asrpro.kv")
# A watch that saw nothing for this long is started again: a watch can be lost with a server restart,
# and starting again costs one message per key.
RESYNC_S = 30.0
# Nodes beat every few seconds (node.heartbeat_interval): a watch of them that hears nothing this long is lost.
HEARTBEATS_RESYNC_S = 8.0
STOP_WAIT_S = 2.0


class KvView(Generic[T]):
    """The records of one kind (`schemas.kv`), by key; `keys` narrows the watch (default: every record of it)."""

    def __init__(self, record: KvRecord[T], keys: str = "", *, resync: float = RESYNC_S) -> None:
        self.bucket, self.keys = record.bucket, keys or record.watch_keys
        self.resync = resync  # seconds without an update after which the watch is started again
        self.values: dict[str, T] = {}
        self.known = asyncio.Event()  # set once the first full view arrived
        self._changed = asyncio.Event()
        self._decode: Callable[[bytes], T] = record.decode
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # a cancellation nats-py swallowed still ends the watch at its next round
        self.problem = ""  # why the watch is not running, while it is not ('' when it is)

    async def follow(self, transport: Transport, *, wait: float = 10.0) -> None:
        """Start watching (and keep watching, whatever fails: a missing bucket, a server restart); return once
        the bucket's current values are in, or after `wait` seconds."""
        if self._task is None:
            # A context of its own: the watch outlives whatever request happened to start it.
            self._task = asyncio.create_task(self._watch(transport), context=contextvars.Context())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.known.wait(), wait)

    async def _watch(self, transport: Transport) -> None:
        while not self._ending():  # until stopped (a closed connection fails each round, slowly)
            try:
                kv = await transport.kv(self.bucket)
                self.problem = ""
                await self._watch_once(kv)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.problem = f"watch of {self.bucket} failed: {exc!r}"
                log.warning("%s: watching again", self.problem)
                await asyncio.sleep(1.0)

    async def _watch_once(self, kv: KeyValueStore) -> None:
        watcher = await kv.watch(self.keys)
        seen: set[str] | None = set()  # keys delivered before the end-of-initial-values marker
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=self.resync)
                except nats.errors.TimeoutError:
                    return
                if self._ending():
                    return
                if entry is None:  # the current values are all in: drop keys that vanished meanwhile
                    if seen == set():  # the marker first: maybe nats-py's early one (_reload); the bucket says
                        await self._reload(kv)
                    elif seen is not None:
                        for key in set(self.values) - seen:
                            del self.values[key]
                    seen = None
                    self.known.set()
                    continue
                if seen is not None:
                    seen.add(entry.key)
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self.values.pop(entry.key, None)
                else:
                    self._keep(entry.key, entry.value)
                self._changed.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _keep(self, key: str, value: bytes) -> None:
        try:
            self.values[key] = self._decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.values.pop(key, None)  # an old value is no truer than a malformed one
            log.warning("dropping malformed %s/%s: %s", self.bucket, key, exc)

    async def _reload(self, kv: KeyValueStore) -> None:
        """The watched keys' values read from the bucket, for a watch whose end-of-values marker came first.

        nats-py sends that marker first whenever its consumer reports nothing pending and nothing was read yet,
        which is also so once the server has pushed the values but the client has not read them (under load, as
        with its keys(): framework/nats_internals.py). Believed, it would empty a resynced view, and mark a new one
        known with nothing in it, until the values arrived."""
        try:
            entries = await kv.current(self.keys)
        except Exception as exc:  # cannot read the bucket now: keep what the view holds; the watch brings changes
            log.info("reading %s after its watch's marker failed: %r", self.bucket, exc)
            return
        held = {entry.key for entry in entries}
        for key in set(self.values) - held:
            del self.values[key]
        for entry in entries:
            if entry.value:
                self._keep(entry.key, entry.value)

    def _ending(self) -> bool:
        # A view nobody stopped must not outlive its event loop's shutdown either.
        return self._stopping or not still_running()

    async def changed_or(self, timeout: float) -> None:
        """Until the next change, or `timeout` seconds."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            # Bounded: nats-py may swallow a cancellation while it sets a watch up, and a stopping actor must not
            # wait for ever on a view it no longer needs.
            await asyncio.wait({self._task}, timeout=STOP_WAIT_S)


def heartbeats() -> KvView[NodeRecord]:
    """The nodes' heartbeats (ASR_NODES), watched: a one-off listing of a replicated bucket may come back short
    while a replica catches up; a watch is brought up to date by the next heartbeat."""
    return KvView(kv_records.NODE, resync=HEARTBEATS_RESYNC_S)
