"""Resolving a model name from the catalogue: ids, aliases, the default's names, unknown names."""

from __future__ import annotations

import pytest

from actors.registry import Registry, catalogue
from framework.catalogue import Catalogue
from framework.memory_bus import MemoryBus
from schemas import endpoints
from schemas.errors import AsrError
from schemas.events import DefaultModelChanged
from schemas.registry import DEFAULT_ALIASES, ModelList, SetDefaultModel
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
