"""Placement claims: before a model that runs nowhere is started, the proxy that places it claims the placement in
ASR_SERVERS (schemas.kv.PLACEMENT_CLAIM: key `_placing.<model>`; node names cannot start with `_`, so it is never
a node's record), so that of two proxies placing it at once one wins and the other sends its
request to the winner's node instead of starting a second copy."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from nats.js.errors import KeyWrongLastSequenceError

from actors.proxy.routing import PLACING
from framework.actor import Actor
from framework.config import start_budget
from framework.transport import KeyValueStore, Transport
from schemas.kv import PLACEMENT_CLAIM
from schemas.lifecycle import ServerStatus

CLAIM_WAIT_S = 10.0


@dataclass(frozen=True)
class Claim:
    node: str
    revision: int  # of our own claim; 0 when the claim is another proxy's


class PlacementClaims:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.kv: KeyValueStore | None = None  # ASR_SERVERS, once the actor's setup opened it

    async def connect(self, transport: Transport) -> None:
        self.kv = await transport.kv(PLACEMENT_CLAIM.bucket)

    async def claim(self, model_id: str, node: str, exclude: set[str]) -> Claim | None:
        """Claim the placement of a model that runs nowhere (schemas.kv.PLACEMENT_CLAIM): ours, or the node another
        proxy claimed it for a moment ago. While JetStream cannot answer (electing a leader after losing a server
        takes seconds) it is tried again for up to CLAIM_WAIT_S; then None: placed unclaimed, as on one host."""
        assert self.kv is not None, "placement claimed before the bucket was opened (connect)"
        give_up = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                return await self._claim_once(self.kv, model_id, node, exclude)
            except KeyWrongLastSequenceError:
                continue  # another proxy wrote between our read and our write: read again
            except Exception as exc:
                if time.monotonic() > give_up:
                    self.actor.log.warning("placement of %s not claimed: %s", model_id, exc)
                    return None
                await asyncio.sleep(0.5)

    async def _claim_once(self, kv: KeyValueStore, model_id: str, node: str, exclude: set[str]) -> Claim:
        key = PLACEMENT_CLAIM.key(model_id)
        mine = PLACEMENT_CLAIM.encode(
            ServerStatus(model=model_id, state=PLACING, runtime="", node=node, started_at=time.time())
        )
        try:
            return Claim(node, await kv.create(key, mine))
        except KeyWrongLastSequenceError:
            entry = await kv.get(key)
        theirs = PLACEMENT_CLAIM.decode(entry.value or b"")
        fresh = time.time() - (theirs.started_at or 0.0) < start_budget(self.actor.config)
        if fresh and theirs.node not in exclude:
            return Claim(theirs.node, 0)
        return Claim(node, await kv.update(key, mine, last=entry.revision))

    async def unclaim(self, model_id: str, revision: int) -> None:
        """The placement failed: the claim must not send others to that node."""
        if self.kv is not None:  # None: claimed nothing
            with contextlib.suppress(Exception):
                await self.kv.delete(PLACEMENT_CLAIM.key(model_id), last=revision)
