"""The cores a model server may use: its affinity bounded by its cgroup's quota, shared among the servers on the
CPU, spread as workers, each with up to all of them as threads, at most twice the cores in all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framework.cores import share, thread_plan, usable_cores


def affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_without_a_quota_the_affinity_mask_counts(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path).count == affinity()
    assert usable_cores(tmp_path / "absent").source == "affinity"


@pytest.mark.parametrize(("quota", "expected"), [("50000 100000", 1), ("100000 100000", 1), ("150000 100000", 1)])
def test_a_cgroup_v2_quota_below_the_affinity_bounds_it(tmp_path: Path, quota: str, expected: int) -> None:
    (tmp_path / "cpu.max").write_text(quota + "\n")
    cores = usable_cores(tmp_path)
    assert cores.count == min(expected, affinity())
    if affinity() > 1:
        assert cores.source == "cgroup cpu.max"


def test_a_cgroup_v1_quota_bounds_it_too(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path).count == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert usable_cores(tmp_path).count == affinity()


def test_a_quota_above_the_affinity_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(f"{(affinity() + 4) * 100000} 100000\n")
    assert usable_cores(tmp_path).count == affinity()


def test_servers_on_the_cpu_share_the_cores_and_each_keeps_one() -> None:
    assert share(8, 1) == 8
    assert share(8, 2) == 4
    assert share(2, 3) == 1
    assert share(1, 0) == 1


@pytest.mark.parametrize(
    ("cores", "concurrency", "override", "workers", "threads"),
    [
        (2, 2, 0, 2, 2),  # measured best on two cores
        (2, 1, 0, 1, 2),
        (8, 2, 0, 2, 8),
        (1, 4, 0, 1, 1),
        (16, 4, 0, 4, 8),
        (3, 2, 0, 2, 3),
        (8, 2, 3, 2, 3),  # lifecycle.cpu_threads
    ],
)
def test_workers_come_before_threads_and_oversubscribe_at_most_twice(
    cores: int, concurrency: int, override: int, workers: int, threads: int
) -> None:
    plan = thread_plan(cores, concurrency, override)
    assert (plan.workers, plan.threads) == (workers, threads)
    if not override:
        assert plan.threads <= cores
        assert plan.workers * plan.threads <= 2 * cores
    assert str(thread_plan(2, 2)) == "2 workers x 2 threads"
    assert str(thread_plan(1, 1)) == "1 worker x 1 thread"
