"""The batcher's gathering rule, with a recording decode in place of the engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from model_server.batcher import Batcher


class Recorder:
    def __init__(self, fail_on: str = "") -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[str]) -> list[str]:
        with self.lock:
            self.batches.append(list(items))
        if self.fail_on in items:
            raise RuntimeError("engine failed")
        return [item.upper() for item in items]


def _submit_all(batcher: Batcher[str, str], keyed: list[tuple[str, str]]) -> list[str | BaseException]:
    """Every item from its own thread, each inside the server from the start (as requests are)."""
    results: list[str | BaseException] = [""] * len(keyed)
    entered = threading.Barrier(len(keyed))

    def one(n: int) -> None:
        key, item = keyed[n]
        with batcher.inside():
            entered.wait()
            try:
                results[n] = batcher.submit(key, item)
            except RuntimeError as exc:
                results[n] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(keyed))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_requests_inside_together_share_one_batch_and_each_gets_its_own_result() -> None:
    decode = Recorder()
    batcher = Batcher(decode, max_batch=4, window_s=30.0)  # full at four: decoded then, not after the window
    results = _submit_all(batcher, [("k", f"r{n}") for n in range(4)])
    assert results == ["R0", "R1", "R2", "R3"]
    assert [sorted(batch) for batch in decode.batches] == [["r0", "r1", "r2", "r3"]]
    assert (batcher.batches, batcher.batched) == (1, 4)


def test_batches_hold_at_most_max_batch_and_one_key_each() -> None:
    decode = Recorder()
    batcher = Batcher(decode, max_batch=2, window_s=0.2, runners=2)
    keyed = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("b", "b2")]
    results = _submit_all(batcher, keyed)
    assert results == ["A1", "B1", "A2", "A3", "B2"]
    assert all(len(batch) <= 2 for batch in decode.batches)
    assert all(len({item[0] for item in batch}) == 1 for batch in decode.batches)
    assert sorted(item for batch in decode.batches for item in batch) == ["a1", "a2", "a3", "b1", "b2"]


def test_a_lone_request_on_an_idle_server_is_not_held_for_the_window() -> None:
    decode = Recorder()
    batcher = Batcher(decode, max_batch=8, window_s=30.0)
    started = time.monotonic()
    with batcher.inside():
        assert batcher.submit("k", "alone") == "ALONE"
    assert time.monotonic() - started < 10  # held, it would have waited 30 s


def test_a_request_still_arriving_is_waited_for() -> None:
    """One request waits; another is inside the server (its audio being decoded) and joins the same batch."""
    decode = Recorder()
    batcher = Batcher(decode, max_batch=2, window_s=30.0)
    second_inside, results = threading.Event(), {}

    def second() -> None:
        with batcher.inside():
            second_inside.set()
            time.sleep(0.2)  # decoding its audio
            results["second"] = batcher.submit("k", "two")

    thread = threading.Thread(target=second)
    with batcher.inside():
        thread.start()
        second_inside.wait(5)
        results["first"] = batcher.submit("k", "one")
    thread.join(10)
    assert results == {"first": "ONE", "second": "TWO"}
    assert decode.batches == [["one", "two"]]


def test_a_failed_batch_fails_each_of_its_requests_and_the_batcher_goes_on() -> None:
    decode = Recorder(fail_on="bad")
    batcher = Batcher(decode, max_batch=2, window_s=0.2)
    results = _submit_all(batcher, [("k", "bad"), ("k", "good")])
    assert all(isinstance(result, RuntimeError) for result in results)
    with batcher.inside():
        assert batcher.submit("k", "after") == "AFTER"


@pytest.mark.parametrize("runners", [1, 3])
def test_many_requests_all_answered(runners: int) -> None:
    decode = Recorder()
    batcher = Batcher(decode, max_batch=4, window_s=0.05, runners=runners)
    keyed = [(str(n % 3), f"{n % 3}-{n}") for n in range(30)]
    results = _submit_all(batcher, keyed)
    assert results == [item.upper() for _, item in keyed]
    assert batcher.batched == 30
