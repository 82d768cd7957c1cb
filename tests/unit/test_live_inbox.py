"""The live actor's inbox of client events: bounded in bytes as well as in number, so that a client's 8-MB appends
wait for the session instead of piling up in memory (the gateway sends the next frame once one is taken)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from actors.live import actor
from actors.live.actor import Inbox


def _event(size: int) -> Any:
    return SimpleNamespace(data=b"x" * size)


def test_put_waits_while_the_inbox_holds_its_bytes_and_one_larger_event_still_goes_alone(monkeypatch: Any) -> None:
    monkeypatch.setattr(actor, "INBOX_BYTES", 100)

    async def run() -> list[str]:
        inbox, done = Inbox(), []

        async def put(name: str, size: int) -> None:
            await inbox.put(_event(size))
            done.append(name)

        await put("a", 60)
        second = asyncio.ensure_future(put("b", 60))  # 120 > 100: waits for room
        await asyncio.sleep(0.05)
        assert done == ["a"]
        assert len((await inbox.get()).data) == 60
        await asyncio.wait_for(second, 1)
        assert len((await inbox.get()).data) == 60
        await asyncio.wait_for(put("huge", 500), 1)  # larger than the bound, into an empty inbox: taken alone
        third = asyncio.ensure_future(put("c", 1))
        await asyncio.sleep(0.05)
        assert done == ["a", "b", "huge"]
        await inbox.get()
        await asyncio.wait_for(third, 1)
        return done

    assert asyncio.run(run()) == ["a", "b", "huge", "c"]
