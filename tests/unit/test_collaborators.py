"""Declared collaborators: built once from the actor when first used, replaced by `worker_factory` before the
actor's constructor runs (a replaced one is never built), and a name the class does not declare is refused."""

from __future__ import annotations

import pytest

from framework.actor import Actor
from framework.collaborators import collaborator, collaborators, worker_factory
from framework.config import Config
from tests.unit.fakes import config


class Probe(Actor):
    name = "probe"
    built: list[str] = []

    @collaborator
    def clock(self) -> str:
        Probe.built.append("clock")
        return f"clock of {self.name}"

    @collaborator
    def store(self) -> dict[str, int]:
        Probe.built.append("store")
        return {}

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.seen = self.clock  # used by the constructor: built (or replaced) by then


def test_a_collaborator_is_built_once_when_first_used() -> None:
    Probe.built.clear()
    probe = Probe(config())
    assert probe.seen == "clock of probe" and Probe.built == ["clock"]
    assert probe.store is probe.store and Probe.built == ["clock", "store"]
    assert collaborators(Probe) == {"clock", "store"}


def test_worker_factory_replaces_before_the_constructor_and_never_builds_the_replaced() -> None:
    Probe.built.clear()
    probe = worker_factory(Probe, config(), clock="fake clock")
    assert probe.seen == "fake clock" and Probe.built == []
    assert Probe(config()).clock == "clock of probe"  # other instances keep the declared one


def test_worker_factory_refuses_a_name_the_class_does_not_declare() -> None:
    with pytest.raises(TypeError, match="declares no collaborator clok"):
        worker_factory(Probe, config(), clok="typo")
