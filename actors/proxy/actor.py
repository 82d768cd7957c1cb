"""Model proxy actor: serves ``asr.transcribe.<model>`` and forwards audio to the model server."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import msgspec

from actors.proxy.queue import ModelQueue
from framework import bus
from framework.actor import Actor
from framework.config import Config
from schemas import errors, subjects
from schemas.durations import parse_duration
from schemas.errors import AsrError
from schemas.events import TranscriptionCompleted, TranscriptionFailed, TranscriptionStarted
from schemas.formats import render_text
from schemas.lifecycle import EnsureServer, ServerStatus
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList
from schemas.transcribe import RESPONSE_FORMATS, TranscribeRequest, TranscriptionResult

# Errors that mean "the server is gone", not "the audio is bad": worth one retry on a fresh server.
_SERVER_GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_REGISTRY_WAIT_S = 60.0
LIFECYCLE_RESTART_WAIT_S = 10.0


class ModelProxy(Actor):
    """One queue group per model: many proxies share the load of a model."""

    name = "proxy"
    max_concurrency = 256

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(config.gateway.request_timeout, connect=5.0))
        self.queues: dict[str, ModelQueue] = {}
        self.models: dict[str, ModelInfo] = {}

    async def setup(self) -> None:
        # Before the service is discoverable: a proxy that answers $SRV.PING serves every model (/health relies on it).
        catalogue = await self._catalogue()
        self.models = {m.id: m for m in catalogue.models} | {a: m for m in catalogue.models for a in m.aliases}

    async def start(self) -> None:
        await super().start()
        names = [*self.models, "whisper-1", "default"]
        for name in names:
            await self.add_endpoint(
                subjects.transcribe(name),
                self._handler(name),
                TranscribeRequest,
                queue_group=f"asrpro-proxy-{name}",
            )
        await self.bus.flush()
        self.log.info("serving %s", ", ".join(subjects.transcribe(n) for n in names))

    async def _catalogue(self) -> ModelList:
        deadline = time.monotonic() + _REGISTRY_WAIT_S
        while True:
            try:
                return await self.request(subjects.REGISTRY_LIST, ListModels(), ModelList)
            except AsrError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"registry did not answer within {_REGISTRY_WAIT_S:g} s: {exc.message}") from exc
                await asyncio.sleep(0.5)

    async def teardown(self) -> None:
        await self.http.aclose()

    def _handler(self, name: str):  # type: ignore[no-untyped-def]
        async def handle(msg: TranscribeRequest) -> TranscriptionResult:
            return await self.transcribe(name, msg)

        return handle

    async def _resolve(self, name: str) -> ModelInfo:
        """Aliases of the default model change with it: ask the registry; others come from the catalogue."""
        model = self.models.get(name)
        if model is None:
            model = await self.request(subjects.REGISTRY_GET, GetModel(id=name), ModelInfo)
        return model

    def _queue(self, model: ModelInfo) -> ModelQueue:
        queue = self.queues.get(model.id)
        if queue is None:
            lifecycle = self.config.lifecycle
            queue = ModelQueue(
                model.id, model.max_parallel or lifecycle.max_parallel, model.max_queue or lifecycle.max_queue
            )
            self.queues[model.id] = queue
        return queue

    async def transcribe(self, name: str, msg: TranscribeRequest) -> TranscriptionResult:
        msg.request_id = msg.request_id or uuid.uuid4().hex
        t0 = time.monotonic()
        deadline = t0 + (msg.timeout or self.config.gateway.request_timeout)
        model_id = name
        try:
            if msg.response_format not in RESPONSE_FORMATS:
                raise AsrError(
                    errors.BAD_REQUEST,
                    f"response_format '{msg.response_format}' is not one of {', '.join(RESPONSE_FORMATS)}",
                )
            try:
                keep_alive = parse_duration(msg.keep_alive)
            except ValueError as exc:
                raise AsrError(errors.BAD_REQUEST, str(exc)) from None
            model = await self._resolve(name)
            model_id = model.id
            audio = await self._audio(msg)
            async with self._queue(model).slot(deadline) as queued_s:
                await self.publish(
                    TranscriptionStarted(model=model_id, request_id=msg.request_id, audio_bytes=len(audio))
                )
                server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=False)
                try:
                    result = await self._forward(server, msg, audio, deadline)
                except _SERVER_GONE as exc:
                    self.log.warning("model server of %s gone (%r): retrying on a fresh one", model_id, exc)
                    server = await self._ensure(model_id, msg.request_id, keep_alive, deadline, restart=True)
                    try:
                        result = await self._forward(server, msg, audio, deadline)
                    except _SERVER_GONE as exc2:
                        raise AsrError(
                            errors.UNAVAILABLE, f"model server of {model_id} failed twice: {exc2!r}"
                        ) from exc2
        except AsrError as exc:
            await self.publish(
                TranscriptionFailed(model=model_id, request_id=msg.request_id, code=exc.code, reason=exc.message)
            )
            raise
        total = time.monotonic() - t0
        result.model = model_id
        result.timing.total_s = round(total, 4)
        result.timing.queue_s = round(queued_s, 4)
        result.timing.cold_start = server.cold_start
        result.timing.rtf = round(total / result.duration, 4) if result.duration else 0.0
        result.formatted = render_text(result, msg.response_format)
        await self.publish(
            TranscriptionCompleted(
                model=model_id,
                request_id=msg.request_id,
                audio_s=result.duration,
                total_s=result.timing.total_s,
                cold_start=server.cold_start,
            )
        )
        return result

    async def _ensure(
        self, model_id: str, request_id: str, keep_alive: float | None, deadline: float, *, restart: bool
    ) -> ServerStatus:
        # A lifecycle actor that is restarting (supervisor back-off) is waited for, briefly: requests ride
        # through its restart instead of failing.
        give_up = min(deadline, time.monotonic() + LIFECYCLE_RESTART_WAIT_S)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsrError(errors.TIMEOUT, f"request for {model_id} timed out before its model server was ready")
            try:
                return await self.request(
                    subjects.LIFECYCLE_ENSURE,
                    EnsureServer(
                        model=model_id, request_id=request_id, restart=restart, keep_alive=keep_alive, timeout=remaining
                    ),
                    ServerStatus,
                    # lifecycle answers 503 itself at the deadline; the extra seconds cover a lifecycle that died.
                    timeout=remaining + 5,
                )
            except AsrError as exc:
                if exc.kind != bus.NO_RESPONDERS or time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.25)

    async def _audio(self, msg: TranscribeRequest) -> bytes:
        if msg.audio_ref:
            try:
                store = await self.bus.jetstream().object_store(subjects.AUDIO_BUCKET)
                obj = await store.get(msg.audio_ref)
            except Exception as exc:
                raise AsrError(
                    errors.BAD_REQUEST,
                    f"audio_ref '{msg.audio_ref}' not found in bucket {subjects.AUDIO_BUCKET}: {exc}",
                ) from exc
            # The upload was for this one request: free the space now rather than wait for the bucket's TTL.
            self.spawn(store.delete(msg.audio_ref))
            audio = obj.data or b""
        else:
            audio = msg.audio
        if not audio:
            raise AsrError(errors.BAD_REQUEST, "no audio: the file is empty")
        return audio

    async def _forward(
        self, server: ServerStatus, msg: TranscribeRequest, audio: bytes, deadline: float
    ) -> TranscriptionResult:
        data = {"response_format": "verbose_json", "temperature": str(msg.temperature)}
        if msg.language:
            data["language"] = msg.language
        if msg.prompt:
            data["prompt"] = msg.prompt
        try:
            response = await self.http.post(
                f"{server.url}/transcribe",
                files={"file": (msg.filename or "audio", audio)},
                data=data,
                timeout=httpx.Timeout(max(0.1, deadline - time.monotonic()), connect=5.0),
            )
        except httpx.TimeoutException as exc:
            raise AsrError(errors.TIMEOUT, f"model server of {server.model} did not answer in time") from exc
        if response.status_code != 200:
            raise AsrError(str(response.status_code), _error_message(response))
        try:
            return msgspec.json.decode(response.content, type=TranscriptionResult)
        except msgspec.DecodeError as exc:
            raise AsrError(errors.INTERNAL, f"model server of {server.model} sent a malformed result: {exc}") from exc


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:500] or f"model server answered HTTP {response.status_code}"
