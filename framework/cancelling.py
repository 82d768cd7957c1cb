"""Whether the running task has been asked to stop; and a done-callback for tasks whose end nobody awaits.

asyncio.wait_for in Python 3.11 can lose a cancellation that arrives as its inner future completes (nats-py's
pull `fetch` and KV watch `updates` go through it): the task goes on as if nothing happened, and a loop around
such a call would outlive its actor and hang an event loop's shutdown. The task still says it is cancelling, so
loops ask this at each round.
"""

from __future__ import annotations

import asyncio
from typing import Any


def still_running() -> bool:
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0


def retrieved(task: asyncio.Future[Any]) -> None:
    """A done-callback for a task left to end on its own (cancelled with its request or session, or outrun by
    another): its failure is no news, and asyncio must not log it as an exception never retrieved."""
    if not task.cancelled():
        task.exception()
