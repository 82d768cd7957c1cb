from __future__ import annotations

import msgspec


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
