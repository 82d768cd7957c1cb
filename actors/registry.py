"""Registry actor: the model catalogue from the configuration, and the default model."""

from __future__ import annotations

import time

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from framework.actor import Actor, endpoint
from framework.config import Config
from framework.kv_view import KvView
from framework.transport import KeyValueStore
from schemas import endpoints, errors
from schemas import kv as kv_records
from schemas.events import DefaultModelChanged
from schemas.registry import (
    FirstSeen,
    GetModel,
    Installed,
    InstalledModels,
    ListModels,
    ModelInfo,
    ModelList,
    SetDefaultModel,
    check_transcriber,
    not_installed,
    resolve,
    resolve_for,
    spec_fields,
)


def catalogue(config: Config) -> dict[str, ModelInfo]:
    docker = config.docker
    return {
        model_id: ModelInfo(
            **{
                **spec_fields(m),
                "name": m.name or model_id,
                "image": m.image or f"{docker.image_prefix}/{model_id}:{docker.image_tag}",
                "cuda_image": m.cuda_image or f"{docker.image_prefix}/{model_id}:{docker.image_tag}-cuda",
            },
            id=model_id,
        )
        for model_id, m in config.models.items()
    }


def merge_installed(reports: dict[str, InstalledModels]) -> dict[str, Installed]:
    """The nodes' reports as one: installed where any node has the model (where: on which node, when several)."""
    merged: dict[str, Installed] = {}
    several = len(reports) > 1
    for key, report in sorted(reports.items()):
        node = key.rpartition(".")[2]
        for model, state in report.models.items():
            if several:
                state = msgspec.structs.replace(state, where=f"{node}: {state.where}" if state.where else node)
            known = merged.get(model)
            if known is None or (state.installed and not known.installed):
                merged[model] = state
            elif state.installed and known.installed and several:
                merged[model] = msgspec.structs.replace(known, where=f"{known.where}; {state.where}")
    return merged


class Registry(Actor):
    """Model catalogue: list, get (by id or alias), set the default model."""

    name = "registry"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.models = catalogue(config)
        # Each node's report (installed.<node>): a model is installed when some node has it.
        self.installed: KvView[InstalledModels] = KvView(kv_records.INSTALLED)
        self.default_model = ""
        self.first_seen: dict[str, int] = {}  # model id -> when the registry first saw it (OpenAI's `created`)
        self.default_model = self.resolve(config.registry.default_model).id
        self.settings: KeyValueStore | None = None  # ASR_SETTINGS, once started

    def listing(self) -> ModelList:
        """The catalogue, each model with what the lifecycle actor last reported of its weights."""
        reported = merge_installed(self.installed.values)
        models = []
        for model in self.models.values():
            state = reported.get(model.id)
            if state is not None:
                where = (
                    state.where if state.installed else ", missing ".join(filter(None, [state.where, state.missing]))
                )
                model = msgspec.structs.replace(
                    model, installed=state.installed, installed_where=where, size_bytes=state.size_bytes or None
                )
            models.append(msgspec.structs.replace(model, created=self.first_seen.get(model.id, 0)))
        return ModelList(
            models=models,
            default_model=self.default_model,
            multilingual_model=self.config.registry.multilingual_model,
        )

    def resolve(self, name: str) -> ModelInfo:
        return resolve(self.listing(), name)

    async def setup(self) -> None:
        # A default chosen at run time (POST /v1/settings/model) outlives a restart of the registry.
        self.settings = await self.transport.kv(kv_records.DEFAULT_MODEL.bucket)
        try:
            entry = await self.settings.get(kv_records.DEFAULT_MODEL.key())
            saved = kv_records.DEFAULT_MODEL.decode(entry.value or b"")
        except (KeyNotFoundError, msgspec.DecodeError):
            saved = ""
        if saved in self.models:
            self.default_model = saved
        self.first_seen = await self._first_seen(self.settings)
        await self.installed.follow(self.transport, wait=2.0)
        await self._publish_catalogue()
        self.loop(self._follow_installed())

    async def _first_seen(self, settings: KeyValueStore) -> dict[str, int]:
        """When each configured model was first seen, kept in KV (compare-and-set: registries on several hosts
        agree on the first one's time)."""
        record = kv_records.FIRST_SEEN
        for _ in range(5):
            try:
                entry = await settings.get(record.key())
                seen, revision = record.decode(entry.value or b""), entry.revision
            except (KeyNotFoundError, msgspec.DecodeError):
                seen, revision = FirstSeen(), 0
            new = {model_id: int(time.time()) for model_id in self.models if model_id not in seen.models}
            if not new:
                return seen.models
            seen.models.update(new)
            try:
                if revision:
                    await settings.update(record.key(), record.encode(seen), last=revision)
                else:
                    await settings.create(record.key(), record.encode(seen))
                return seen.models
            except KeyWrongLastSequenceError:
                continue  # another registry wrote meanwhile: read its times
        return seen.models

    async def _follow_installed(self) -> None:
        """The catalogue shows what the lifecycle actor reports installed: publish it again when that changes."""
        published = self.listing()
        while True:
            await self.installed.changed_or(60.0)
            if self.listing() != published:
                published = self.listing()
                await self._publish_catalogue()

    async def _publish_catalogue(self) -> None:
        """The one record every resolver watches (framework.catalogue)."""
        assert self.settings is not None
        await self.settings.put(kv_records.CATALOGUE.key(), kv_records.CATALOGUE.encode(self.listing()))

    @endpoint(endpoints.REGISTRY_LIST)
    async def list_models(self, _: ListModels) -> ModelList:
        return self.listing()

    @endpoint(endpoints.REGISTRY_GET)
    async def get_model(self, msg: GetModel) -> ModelInfo:
        return resolve_for(self.listing(), msg.id, msg.task, msg.language)

    @endpoint(endpoints.REGISTRY_SET_DEFAULT)
    async def set_default(self, msg: SetDefaultModel) -> ModelInfo:
        model = self.resolve(msg.model_id)
        check_transcriber(model)  # the default transcribes: a diarizer cannot be it
        if model.installed is False:
            raise not_installed(model, errors.CONFLICT)
        previous, self.default_model = self.default_model, model.id
        assert self.settings is not None
        await self.settings.put(kv_records.DEFAULT_MODEL.key(), kv_records.DEFAULT_MODEL.encode(model.id))
        await self._publish_catalogue()
        if previous != model.id:
            await self.publish(DefaultModelChanged(model=model.id, previous=previous))
        return model
