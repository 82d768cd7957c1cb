"""Installed weights: whether this host has a model's weights, checked before each start (a model without them is
a 404 with the hint, never started), and what it has reported to the registry (KV ASR_SETTINGS key
`installed.<node>`) whenever that changed."""

from __future__ import annotations

import asyncio

import msgspec

from actors.lifecycle.runtimes import Runtime
from framework.actor import Actor
from framework.catalogue import Catalogue
from framework.transport import KeyValueStore
from schemas.events import ServerFailed
from schemas.kv import INSTALLED
from schemas.registry import InstalledModels, ModelInfo, not_installed

# `asrpro models pull` runs beside the actor: it looks again this often.
INSTALLED_CHECK_EVERY_S = 10.0


class InstalledReports:
    def __init__(self, actor: Actor, runtime: Runtime, catalogue: Catalogue) -> None:
        self.actor, self.runtime, self.catalogue = actor, runtime, catalogue
        self.current = InstalledModels()  # what this host has, as last reported
        self.settings: KeyValueStore | None = None  # ASR_SETTINGS, opened by the actor's setup

    async def check(self, model: ModelInfo) -> None:
        """No weights here is not a failure of the model: 404 with the hint, never a breaker's business."""
        state = await asyncio.to_thread(self.runtime.installed, model)
        if state.installed:
            return
        missing = f"{state.where}, missing {state.missing}" if state.where else state.missing
        error = not_installed(msgspec.structs.replace(model, installed=False, installed_where=missing))
        await self.actor.publish(
            ServerFailed(model=model.id, runtime=self.runtime.name, reason=error.message, cause="not_installed")
        )
        self.actor.spawn(self.report())
        raise error

    async def report(self) -> None:
        """What this host has, for the registry to show (KV ASR_SETTINGS key `installed`), when it changed."""
        listing = self.catalogue.listing
        if listing is None:
            return
        states = await asyncio.to_thread(lambda: [self.runtime.installed(m) for m in listing.models])
        found = InstalledModels(models={s.model: msgspec.structs.replace(s, model="") for s in states})
        if found == self.current:
            return
        self.current = found
        try:
            assert self.settings is not None, "installed models reported before the bucket was opened"
            await self.settings.put(INSTALLED.key(self.actor.node_name), INSTALLED.encode(found))
        except Exception as exc:  # reported again at the next check
            self.actor.log.warning("could not report installed models: %s", exc)
            self.current = InstalledModels()

    def forget(self) -> None:
        """Written again at the next check: another node's janitor removed our report (it took us for lost)."""
        self.current = InstalledModels()

    def here(self) -> list[str]:
        """The models whose weights this host has (for the node's heartbeat)."""
        return sorted(m for m, state in self.current.models.items() if state.installed)
