"""Pulling a model's weights onto this node on request (asr.lifecycle.pull.<node>): weights are per host, so the
pull runs in the lifecycle actor of the node that will run the model, the same `framework.weights_pull` as
`asrpro models pull`, with its progress sent back as partial replies while it works."""

from __future__ import annotations

import asyncio
import collections
import time

from actors.lifecycle.installed import InstalledReports
from framework.actor import Actor
from framework.catalogue import Catalogue
from framework.entrypoints import send_partial
from framework.weights_pull import PullError, pull
from schemas import errors
from schemas.errors import AsrError
from schemas.lifecycle import PullProgress, PullResult

PROGRESS_EVERY_S = 0.25  # at most this often a partial reply with the figures
KEEPALIVE_S = 5.0  # the last figures again, while a step reports nothing (a long download): the caller waits


class Puller:
    def __init__(self, actor: Actor, catalogue: Catalogue, installed: InstalledReports) -> None:
        self.actor, self.catalogue, self.installed = actor, catalogue, installed
        self.locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    async def pull(self, name: str) -> PullResult:
        model = self.catalogue.resolve(name)  # 404 for what is not a model
        loop = asyncio.get_running_loop()
        figures: asyncio.Queue[PullProgress | None] = asyncio.Queue()
        last_sent = [0.0]

        def progress(status: str, done: int, total: int) -> None:  # in the pull's thread
            now = time.monotonic()
            if now - last_sent[0] >= PROGRESS_EVERY_S or (total and done >= total):
                last_sent[0] = now
                report = PullProgress(model=model.id, status=status, completed=done, total=total)
                loop.call_soon_threadsafe(figures.put_nowait, report)

        async def relay() -> None:
            latest = PullProgress(model=model.id, status="waiting for another pull of it")
            while True:
                try:
                    item = await asyncio.wait_for(figures.get(), KEEPALIVE_S)
                except TimeoutError:
                    item = latest
                if item is None:
                    return
                latest = item
                await send_partial(item)

        relaying = asyncio.ensure_future(relay())
        try:
            async with self.locks[model.id]:  # one pull of a model at a time: the second finds it installed
                await send_partial(PullProgress(model=model.id, status="pulling"))
                try:
                    state, pulled = await asyncio.to_thread(pull, self.actor.config, model.id, progress)
                except PullError as exc:
                    raise AsrError(errors.CONFLICT, f"cannot pull {model.id}: {exc}", param="model") from None
        finally:
            figures.put_nowait(None)
            await relaying
        self.actor.log.info("pulled %s into %s", model.id, state.where, extra={"model": model.id, "pulled": pulled})
        self.installed.forget()
        await self.installed.report()  # the catalogue shows it installed now
        return PullResult(model=model.id, pulled=pulled, installed=state)
