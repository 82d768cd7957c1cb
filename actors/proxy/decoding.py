"""What the model server is asked to do for a request: the model's configured decoding (faster-whisper's
defaults unless configured otherwise) merged with what the request asked for, checked first."""

from __future__ import annotations

import base64
from typing import Any

from schemas import errors
from schemas.errors import AsrError
from schemas.languages import check_language, multilingual
from schemas.model_server import TranscribeOptions
from schemas.registry import Decoding, ModelInfo, ModelList
from schemas.transcribe import TranscribeRequest, diarization


def decoding_for(model: ModelInfo, msg: TranscribeRequest, catalogue: ModelList | None = None) -> TranscribeOptions:
    """400 for what the model cannot do (a language it lacks, translation by an English-only model, a temperature
    outside 0 to 1); otherwise the options, the server always answering verbose_json (the proxy renders the rest)."""
    if msg.task == "translate" and not multilingual(model.languages):
        able = [m.id for m in (catalogue.models if catalogue else []) if multilingual(m.languages) and m.installed]
        hint = (
            f"models that can: {', '.join(able)}" if able else "no installed model can: asrpro models pull whisper-base"
        )
        raise AsrError(errors.BAD_REQUEST, f"{model.id} is English-only and cannot translate; {hint}")
    temperature = msg.temperature
    if temperature is not None and not 0.0 <= temperature <= 1.0:
        raise AsrError(errors.BAD_REQUEST, f"temperature must be between 0 and 1, got {temperature}")
    decoding = model.decoding
    diarize = diarization(msg)
    # Only a diarizer needs the known speakers' samples (up to 4 MiB): not the transcription's server.
    known = msg.known_speakers if model.family == "diarizer" else []
    return TranscribeOptions(
        response_format="verbose_json",
        task=msg.task,
        language=check_language(msg.language, model.id, model.languages),
        prompt=msg.prompt or None,
        # OpenAI's semantics: 0 or none starts at 0 and lets the fallback ladder raise it; > 0 is that one value.
        temperature=[temperature] if temperature else list(decoding.temperature),
        beam_size=msg.beam_size or decoding.beam_size,
        condition_on_previous_text=decoding.condition_on_previous_text,
        vad_filter=decoding.vad_filter if msg.vad_filter is None else msg.vad_filter,
        # With diarize=speakers the words are what the diarizer's turns are matched to (dropped after unless asked).
        word_timestamps="word" in msg.timestamp_granularities or diarize == "speakers",
        hotwords=msg.hotwords or None,
        offset=msg.offset,
        diarize="channels" if diarize == "channels" else "none",
        min_speakers=msg.min_speakers,
        max_speakers=msg.max_speakers,
        speaker_names=[k.name for k in known],
        speaker_samples=[base64.b64encode(k.audio).decode() for k in known],
        **_batching(decoding, msg),
    )


def _batching(decoding: Decoding, msg: TranscribeRequest) -> dict[str, Any]:
    """Batched or sequential: what the request asked for, else the model's rule — jobs batched when
    `batch_jobs`, other audio when it lasts at least `batch_from_s` (the server knows the length, not the proxy)."""
    if msg.batch_size is not None:
        return {"batch_size": msg.batch_size}
    if msg.priority == "batch" and decoding.batch_jobs:
        return {"batch_size": decoding.batch_size}
    if decoding.batch_from_s > 0:
        return {"batch_size": decoding.batch_size, "batch_from_s": decoding.batch_from_s}
    return {}
