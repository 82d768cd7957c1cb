from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from schemas import errors
from schemas.languages import multilingual
from schemas.transcribe import FALLBACK_TEMPERATURES, MAX_BATCH_SIZE, TranscribeRequest, diarization


class Decoding(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a Whisper model decodes unless a request says otherwise: faster-whisper's own defaults, so that the
    system transcribes as faster-whisper does. Faster at some cost in accuracy: beam_size = 1, temperature = [0.0]
    (models.<id>.decoding in the configuration)."""

    beam_size: int = 5
    temperature: list[float] = msgspec.field(default_factory=lambda: list(FALLBACK_TEMPERATURES))
    condition_on_previous_text: bool = True
    vad_filter: bool = False
    # Batched decoding (docs/throughput.md): VAD-cut chunks decoded batch_size at once, for durable jobs
    # (batch_jobs) and for audio of at least batch_from_s seconds (0: never); a request's batch_size overrides
    # both. On by default because it is as accurate as the sequential decode and twice as fast on 20 minutes of
    # speech (bench/batching.py: WER 0.097 batched against 0.099 sequential); two minutes, because a shorter
    # recording is a chunk or three and gains little, and the sequential decode sends its first text sooner.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] = 8
    batch_from_s: Annotated[float, msgspec.Meta(ge=0.0)] = 120.0
    batch_jobs: bool = True


class ModelSpec(msgspec.Struct, kw_only=True):
    """What describes a model, in the configuration (`ModelConfig`, models.<id>) and in the catalogue
    (`ModelInfo`) alike: declared once, so the two cannot drift."""

    name: str = ""  # the catalogue shows the id when the configuration gives none
    family: Literal["whisper", "parakeet", "diarizer"] = "whisper"
    size: str = ""
    engine: Literal["faster-whisper", "onnx-asr", "resemblyzer"] = "faster-whisper"
    languages: list[str] = []
    image: str = ""
    cuda_image: str = ""  # the image for a server placed on a GPU (CUDA libraries inside)
    weights: str = ""  # "package:<module>" or a directory
    gpu_memory_mb: int = 0
    sample_rate: int = 16000
    compute_type: str = "int8"  # on GPU; a server on CPU always runs int8
    aliases: list[str] = []
    inactivity_timeout: float | None = None  # seconds; None: the lifecycle default; -1: never
    cpu_fallback: bool = False  # run on the CPU (int8) when no GPU has room, instead of waiting
    max_parallel: int | None = None
    max_queue: int | None = None
    # Dynamic batching (docs/throughput.md): concurrent requests of at most 30 s with matching decoding options
    # decode as one batch of up to max_batch (1: each alone), the first waiting at most batch_window_ms for more
    # while the server is busy. The proxy forwards at least max_batch requests at once to let batches fill.
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH_SIZE)] = 1
    batch_window_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    decoding: Decoding = msgspec.field(default_factory=Decoding)  # faster-whisper's defaults unless set
    # The diarizer model (family "diarizer") that finds this model's speakers for diarize=speakers; "": the
    # catalogue's first diarizer.
    diarizer: str = ""

    def parallel(self, default: int) -> int:
        """Requests forwarded at once to this model's server (`default`: lifecycle.max_parallel): enough to fill
        a batch where it batches."""
        return max(self.max_parallel or default, self.max_batch)


def spec_fields(spec: ModelSpec) -> dict[str, Any]:
    """The `ModelSpec` part of a configuration or catalogue entry, to build the other from it."""
    fields = {name: getattr(spec, name) for name in ModelSpec.__struct_fields__}
    return {name: list(value) if isinstance(value, list) else value for name, value in fields.items()}  # not shared


class ModelInfo(ModelSpec, kw_only=True):
    """A catalogue entry: the model's spec as configured, its id, and whether its weights are installed."""

    id: str
    # Whether its weights are on the host that runs its model servers, as the lifecycle actor last reported
    # (None: not reported yet), and where they are (or what is missing).
    installed: bool | None = None
    installed_where: str = ""
    size_bytes: int | None = None  # of its weights on disk, where installed in a folder
    created: int = 0  # when the registry first saw this id (Unix seconds, kept in KV: schemas.kv.FIRST_SEEN)


class Installed(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Whether a model's weights are on a host, and where (or what is missing): what the runtime finds
    (framework.installed_weights) and what a node reports (`InstalledModels`), one type."""

    installed: bool
    where: str = ""  # the directory, package or image
    missing: str = ""  # what is absent when not installed
    size_bytes: int = 0
    model: str = ""  # the model, where the record does not say it already (a report is keyed by model)

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 2**20


class InstalledModels(msgspec.Struct, kw_only=True):
    """What the lifecycle actor found on its host: KV ASR_SETTINGS key `installed`."""

    models: dict[str, Installed] = {}


class ListModels(msgspec.Struct, kw_only=True):
    pass


class ModelList(msgspec.Struct, kw_only=True):
    models: list[ModelInfo]
    default_model: str
    # What an OpenAI name means for translations and languages the default model lacks (registry.multilingual_model;
    # empty: the largest installed multilingual model).
    multilingual_model: str = ""


class FirstSeen(msgspec.Struct, kw_only=True):
    """When the registry first saw each model id (OpenAI's `created`): KV ASR_SETTINGS key `first_seen`."""

    models: dict[str, int] = {}


class GetModel(msgspec.Struct, kw_only=True):
    id: str  # a model id or an alias
    # What it is for: an OpenAI name (whisper-1) means the model that can do it (resolve_for).
    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None


class SetDefaultModel(msgspec.Struct, kw_only=True):
    model_id: str


# OpenAI's model names: every OpenAI client sends one of them. Each means the default model, or a model that can
# do what the request asks where the default cannot (`resolve_for`); `/v1/models` lists each as an entry.
OPENAI_NAMES = (
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
    "gpt-4o-transcribe-diarize",
)
# Names that always mean "the current default model" for what it can do.
DEFAULT_ALIASES = (*OPENAI_NAMES, "default")
# Whisper sizes, smallest first: the largest installed multilingual model is the best one we have.
_SIZES = ("tiny", "base", "small", "medium", "turbo", "large", "large-v1", "large-v2", "large-v3")


def not_installed(model: ModelInfo, status: str = errors.NOT_FOUND) -> errors.AsrError:
    """A model without weights here is not a failure: it needs `asrpro models pull` (404, so clients do not retry)."""
    where = f" ({model.installed_where})" if model.installed_where else ""
    return errors.AsrError(
        status,
        f"{model.id} is not installed{where}: run `asrpro models pull {model.id}` on the host of its model servers",
        kind=errors.ErrorCode.MODEL_NOT_INSTALLED,
        param="model",
    )


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


def can_serve(model: ModelInfo, task: str, language: str | None) -> bool:
    """Whether `model` can do the request: translate (a multilingual Whisper), or decode in `language` (a
    diarizer decodes no words)."""
    if model.family == "diarizer":
        return False
    if task == "translate" and (model.family != "whisper" or not multilingual(model.languages)):
        return False
    code = (language or "").strip().lower()
    return not (code and model.languages and code not in model.languages)


def multilingual_choice(listing: ModelList, task: str, language: str | None) -> ModelInfo | None:
    """The model an OpenAI name means where the default cannot serve: the configured one, else the largest
    installed model that can."""
    configured = find(listing, listing.multilingual_model) if listing.multilingual_model else None
    if configured is not None and configured.installed is not False and can_serve(configured, task, language):
        return configured
    able = [m for m in listing.models if m.installed and can_serve(m, task, language)]
    return max(able, key=lambda m: _SIZES.index(m.size) if m.size in _SIZES else -1, default=None)


def resolve_for(listing: ModelList, name: str, task: str = "transcribe", language: str | None = None) -> ModelInfo:
    """As `resolve`; an OpenAI name (whisper-1, ...) whose default model cannot do the request (translate, or a
    language it lacks) means the model that can (`multilingual_choice`). None can: the default, whose checks say
    why (400)."""
    model = resolve(listing, name)
    if name not in DEFAULT_ALIASES or can_serve(model, task, language):
        return model
    return multilingual_choice(listing, task, language) or model


def resolve(listing: ModelList, name: str) -> ModelInfo:
    """As `find`, or 404 naming the known models."""
    model = find(listing, name)
    if model is None:
        known = ", ".join(sorted(m.id for m in listing.models))
        message = f"model '{name}' not found; known models: {known}"
        raise errors.AsrError(errors.ErrorCode.MODEL_NOT_FOUND, message, param="model")
    return model


def check_transcriber(model: ModelInfo) -> None:
    """A diarizer finds who speaks, not what is said: asked to transcribe, a 400 naming `model`."""
    if model.family == "diarizer":
        raise errors.AsrError(
            errors.BAD_REQUEST,
            f"{model.id} is a diarizer: it finds who speaks, not what is said; transcribe with a transcription "
            "model and diarize=speakers",
            param="model",
        )


def diarizer_for(model: ModelInfo, catalogue: ModelList | None) -> ModelInfo:
    """The diarizer paired with `model` (its `diarizer`, else the catalogue's first): a 400 when there is none,
    model_not_installed (503: it can be pulled) when its weights are not here."""
    models = {m.id: m for m in (catalogue.models if catalogue else [])}
    diarizers = [m.id for m in models.values() if m.family == "diarizer"]
    name = model.diarizer or (diarizers[0] if diarizers else "")
    diarizer = models.get(name)
    if diarizer is None or diarizer.family != "diarizer":
        problem = f"{model.id}'s diarizer {name!r} is not a diarizer of the catalogue" if name else "none is configured"
        raise errors.AsrError(
            errors.BAD_REQUEST,
            f"diarize=speakers needs a diarizer model: {problem} (docs/diarization.md); a recording with one "
            "speaker per channel is diarized with diarize=channels",
            param="diarize",
        )
    if diarizer.installed is False:
        raise not_installed(diarizer, errors.UNAVAILABLE)
    return diarizer


def diarizer_needed(msg: TranscribeRequest, model: ModelInfo, catalogue: ModelList | None) -> ModelInfo | None:
    """The diarizer a request to `model` needs (diarize=speakers, diarized_json, known speakers), checked as
    `diarizer_for` does; None when it needs none. 400 for what `diarization` refuses."""
    return diarizer_for(model, catalogue) if diarization(msg) == "speakers" else None
