"""The batcher's gathering rule, with a recording decode in place of the engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from model_server.batcher import Batcher, BatchingEngine
from model_server.engines.base import Decoding
from schemas.model_server import TranscribeOptions


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


def test_a_batch_is_no_larger_than_its_limit_says_now() -> None:
    decode = Recorder()
    room = {"n": 2}
    batcher = Batcher(decode, max_batch=4, window_s=0.2, limit=lambda key, wanted: min(wanted, room["n"]))
    _submit_all(batcher, [("k", f"r{n}") for n in range(4)])
    assert max(len(batch) for batch in decode.batches) == 2
    room["n"] = 4
    _submit_all(batcher, [("k", f"s{n}") for n in range(4)])
    assert max(len(batch) for batch in decode.batches[-2:]) >= 3


class OutOfMemoryEngine:
    """Runs out of GPU memory on batches larger than two; decodes alone one letter a request."""

    device, compute_type = "cuda", "float16"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
        return Decoding("en", 1.0, 1.0, iter([]))

    def batch_key(self, audio: np.ndarray, options: TranscribeOptions) -> str:
        return "k"

    def batch_limit(self, key: Hashable, wanted: int) -> int:
        return wanted  # the estimate said it fits

    def decode_batch(self, audios: Sequence[np.ndarray], options: TranscribeOptions) -> list[Decoding | None]:
        if len(audios) > 2:
            raise RuntimeError("CUDA failed with error out of memory")
        self.batches.append(len(audios))
        return [Decoding("en", float(audio[0]), 1.0, iter([])) for audio in audios]


def test_a_batch_out_of_gpu_memory_is_decoded_in_halves_and_every_request_answered() -> None:
    engine = OutOfMemoryEngine()
    batching = BatchingEngine(engine, max_batch=5, window_s=0.0, runners=1)
    items = [(np.full(10, n, dtype=np.float32), TranscribeOptions()) for n in range(5)]
    results = batching._decode_batch(items)
    # 5 -> 2 + 3 -> 2 + (1 alone, then 2): the one alone goes the sequential way (None), the rest batched.
    assert engine.batches == [2, 2]
    assert [r.duration if r else None for r in results] == [0.0, 1.0, None, 3.0, 4.0]


class FailingEngine(OutOfMemoryEngine):
    def decode_batch(self, audios: Sequence[np.ndarray], options: TranscribeOptions) -> list[Decoding | None]:
        self.batches.append(len(audios))
        raise RuntimeError("engine failed")


def test_after_running_out_of_memory_batches_stay_at_half_that_size_for_a_while() -> None:
    engine = OutOfMemoryEngine()
    batching = BatchingEngine(engine, max_batch=8, window_s=0.0, runners=1)
    assert batching._limit("k", 8) == 8
    batching._decode_batch([(np.full(10, n, dtype=np.float32), TranscribeOptions()) for n in range(6)])
    assert batching._limit("k", 8) == 3  # 6 failed
    batching._shrunk = (3, time.monotonic() - 1)  # its time is up
    assert batching._limit("k", 8) == 8


def test_a_limit_that_fails_leaves_the_batcher_running_at_max_batch() -> None:
    decode = Recorder()
    calls: list[int] = []

    def limit(key: Hashable, wanted: int) -> int:
        calls.append(wanted)
        if len(calls) == 1:
            raise RuntimeError("NVML went away")
        return 0  # nonsense: a batch holds one request at least

    batcher = Batcher(decode, max_batch=4, window_s=0.0, limit=limit)
    with batcher.inside():
        assert batcher.submit("k", "a") == "A"
        assert batcher.submit("k", "b") == "B"
    assert len(calls) == 2


def test_other_engine_errors_are_not_retried_in_halves() -> None:
    engine = FailingEngine()
    batching = BatchingEngine(engine, max_batch=4, window_s=0.0, runners=1)
    with pytest.raises(RuntimeError, match="engine failed"):
        batching._decode_batch([(np.zeros(10, dtype=np.float32), TranscribeOptions())] * 4)
    assert engine.batches == [4]
