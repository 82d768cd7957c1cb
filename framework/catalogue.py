"""The model catalogue as one watched record: the registry writes it to the KV bucket ASR_SETTINGS (key
``catalogue``); the gateway, the model proxies and the lifecycle actors each keep a copy that a KV watch
updates, and resolve model names from it without asking anyone. Names are resolved once, at the edge."""

from __future__ import annotations

import time

from framework.kv_view import KvView
from framework.transport import Transport
from schemas import errors
from schemas import kv as kv_records
from schemas.errors import AsrError
from schemas.registry import ModelInfo, ModelList, find, resolve, resolve_for


class Catalogue:
    def __init__(self, listing: ModelList | None = None) -> None:
        self._view: KvView[ModelList] = KvView(kv_records.CATALOGUE)
        self._fixed = listing  # a catalogue given outright (tests, tools) instead of watched

    @property
    def listing(self) -> ModelList | None:
        return self._view.values.get(kv_records.CATALOGUE.key(), self._fixed)

    def resolve(self, name: str) -> ModelInfo:
        """The model `name` means; 404 naming the known ones; 503 before the registry published anything."""
        listing = self.listing
        if listing is None:
            raise AsrError(errors.UNAVAILABLE, self.unknown_reason())
        return resolve(listing, name)

    def resolve_for(self, name: str, task: str = "transcribe", language: str | None = None) -> ModelInfo:
        """The model `name` means for this request: an OpenAI name (whisper-1, ...) means a model that can do it
        (schemas.registry.resolve_for)."""
        listing = self.listing
        if listing is None:
            raise AsrError(errors.UNAVAILABLE, self.unknown_reason())
        return resolve_for(listing, name, task, language)

    def unknown_reason(self) -> str:
        why = f" ({self._view.problem})" if self._view.problem else ""
        return f"the model catalogue is not known yet{why}: is the registry running?"

    def find(self, name: str) -> ModelInfo | None:
        listing = self.listing
        return find(listing, name) if listing is not None else None

    @property
    def default_model(self) -> str:
        listing = self.listing
        return listing.default_model if listing is not None else ""

    async def follow(self, transport: Transport, *, wait: float = 60.0) -> None:
        """Start watching the record; return once a first catalogue is known (or after `wait` seconds: the
        registry may start after us)."""
        deadline = time.monotonic() + wait
        await self._view.follow(transport, wait=wait)
        while self.listing is None and time.monotonic() < deadline:
            await self._view.changed_or(min(1.0, max(0.0, deadline - time.monotonic())))

    async def wait_for_default(self, model_id: str, *, timeout: float) -> None:
        """Until the watched copy says `model_id` is the default (just set through the registry)."""
        deadline = time.monotonic() + timeout
        while self.default_model != model_id and time.monotonic() < deadline:
            await self._view.changed_or(min(0.5, max(0.0, deadline - time.monotonic())))

    async def stop(self) -> None:
        await self._view.stop()
