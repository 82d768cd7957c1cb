from __future__ import annotations

import msgspec

from schemas import errors


class ModelInfo(msgspec.Struct, kw_only=True):
    id: str
    name: str
    family: str  # whisper | parakeet
    size: str
    engine: str  # faster-whisper | onnx-asr
    languages: list[str] = []
    image: str = ""
    weights: str = ""  # "package:<module>" or a directory
    gpu_memory_mb: int = 0
    sample_rate: int = 16000
    compute_type: str = "int8"  # on GPU; a server on CPU always runs int8
    inactivity_timeout: float | None = None  # None: the lifecycle default; -1: never
    cpu_fallback: bool = False
    max_parallel: int | None = None
    max_queue: int | None = None
    aliases: list[str] = []


class ListModels(msgspec.Struct, kw_only=True):
    pass


class ModelList(msgspec.Struct, kw_only=True):
    models: list[ModelInfo]
    default_model: str


class GetModel(msgspec.Struct, kw_only=True):
    id: str  # a model id or an alias


class SetDefaultModel(msgspec.Struct, kw_only=True):
    model_id: str


# Names that always mean "the current default model": OpenAI clients send whisper-1.
DEFAULT_ALIASES = ("whisper-1", "default")
# Key of the catalogue (a ModelList) in the KV bucket ASR_SETTINGS: the registry writes it, the gateway,
# the proxies and the lifecycle actors watch it and resolve names from their copy.
CATALOGUE_KEY = "catalogue"


def find(listing: ModelList, name: str) -> ModelInfo | None:
    """The model `name` means: an id, an alias, or one of DEFAULT_ALIASES."""
    if name in DEFAULT_ALIASES:
        name = listing.default_model
    for model in listing.models:
        if name == model.id:
            return model
    for model in listing.models:
        if name in model.aliases:
            return model
    return None


def resolve(listing: ModelList, name: str) -> ModelInfo:
    """As `find`, or 404 naming the known models."""
    model = find(listing, name)
    if model is None:
        known = ", ".join(sorted(m.id for m in listing.models))
        raise errors.AsrError(errors.NOT_FOUND, f"model '{name}' not found; known models: {known}")
    return model
