"""framework.bus's wait for a reply that a dropped connection may never bring: a caller that goes (cancelled) takes
its request with it, so that the request's own timeout does not end later in an error nobody retrieves."""

from __future__ import annotations

import asyncio

import pytest

from framework import bus


class Connection:
    """Only what the weak registry of dropped connections needs: a hashable object."""


async def test_a_cancelled_wait_cancels_its_request() -> None:
    nc = Connection()
    bus._lost[nc] = asyncio.Event()  # type: ignore[index]
    outcome: list[str] = []

    async def request() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("timed out")  # what would end in "Task exception was never retrieved"

    waiting = asyncio.ensure_future(bus._unless_lost(nc, request(), "a reply"))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.01)
    assert outcome == ["cancelled"]
