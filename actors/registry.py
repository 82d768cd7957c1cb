"""Registry actor: the model catalogue from the configuration, and the default model."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from framework.actor import Actor, endpoint
from framework.config import Config
from schemas import errors, subjects
from schemas.errors import AsrError
from schemas.events import DefaultModelChanged
from schemas.registry import GetModel, ListModels, ModelInfo, ModelList, SetDefaultModel

# Names that always mean "the current default model": OpenAI clients send whisper-1.
DEFAULT_ALIASES = ("whisper-1", "default")
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
            weights=m.weights,
            gpu_memory_mb=m.gpu_memory_mb,
            sample_rate=m.sample_rate,
            compute_type=m.compute_type,
            inactivity_timeout=m.inactivity_timeout,
            cpu_fallback=m.cpu_fallback,
            max_parallel=m.max_parallel,
            max_queue=m.max_queue,
            aliases=list(m.aliases),
        )
        for model_id, m in config.models.items()
    }


class Registry(Actor):
    """Model catalogue: list, get (by id or alias), set the default model."""

    name = "registry"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.models = catalogue(config)
        self.aliases = {alias: m.id for m in self.models.values() for alias in m.aliases}
        self.default_model = self.resolve(config.registry.default_model).id
        self.settings: KeyValue

    def resolve(self, name: str) -> ModelInfo:
        if name in DEFAULT_ALIASES:
            name = self.default_model
        model = self.models.get(self.aliases.get(name, name))
        if model is None:
            known = ", ".join(sorted(self.models))
            raise AsrError(errors.NOT_FOUND, f"model '{name}' not found; known models: {known}")
        return model

    async def setup(self) -> None:
        # A default chosen at run time (POST /v1/settings/model) outlives a restart of the registry.
        self.settings = await self.bus.jetstream().key_value(subjects.SETTINGS_BUCKET)
        try:
            saved = (await self.settings.get(DEFAULT_KEY)).value
        except KeyNotFoundError:
            return
        if saved and saved.decode() in self.models:
            self.default_model = saved.decode()

    @endpoint(subjects.REGISTRY_LIST, ListModels)
    async def list_models(self, _: ListModels) -> ModelList:
        return ModelList(models=list(self.models.values()), default_model=self.default_model)

    @endpoint(subjects.REGISTRY_GET, GetModel)
    async def get_model(self, msg: GetModel) -> ModelInfo:
        return self.resolve(msg.id)

    @endpoint(subjects.REGISTRY_SET_DEFAULT, SetDefaultModel)
    async def set_default(self, msg: SetDefaultModel) -> ModelInfo:
        model = self.resolve(msg.model_id)
        previous, self.default_model = self.default_model, model.id
        await self.settings.put(DEFAULT_KEY, model.id.encode())
        if previous != model.id:
            await self.publish(DefaultModelChanged(model=model.id, previous=previous))
        return model
