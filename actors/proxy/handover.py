"""Hand-over: a request that another node should serve (`routing.choose_node`) is handed to that node's proxies on
``asr.forward.<node>.<model>`` and their partial replies relayed to our requester. They send a keepalive every
second while they work; one silent for SILENCE_S is taken for a lost node, left out for its lease, and the request
is placed again, once, elsewhere. A placement of a model that runs nowhere is claimed first (`claims`)."""

from __future__ import annotations

import asyncio
import time

from actors.proxy.claims import PlacementClaims
from actors.proxy.relay import Sent
from actors.proxy.routing import choose_node
from actors.proxy.serving import Serving
from framework import bus
from framework.actor import Actor, send_partial
from framework.catalogue import Catalogue
from framework.config import start_budget
from framework.kv_view import KvView
from schemas import codec, endpoints, errors
from schemas.errors import AsrError, ErrorCode
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord, alive
from schemas.transcribe import TranscribeRequest, TranscriptionResult

# A node with no proxy on the bus is tried again every NODE_RETRY_S while its heartbeat is fresh, for at most
# node.dead_after: its nats-server restarting takes seconds (more on a busy host: the restarted server rejoins the
# cluster, the proxy reconnects), and placing its models elsewhere meanwhile would start copies of them that
# nothing stops once it is back. A node is lost when its heartbeat says so, the janitors' rule too — or when it
# beats on without a proxy (its bus works: the proxy itself is down).
NODE_RETRY_S = 0.5
# A node whose proxy sent nothing for this long is lost: far above a keepalive's period even on a busy machine.
SILENCE_S = 10.0


class HandOver:
    def __init__(
        self,
        actor: Actor,
        catalogue: Catalogue,
        nodes: KvView[NodeRecord],
        server_records: KvView[ServerStatus],
        claims: PlacementClaims,
        serving: Serving,
    ) -> None:
        self.actor, self.catalogue, self.nodes, self.server_records = actor, catalogue, nodes, server_records
        self.claims, self.serving = claims, serving
        self.config, self.me, self.log = actor.config, actor.node_name, actor.log
        self.lost: dict[str, float] = {}  # node -> until when it is not chosen (it went silent, or had no proxy)

    def live_nodes(self) -> dict[str, NodeRecord]:
        now = time.monotonic()
        for node, until in list(self.lost.items()):
            if until <= now:
                del self.lost[node]
        nodes = alive(self.nodes.values.values(), self.config.node.dead_after)
        return {name: n for name, n in nodes.items() if name not in self.lost}

    async def route(self, msg: TranscribeRequest, model_name: str) -> TranscriptionResult:
        """Serve here, or hand the request to the node that should serve it; a node lost on the way (no proxy
        there, or silent) is left out and the request placed again, once."""
        try:
            model = self.catalogue.resolve_for(model_name, msg.task, msg.language)
        except AsrError:
            return await self.serving.transcribe(msg, model_name)  # the error, reported as for any request
        tried: set[str] = set()
        sent = Sent()  # streamed text relayed so far, across a second attempt
        for attempt in (1, 2):
            nodes = self.live_nodes()
            budget = start_budget(self.config)
            exclude = tried | set(self.lost)
            servers = self.server_records.values.values()
            node, placed = choose_node(model, self.me, nodes, servers, exclude, budget)
            claim = await self.claims.claim(model.id, node, exclude) if placed else None
            if claim is not None:
                node = claim.node
            try:
                if node == self.me:
                    return await self.serving.transcribe(msg, model.id, sent)
                return await self._hand_over_within_grace(node, model.id, msg, sent)
            except BaseException as exc:
                # A placement that failed is not a hint for others; one that worked stays one for its lifetime
                # (claim_valid_s): proxies whose view of the servers lags (a watch re-made after a server was
                # lost) still send the model's requests there instead of starting it again.
                if claim is not None and claim.revision:
                    self.actor.spawn(self.claims.unclaim(model.id, claim.revision))
                if not isinstance(exc, AsrError):
                    raise
                if node == self.me or attempt == 2:
                    raise
                if exc.kind == ErrorCode.CONNECTION_DROPPED:
                    # Our own connection went (its server was lost): once reconnected, the request goes again
                    # (a transcription changes nothing: doing it twice is safe).
                    self.log.warning("connection lost with request %s: sending it again", msg.request_id)
                    await bus.reconnected(self.actor.connection, bus.RECONNECT_WAIT_S)
                    continue
                if exc.kind not in (ErrorCode.NO_RESPONDERS, ErrorCode.SILENT):
                    raise
                self.log.warning("node %s lost with request %s: %s; placing it again", node, msg.request_id, exc)
                self.lost[node] = time.monotonic() + self.config.node.dead_after
                tried.add(node)
        raise AssertionError("unreachable")

    async def _hand_over_within_grace(
        self, node: str, model_id: str, msg: TranscribeRequest, sent: Sent
    ) -> TranscriptionResult:
        # Never longer than the request may take; and a node that beats twice meanwhile has its bus: its proxy is
        # gone, not its nats-server, so another node serves (a restarting nats-server carries no heartbeats).
        patience = min(self.config.node.dead_after, msg.timeout or self.config.gateway.request_timeout)
        give_up, last_beat, beats = time.monotonic() + patience, self._heartbeat(node), 0
        while True:
            try:
                return await self._hand_over(node, model_id, msg, sent)
            except AsrError as exc:
                if exc.kind != ErrorCode.NO_RESPONDERS or time.monotonic() > give_up or node not in self.live_nodes():
                    raise
                beat = self._heartbeat(node)
                if beat > last_beat:  # a heartbeat since the last look
                    beats, last_beat = beats + 1, beat
                    if beats >= 2:
                        raise
                await asyncio.sleep(NODE_RETRY_S)

    def _heartbeat(self, node: str) -> float:
        return max((n.heartbeat_at for n in self.nodes.values.values() if n.name == node), default=0.0)

    async def _hand_over(self, node: str, model_id: str, msg: TranscribeRequest, sent: Sent) -> TranscriptionResult:
        """The request served by `node`'s proxies; their partial replies relayed to our requester."""
        subject = endpoints.FORWARD.on(node).at(model_id).subject
        timeout = (msg.timeout or self.config.gateway.request_timeout) + 5
        what = f"node {node} ({model_id})"
        replies = bus.stream_replies(
            self.actor.connection, subject, codec.encode(msg), timeout=timeout, what=what, silence=SILENCE_S
        )
        async for reply in replies:
            message = bus.decode_streamed(reply, what)
            if isinstance(message, TranscriptionResult):
                return message
            if message.segment is None:
                if not sent.opened:  # once, even when a second node serves it after the first was lost
                    sent.opened = True
                    await send_partial(message)
            elif message.segment.end > sent.until:
                sent.until = message.segment.end
                await send_partial(message)
        raise AsrError(errors.INTERNAL, f"{what} ended without a result")
