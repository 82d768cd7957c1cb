"""Registry actor: the model catalogue from the configuration, and the default model."""

from __future__ import annotations

import msgspec
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framework.actor import Actor, endpoint
from framework.config import Config
from framework.kv_view import KvView
from schemas import endpoints, errors, subjects
from schemas.events import DefaultModelChanged
from schemas.registry import (
    CATALOGUE_KEY,
    INSTALLED_KEY,
    GetModel,
    InstalledModels,
    InstalledState,
    ListModels,
    ModelInfo,
    ModelList,
    SetDefaultModel,
    not_installed,
    resolve,
)

DEFAULT_KEY = "default_model"


def catalogue(config: Config) -> dict[str, ModelInfo]:
    docker = config.docker
    return {
        model_id: ModelInfo(
            id=model_id,
            name=m.name or model_id,
            family=m.family,
            size=m.size,
            engine=m.engine,
            languages=list(m.languages),
            image=m.image or f"{docker.image_prefix}/{model_id}:{docker.image_tag}",
            cuda_image=m.cuda_image or f"{docker.image_prefix}/{model_id}:{docker.image_tag}-cuda",
            weights=m.weights,
            gpu_memory_mb=m.gpu_memory_mb,
            sample_rate=m.sample_rate,
            compute_type=m.compute_type,
            inactivity_timeout=m.inactivity_timeout,
            cpu_fallback=m.cpu_fallback,
            max_parallel=m.max_parallel,
            max_queue=m.max_queue,
            aliases=list(m.aliases),
            decoding=m.decoding,
        )
        for model_id, m in config.models.items()
    }


def merge_installed(reports: dict[str, InstalledModels]) -> dict[str, InstalledState]:
    """The nodes' reports as one: installed where any node has the model (where: on which node, when several)."""
    merged: dict[str, InstalledState] = {}
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

    def __init__(self, config: Config, settings: KeyValue | None = None) -> None:
        super().__init__(config)
        self.models = catalogue(config)
        # Each node's report (installed.<node>): a model is installed when some node has it.
        self.installed: KvView[InstalledModels] = KvView(
            subjects.SETTINGS_BUCKET, f"{INSTALLED_KEY}.>", InstalledModels
        )
        self.default_model = ""
        self.default_model = self.resolve(config.registry.default_model).id
        self.settings = settings  # None in memory: nothing outlives the process

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
            models.append(model)
        return ModelList(models=models, default_model=self.default_model)

    def resolve(self, name: str) -> ModelInfo:
        return resolve(self.listing(), name)

    async def setup(self) -> None:
        if self.nc is None:
            return
        # A default chosen at run time (POST /v1/settings/model) outlives a restart of the registry.
        self.settings = await self.connection.jetstream().key_value(subjects.SETTINGS_BUCKET)
        try:
            saved = (await self.settings.get(DEFAULT_KEY)).value
        except KeyNotFoundError:
            saved = None
        if saved and saved.decode() in self.models:
            self.default_model = saved.decode()
        await self.installed.follow(self.connection, wait=2.0)
        await self._publish_catalogue()
        self.loop(self._follow_installed())

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
        if self.settings is not None:
            await self.settings.put(CATALOGUE_KEY, msgspec.msgpack.encode(self.listing()))

    @endpoint(endpoints.REGISTRY_LIST)
    async def list_models(self, _: ListModels) -> ModelList:
        return self.listing()

    @endpoint(endpoints.REGISTRY_GET)
    async def get_model(self, msg: GetModel) -> ModelInfo:
        return self.resolve(msg.id)

    @endpoint(endpoints.REGISTRY_SET_DEFAULT)
    async def set_default(self, msg: SetDefaultModel) -> ModelInfo:
        model = self.resolve(msg.model_id)
        if model.installed is False:
            raise not_installed(model, errors.CONFLICT)
        previous, self.default_model = self.default_model, model.id
        if self.settings is not None:
            await self.settings.put(DEFAULT_KEY, model.id.encode())
        await self._publish_catalogue()
        if previous != model.id:
            await self.publish(DefaultModelChanged(model=model.id, previous=previous))
        return model
