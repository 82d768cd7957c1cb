"""Scheduling policies as plain functions: idle timeout, expiry, eviction order; GPU placement; durations."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from actors.gpu import place
from actors.lifecycle.placement import eviction_order, expires_at, idle_timeout
from schemas.durations import NEVER, parse_duration
from schemas.gpu import Allocation, AllocationTable, GpuDevice
from schemas.lifecycle import ServerState


@dataclass
class S:
    model_id: str
    last_activity: float
    state: ServerState = "ready"
    inflight: dict[str, float] = field(default_factory=dict)


def test_idle_timeout_the_request_wins_then_the_model_then_the_default() -> None:
    assert idle_timeout(None, None, 300) == 300
    assert idle_timeout(None, 60, 300) == 60
    assert idle_timeout(10, 60, 300) == 10
    assert idle_timeout(0, 60, 300) == 0
    assert idle_timeout(-5, 60, 300) == NEVER
    assert idle_timeout(None, -1, 300) == NEVER


def test_expiry() -> None:
    assert expires_at(100.0, busy=False, timeout=30) == 130.0
    assert expires_at(100.0, busy=True, timeout=30) is None
    assert expires_at(100.0, busy=False, timeout=NEVER) is None


def test_eviction_order_is_lru_and_never_busy_locked_or_the_requester() -> None:
    servers = [
        S("a", 30.0),
        S("b", 10.0),
        S("c", 5.0, inflight={"r": 1.0}),
        S("d", 1.0, state="starting"),
        S("e", 2.0),
        S("me", 0.0),
    ]
    assert [s.model_id for s in eviction_order(servers, exclude="me", locked=["e"])] == ["b", "a"]


def test_gpu_placement_picks_the_device_with_most_free_memory_or_none() -> None:
    devices = [
        GpuDevice(index=0, name="A", total_mb=8000, free_mb=8000),
        GpuDevice(index=1, name="B", total_mb=8000, free_mb=8000),
    ]
    table = AllocationTable(allocations={"x": Allocation(model="x", device="cuda:0", device_index=0, memory_mb=3000)})
    chosen = place(table, devices, "y", 4000)
    assert chosen is not None and chosen.device == "cuda:1" and chosen.memory_mb == 4000
    table.allocations["y"] = chosen
    assert place(table, devices, "z", 5001) is None
    assert place(table, devices, "z", 5000) is not None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("", None),
        (0, 0.0),
        ("0", 0.0),
        (90, 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (-1, NEVER),
        ("-1", NEVER),
        ("-5m", NEVER),
    ],
)
def test_keep_alive_durations(value: float | str | None, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "5x", "m"])
def test_bad_durations_name_the_accepted_forms(value: str) -> None:
    with pytest.raises(ValueError, match="use seconds"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["inf", "nan", "1e309", float("inf"), float("nan"), "9999999999h", 604801])
def test_keep_alive_is_finite_and_at_most_a_week(value: float | str) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_duration(value)
    assert parse_duration(604800) == 604800 and parse_duration("-inf") == NEVER
