"""Whether the running task has been asked to stop.

asyncio.wait_for in Python 3.11 can lose a cancellation that arrives as its inner future completes (nats-py's
pull `fetch` and KV watch `updates` go through it): the task goes on as if nothing happened, and a loop around
such a call would outlive its actor and hang an event loop's shutdown. The task still says it is cancelling, so
loops ask this at each round.
"""

from __future__ import annotations

import asyncio


def still_running() -> bool:
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0
