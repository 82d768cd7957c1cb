"""Lifecycle actor: starts, watches and stops model servers."""

from actors.lifecycle.actor import Lifecycle

__all__ = ["Lifecycle"]
