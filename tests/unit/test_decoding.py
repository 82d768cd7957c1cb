"""What the proxy asks the model server for: the model's decoding merged with the request, checked first."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from actors.proxy.decoding import decoding_for
from actors.registry import catalogue
from model_server.engines.whisper import _batched_mode
from schemas.errors import AsrError
from schemas.registry import ModelList
from schemas.transcribe import TranscribeRequest
from tests.unit.fakes import config

MODELS = catalogue(config())
TINY, BASE = MODELS["whisper-tiny.en"], msgspec.structs.replace(MODELS["whisper-base"], installed=True)
LISTING = ModelList(models=[TINY, BASE], default_model=TINY.id)


def test_defaults_are_faster_whispers_own() -> None:
    options = decoding_for(TINY, TranscribeRequest())
    assert (options.beam_size, options.temperature, options.condition_on_previous_text, options.vad_filter) == (
        5,
        [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        True,
        False,
    )
    assert options.response_format == "verbose_json" and options.task == "transcribe" and not options.word_timestamps


def test_openai_temperature_semantics() -> None:
    assert decoding_for(TINY, TranscribeRequest(temperature=0)).temperature == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert decoding_for(TINY, TranscribeRequest(temperature=0.3)).temperature == [0.3]
    for bad in (-0.1, 1.5):
        with pytest.raises(AsrError, match="between 0 and 1"):
            decoding_for(TINY, TranscribeRequest(temperature=bad))


def test_configured_decoding_and_request_options() -> None:
    greedy = catalogue(config(ASRPRO_MODELS__WHISPER_TINY_EN__DECODING="{ beam_size = 1, temperature = [0.0] }"))
    options = decoding_for(greedy["whisper-tiny.en"], TranscribeRequest(vad_filter=True, hotwords="ComfyUI"))
    assert (options.beam_size, options.temperature, options.vad_filter, options.hotwords) == (1, [0.0], True, "ComfyUI")
    assert decoding_for(TINY, TranscribeRequest(timestamp_granularities=["word"])).word_timestamps


def test_languages_are_checked() -> None:
    assert decoding_for(BASE, TranscribeRequest(language="DE")).language == "de"
    with pytest.raises(AsrError, match="not one of Whisper's language codes") as err:
        decoding_for(BASE, TranscribeRequest(language="klingon"))
    assert err.value.code == "400"
    with pytest.raises(AsrError, match=r"whisper-tiny\.en knows only en, not de"):
        decoding_for(TINY, TranscribeRequest(language="de"))


def test_only_multilingual_models_translate() -> None:
    assert decoding_for(BASE, TranscribeRequest(task="translate")).task == "translate"
    with pytest.raises(AsrError, match="cannot translate; models that can: whisper-base"):
        decoding_for(TINY, TranscribeRequest(task="translate"), LISTING)


def test_by_default_long_recordings_and_jobs_decode_batched_and_short_ones_can_share_a_batch() -> None:
    short, long = np.zeros(16000 * 10, np.float32), np.zeros(16000 * 150, np.float32)
    interactive = decoding_for(TINY, TranscribeRequest())
    # A short recording is not in the long-recording mode, so the server's dynamic batcher may group it.
    assert not _batched_mode(short, interactive) and _batched_mode(long, interactive)
    job = decoding_for(TINY, TranscribeRequest(priority="batch"))
    assert _batched_mode(short, job) and job.batch_size == 8
    asked = decoding_for(TINY, TranscribeRequest(batch_size=0))
    assert not _batched_mode(long, asked)
