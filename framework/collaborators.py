"""Collaborators an actor declares on its class, replaced in tests without constructor arguments.

nameko's dependency providers and its `worker_factory` are the model:

    class ModelProxy(Actor):
        @collaborator
        def catalogue(self) -> Catalogue:
            return Catalogue()

    proxy = worker_factory(ModelProxy, config, catalogue=Catalogue(listing))

A collaborator is built from the actor the first time it is used (most are used by the actor's constructor, so that
is when the actor is made) and is from then on a plain attribute of the actor. `worker_factory` puts the given
objects in place of the named collaborators before the constructor runs: a replaced one is never built (no Docker
daemon asked, no HTTP client opened), and a name the class does not declare is an error, not a silent no-op."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from framework.actor import Actor
from framework.config import Config

T = TypeVar("T")
A = TypeVar("A", bound=Actor)


class collaborator(Generic[T]):  # lower case: used as a decorator, like `property`
    """Declares a collaborator: the decorated method builds it from the actor."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, actor: None, owner: type[Any] | None = None) -> collaborator[T]: ...

    @overload
    def __get__(self, actor: object, owner: type[Any] | None = None) -> T: ...

    def __get__(self, actor: object | None, owner: type[Any] | None = None) -> T | collaborator[T]:
        if actor is None:
            return self
        # Not a data descriptor: once stored on the instance, the attribute is found there without coming here.
        value = self.build(actor)
        vars(actor)[self.name] = value
        return value


def collaborators(cls: type[Any]) -> set[str]:
    """The names of the collaborators `cls` declares (its base classes' included)."""
    return {name for klass in cls.__mro__ for name, attr in vars(klass).items() if isinstance(attr, collaborator)}


def worker_factory(cls: type[A], config: Config, **replacements: Any) -> A:
    """An actor of `cls` whose named collaborators are the given objects (fakes); the others are built as declared."""
    unknown = sorted(set(replacements) - collaborators(cls))
    if unknown:
        declared = ", ".join(sorted(collaborators(cls))) or "none"
        raise TypeError(f"{cls.__name__} declares no collaborator {', '.join(unknown)} (it declares: {declared})")
    actor = cls.__new__(cls)
    vars(actor).update(replacements)
    cls.__init__(actor, config)
    return actor
