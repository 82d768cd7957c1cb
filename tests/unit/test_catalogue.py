"""Resolving a model name from the catalogue: ids, aliases, the default's names, unknown names."""

from __future__ import annotations

import msgspec
import pytest

from actors.registry import Registry, catalogue
from framework.catalogue import Catalogue
from framework.memory_bus import MemoryBus
from schemas import endpoints
from schemas import kv as kv_records
from schemas.errors import AsrError
from schemas.events import DefaultModelChanged
from schemas.registry import DEFAULT_ALIASES, OPENAI_NAMES, FirstSeen, ModelList, SetDefaultModel, resolve_for
from tests.unit.fakes import config


def listing(default: str = "whisper-tiny.en", **env: str) -> ModelList:
    return ModelList(models=list(catalogue(config(**env)).values()), default_model=default)


def test_ids_aliases_and_the_default() -> None:
    cat = Catalogue(listing(ASRPRO_MODELS__WHISPER_BASE__ALIASES='["base"]'))
    assert cat.resolve("whisper-base").id == "whisper-base"
    assert cat.resolve("base").id == "whisper-base"
    for name in DEFAULT_ALIASES:
        assert cat.resolve(name).id == "whisper-tiny.en"
    assert Catalogue(listing("whisper-base")).resolve("whisper-1").id == "whisper-base"


def test_unknown_names_are_404_listing_the_known_models() -> None:
    with pytest.raises(AsrError) as err:
        Catalogue(listing()).resolve("whisper-huge")
    assert err.value.code == "404" and "whisper-huge" in err.value.message
    assert "whisper-base" in err.value.message and "whisper-tiny.en" in err.value.message


def test_before_the_registry_published_it_is_a_clear_503() -> None:
    with pytest.raises(AsrError) as err:
        Catalogue().resolve("whisper-1")
    assert err.value.code == "503" and "registry" in err.value.message


async def test_the_registry_changes_the_default_and_announces_it() -> None:
    memory = MemoryBus()
    registry = Registry(config())
    await memory.start(registry)
    model = await memory.request(endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id="whisper-base"))
    assert model.id == "whisper-base" and registry.listing().default_model == "whisper-base"
    changed = memory.events[-1]
    assert isinstance(changed, DefaultModelChanged) and changed.previous == "whisper-tiny.en"
    with pytest.raises(AsrError) as err:
        await memory.request(endpoints.REGISTRY_SET_DEFAULT, SetDefaultModel(model_id="nope"))
    assert err.value.code == "404"


def installed(cat: ModelList, *ids: str, multilingual_model: str = "") -> ModelList:
    models = [msgspec.structs.replace(m, installed=m.id in ids) for m in cat.models]
    return ModelList(models=models, default_model=cat.default_model, multilingual_model=multilingual_model)


def test_an_openai_name_means_a_model_that_can_do_the_request() -> None:
    cat = installed(listing(), "whisper-tiny.en", "whisper-tiny", "whisper-base")
    for name in OPENAI_NAMES:
        assert resolve_for(cat, name).id == "whisper-tiny.en"  # no language: the default
        assert resolve_for(cat, name, language="en").id == "whisper-tiny.en"
        assert resolve_for(cat, name, "translate").id == "whisper-base"  # the largest installed that can
        assert resolve_for(cat, name, language="ES ").id == "whisper-base"
    assert resolve_for(cat, "whisper-tiny.en", "translate").id == "whisper-tiny.en"  # a named model is that model
    configured = installed(listing(), "whisper-tiny", "whisper-base", multilingual_model="whisper-tiny")
    assert resolve_for(configured, "whisper-1", language="de").id == "whisper-tiny"
    uninstalled = installed(listing(), "whisper-base", multilingual_model="whisper-small")
    assert resolve_for(uninstalled, "whisper-1", "translate").id == "whisper-base"  # the configured one lacks weights


def test_where_no_installed_model_can_the_default_says_why() -> None:
    from actors.proxy.decoding import decoding_for
    from schemas.transcribe import TranscribeRequest

    cat = installed(listing(), "whisper-tiny.en")
    model = resolve_for(cat, "whisper-1", "translate")
    assert model.id == "whisper-tiny.en"
    with pytest.raises(AsrError) as err:
        decoding_for(model, TranscribeRequest(audio=b"x", task="translate"), cat)
    assert err.value.code == "400" and "cannot translate" in err.value.message


async def test_created_is_when_the_registry_first_saw_a_model_and_outlives_a_restart() -> None:
    memory = MemoryBus()
    settings = await memory.kv(kv_records.FIRST_SEEN.bucket)
    earlier = FirstSeen(models={"whisper-base": 1_700_000_000})  # seen by a registry before this one
    await settings.put(kv_records.FIRST_SEEN.key(), kv_records.FIRST_SEEN.encode(earlier))
    first = Registry(config())
    await memory.start(first)
    created = {m.id: m.created for m in first.listing().models}
    assert created["whisper-base"] == 1_700_000_000
    assert all(stamp > 1_700_000_000 for model, stamp in created.items() if model != "whisper-base")
    stored = kv_records.FIRST_SEEN.decode((await settings.get(kv_records.FIRST_SEEN.key())).value or b"")
    assert stored.models == created  # kept for the next registry
