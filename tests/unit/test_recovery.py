"""The recovery actor in memory: back-off schedule and the circuit breaker's state machine."""

from __future__ import annotations

import time

from actors.recovery import Recovery
from framework.memory_bus import MemoryBus
from schemas import codec, endpoints
from schemas.errors import AsrError, ErrorCode
from schemas.events import BreakerChanged, RestartScheduled, ServerCrashed, ServerFailed, ServerReady, ServerUnhealthy
from schemas.lifecycle import CloseBreaker, EnsureServer, ServerStatus
from tests.unit.fakes import config, until

FAST = {
    "ASRPRO_RECOVERY__BACKOFF": "[0.0, 0.01, 0.02]",
    "ASRPRO_RECOVERY__BREAKER_FAILURES": "3",
    "ASRPRO_RECOVERY__BREAKER_COOLDOWN": "0.05",
    "ASRPRO_RECOVERY__BREAKER_MAX_COOLDOWN": "0.15",
}


class Lifecycle:
    """A stand-in for the lifecycle actor: records ensures; fails them while `failing` (with `kind`)."""

    def __init__(self) -> None:
        self.ensures: list[EnsureServer] = []
        self.failing = False
        self.kind: ErrorCode | None = None

    def ensure(self, msg: EnsureServer) -> ServerStatus:
        self.ensures.append(msg)
        if self.failing:
            raise AsrError("503", "model server for m failed: boom", kind=self.kind)
        return ServerStatus(model=msg.model, state="ready", runtime="fake")


async def start(**env: str) -> tuple[MemoryBus, Recovery, Lifecycle]:
    bus, lifecycle = MemoryBus(), Lifecycle()
    bus.answer(endpoints.LIFECYCLE_ENSURE, lifecycle.ensure)
    recovery = Recovery(config(**{**FAST, **env}))
    await bus.start(recovery)
    return bus, recovery, lifecycle


def breakers(bus: MemoryBus) -> list[str]:
    return [e.state for e in bus.events if isinstance(e, BreakerChanged)]


def test_backoff_schedule_repeats_its_last_value() -> None:
    recovery = Recovery(config(ASRPRO_RECOVERY__BACKOFF="[30, 60, 120]"))
    assert [recovery.delay(n) for n in (1, 2, 3, 4, 10)] == [30, 60, 120, 120, 120]


async def test_a_crash_is_restarted_with_back_off() -> None:
    bus, recovery, lifecycle = await start()
    await recovery.publish(ServerCrashed(model="m", runtime="fake", reason="exited with code -9"))
    await until(lambda: len(lifecycle.ensures) == 1)
    assert lifecycle.ensures[0].restart and not lifecycle.ensures[0].probe
    scheduled = [e for e in bus.events if isinstance(e, RestartScheduled)]
    assert [(e.attempt, e.delay_s) for e in scheduled] == [(1, 0.0)]
    await recovery.publish(ServerUnhealthy(model="m", runtime="fake", reason="/health said error"))
    await until(lambda: len(lifecycle.ensures) == 2)
    scheduled = [e for e in bus.events if isinstance(e, RestartScheduled)]
    assert [(e.attempt, e.delay_s) for e in scheduled] == [(1, 0.0), (2, 0.01)]


async def test_failures_that_are_not_the_models_fault_do_not_count() -> None:
    bus, recovery, lifecycle = await start()
    for _ in range(5):
        await recovery.publish(ServerFailed(model="m", runtime="fake", reason="no GPU", cause="no_room"))
    assert breakers(bus) == [] and not lifecycle.ensures


async def test_breaker_opens_probes_reopens_longer_then_closes() -> None:
    bus, recovery, lifecycle = await start(ASRPRO_RECOVERY__RESTART_CRASHED="false")
    lifecycle.failing = True
    for _ in range(3):
        await recovery.publish(ServerFailed(model="m", runtime="fake", reason="did not come up"))
    assert breakers(bus) == ["open"]
    opened = next(e for e in bus.events if isinstance(e, BreakerChanged))
    assert opened.failures == 3 and "did not come up" in opened.reason
    # The first probe fails: open again, for twice the cooldown.
    await until(lambda: breakers(bus) == ["open", "half_open", "open"])
    assert recovery.health("m").cooldown == 0.1
    assert "probe failed" in [e for e in bus.events if isinstance(e, BreakerChanged)][-1].reason
    lifecycle.failing = False
    await until(lambda: breakers(bus)[-1] == "closed", timeout=3.0)
    assert all(e.probe for e in lifecycle.ensures) and recovery.health("m").cooldown == 0.05


async def test_a_probe_that_finds_no_gpu_room_does_not_lengthen_the_cooldown() -> None:
    bus, recovery, lifecycle = await start(ASRPRO_RECOVERY__RESTART_CRASHED="false")
    lifecycle.failing, lifecycle.kind = True, ErrorCode.NO_ROOM
    for _ in range(3):
        await recovery.publish(ServerFailed(model="m", runtime="fake", reason="did not come up"))
    await until(lambda: breakers(bus) == ["open", "half_open", "open"])
    assert recovery.health("m").cooldown == 0.05  # the GPU was full: nothing learnt about the model


async def test_a_server_stable_for_long_enough_starts_the_back_off_over() -> None:
    bus, recovery, lifecycle = await start(ASRPRO_RECOVERY__STABLE_AFTER="100")
    await recovery.publish(ServerCrashed(model="m", runtime="fake", reason="crash"))
    await until(lambda: len(lifecycle.ensures) == 1)
    await recovery.publish(ServerReady(model="m", runtime="fake", url="u", at=time.time() - 200))
    await recovery.publish(ServerCrashed(model="m", runtime="fake", reason="crash"))
    await until(lambda: len(lifecycle.ensures) == 2)
    assert [e.attempt for e in bus.events if isinstance(e, RestartScheduled)] == [1, 1]


async def test_an_open_breaker_left_by_a_previous_recovery_actor_is_probed() -> None:
    bus, lifecycle = MemoryBus(), Lifecycle()
    bus.answer(endpoints.LIFECYCLE_ENSURE, lifecycle.ensure)
    left = BreakerChanged(model="m", state="open", reason="crashes", retry_at=time.time(), at=time.time() - 5)
    await bus.publish("asr.events.breaker.m", codec.encode(left))
    await bus.start(Recovery(config(**FAST)))
    await until(lambda: breakers(bus)[-1] == "closed")
    assert [e.probe for e in lifecycle.ensures] == [True]


async def test_an_operator_closes_a_breaker_and_the_event_says_who() -> None:
    bus, recovery, lifecycle = await start(ASRPRO_RECOVERY__BREAKER_COOLDOWN="60")
    lifecycle.failing = True
    for _ in range(3):
        await recovery.publish(ServerFailed(model="m", runtime="fake", reason="did not come up"))
    assert breakers(bus) == ["open"]
    reply = await bus.request(endpoints.RECOVERY_CLOSE_BREAKER, CloseBreaker(model="m", by="alice"))
    assert (reply.model, reply.was) == ("m", "open")
    closed = bus.events[-1]
    assert isinstance(closed, BreakerChanged) and closed.state == "closed" and closed.reason == "closed by alice"
    assert recovery.health("m").breaker == "closed" and not recovery.health("m").failures
