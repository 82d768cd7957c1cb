"""Model proxy actor: serves ``asr.transcribe.<model>`` and forwards audio to the model server.

A warm request costs no NATS round trip beyond the caller's own: the model name is resolved from the
watched catalogue, a ready server is found in the watched records of the lifecycle actors (KV ASR_SERVERS),
and the lifecycle actor learns of the activity from the `transcribing` / `transcribed` events. Only when no
server is ready (or the one found is gone) does the proxy ask its node's lifecycle actor to ensure one (`serving`).

On a cluster a proxy talks HTTP only to its own node's servers (they listen on loopback): a request that another
node should serve (`routing.choose_node`) is handed to that node's proxies on ``asr.forward.<node>.<model>``
(`handover`, after claiming a new placement: `claims`). They send a keepalive every KEEPALIVE_S while they work.
Audio may come by reference from the object store (`audio`); progress and streamed text are relayed (`relay`).

This module holds the handlers, set-up and tear-down; each job lives in the module named for it."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.proxy.audio import AudioStore
from actors.proxy.claims import PlacementClaims
from actors.proxy.handover import HandOver
from actors.proxy.serving import Serving
from framework import kv_view, logs
from framework.actor import Actor, endpoint, on_message, send_keepalive
from framework.catalogue import Catalogue
from framework.collaborators import collaborator
from framework.config import Config
from framework.kv_view import KvView
from framework.model_server import ModelServerClient
from schemas import endpoints, errors, subjects
from schemas import kv as kv_records
from schemas.errors import AsrError, ErrorCode
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord
from schemas.transcribe import CancelTranscription, TranscribeRequest, TranscriptionResult

_CATALOGUE_WAIT_S = 60.0
KEEPALIVE_S = 1.0


class ModelProxy(Actor):
    """One queue group for every model: many proxies share the load."""

    name = "proxy"
    max_concurrency = 256

    # -- collaborators: a test replaces any of them with `worker_factory(ModelProxy, config, catalogue=...)` -----
    @collaborator
    def catalogue(self) -> Catalogue:
        return Catalogue()

    @collaborator
    def model_server(self) -> ModelServerClient:
        return ModelServerClient(timeout=self.config.gateway.request_timeout)

    @collaborator
    def server_records(self) -> KvView[ServerStatus]:
        """The lifecycle actors' records of their servers (starting, ready, stopping) and the proxies' placement
        claims, by key <node>.<model> and `_placing.<model>` (schemas.kv.SERVER, PLACEMENT_CLAIM)."""
        return KvView(kv_records.SERVER, ">")

    @collaborator
    def nodes(self) -> KvView[NodeRecord]:
        return kv_view.heartbeats()

    @collaborator
    def claims(self) -> PlacementClaims:
        return PlacementClaims(self)

    @collaborator
    def audio(self) -> AudioStore:
        return AudioStore(self)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.serving = Serving(self, self.catalogue, self.model_server, self.server_records, self.audio)
        self.handover = HandOver(self, self.catalogue, self.nodes, self.server_records, self.claims, self.serving)
        # (request id, cancel token) -> the task serving it: ids are chosen by callers and may repeat or be guessed.
        self.running: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.cancelled: set[tuple[str, str]] = set()

    async def setup(self) -> None:
        # Before the service is discoverable: a proxy that answers $SRV.PING can resolve every model
        # (/health relies on it).
        await self.catalogue.follow(self.transport, wait=_CATALOGUE_WAIT_S)
        if self.catalogue.listing is None:
            raise RuntimeError(f"no model catalogue within {_CATALOGUE_WAIT_S:g} s: {self.catalogue.unknown_reason()}")
        await self.server_records.follow(self.transport)
        await self.claims.connect(self.transport)
        await self.nodes.follow(self.transport, wait=2.0)

    async def teardown(self) -> None:
        await self.model_server.aclose()
        await self.catalogue.stop()
        await self.server_records.stop()
        await self.nodes.stop()

    @endpoint(endpoints.FORWARD, queue_group="asrpro-proxy")
    async def forwarded(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        """A request another node's proxy handed to this node: served here, with keepalives while it runs."""
        _node, model_id = subjects.node_and_model(subject)

        async def keep_alive() -> None:
            while await send_keepalive():
                await asyncio.sleep(KEEPALIVE_S)

        beating = asyncio.ensure_future(keep_alive())
        try:
            return await self._serve(msg, model_id, here=True)
        finally:
            beating.cancel()

    @endpoint(endpoints.TRANSCRIBE, queue_group="asrpro-proxy")
    async def transcribe(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        if msg.priority == "live":  # only the live actor's sessions, through asr.via: no client jumps the queue
            msg.priority = "interactive"
        return await self._serve(msg, subjects.model_from_transcribe(subject), here=False)

    @endpoint(endpoints.VIA, queue_group="asrpro-proxy")
    async def via(self, msg: TranscribeRequest, subject: str) -> TranscriptionResult:
        """The HTTP gateway of this node: routed as any request, starting from here."""
        return await self._serve(msg, subjects.node_and_model(subject)[1], here=False)

    async def _serve(self, msg: TranscribeRequest, model_name: str, *, here: bool) -> TranscriptionResult:
        msg.request_id = logs.clean_request_id(msg.request_id) or logs.request_id.get() or logs.new_request_id()
        logs.request_id.set(msg.request_id)
        task = asyncio.current_task()
        key = (msg.request_id, msg.cancel_token)
        if task is not None:
            self.running[key] = task
        try:
            if here:
                return await self.serving.transcribe(msg, model_name)
            return await self.handover.route(msg, model_name)
        except AsrError as exc:
            if exc.kind in (ErrorCode.NO_RESPONDERS, ErrorCode.SILENT, ErrorCode.CONNECTION_DROPPED):
                # Our own trouble reaching something: to our requester it is a plain 503, never "nobody serves
                # this subject" (a forwarding proxy would take this node for lost, a gateway would send again).
                exc.kind = errors.GENERIC.get(exc.code)
            raise
        except asyncio.CancelledError:
            if key not in self.cancelled:
                raise  # shutting down
            raise AsrError(ErrorCode.CANCELLED, f"request {msg.request_id} was cancelled by its requester") from None
        finally:
            self.running.pop(key, None)
            self.cancelled.discard(key)

    @on_message(subjects.CANCEL_ALL, CancelTranscription)
    async def on_cancel(self, cancellation: CancelTranscription, subject: str) -> None:
        request_id = subject[len(subjects.CANCEL_PREFIX) :]
        # Only the requester knows the token: another application cannot cancel a request by guessing its id.
        task = self.running.get((request_id, cancellation.token)) if cancellation.token else None
        if task is not None:
            self.log.info("cancelled by its requester", extra={"cancelled": request_id})
            self.cancelled.add((request_id, cancellation.token))
            task.cancel()
