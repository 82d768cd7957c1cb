"""How long a request waits for a node whose proxy is not on the bus (actors/proxy/handover.py): while the node's
heartbeat is fresh, retried every NODE_RETRY_S; given up once the node beats twice meanwhile (its bus works, so its
proxy is down), at the request's own timeout, or at once when its heartbeat is stale; served when the proxy is back."""

from __future__ import annotations

import logging
import time
import types
from typing import Any

import pytest

from actors.proxy import handover
from actors.proxy.handover import HandOver
from schemas.errors import AsrError, ErrorCode
from schemas.nodes import NodeRecord
from schemas.transcribe import TranscribeRequest, TranscriptionResult
from tests.unit.fakes import config


class Node:
    """Node `b` as the proxy's view shows it: beats when told to."""

    def __init__(self) -> None:
        self.values: dict[str, NodeRecord] = {}
        self.beat()

    def beat(self, at: float | None = None) -> None:
        now = time.time() if at is None else at
        self.values["b"] = NodeRecord(
            name="b", host="host-b", instance="i", started_at=0.0, heartbeat_at=now, runtime="x"
        )


def hand_over(nodes: Node, answer_after: int | None = None, beat_every: int | None = None) -> tuple[HandOver, list]:
    """A HandOver whose forwarding to b finds no responders until try `answer_after`; b beats every `beat_every`
    tries. The list records the tries."""
    actor = types.SimpleNamespace(config=config(), node_name="a", log=logging.getLogger("test"))
    done = HandOver(actor, None, nodes, types.SimpleNamespace(values={}), None, None)  # type: ignore[arg-type]
    tries: list[float] = []

    async def forward(node: str, model_id: str, msg: Any, sent: Any) -> TranscriptionResult:
        tries.append(time.monotonic())
        if beat_every and len(tries) % beat_every == 0:
            nodes.beat(time.time() + len(tries))  # strictly newer than the last
        if answer_after is not None and len(tries) > answer_after:
            return TranscriptionResult(text="served by b", language="en", duration=1.0, segments=[])
        raise AsrError(ErrorCode.NO_RESPONDERS, "no proxy of node b on the bus")

    done._hand_over = forward  # type: ignore[method-assign]
    return done, tries


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "NODE_RETRY_S", 0.01)


async def test_a_node_whose_proxy_comes_back_serves_the_request() -> None:
    done, tries = hand_over(Node(), answer_after=5)
    result = await done._hand_over_within_grace("b", "m", TranscribeRequest(timeout=30), None)  # type: ignore[arg-type]
    assert result.text == "served by b" and len(tries) == 6


async def test_a_node_that_beats_twice_without_a_proxy_is_given_up_long_before_its_lease() -> None:
    done, tries = hand_over(Node(), beat_every=3)
    started = time.monotonic()
    with pytest.raises(AsrError) as raised:
        await done._hand_over_within_grace("b", "m", TranscribeRequest(timeout=30), None)  # type: ignore[arg-type]
    assert raised.value.kind == ErrorCode.NO_RESPONDERS
    assert len(tries) == 6 and time.monotonic() - started < 1  # the second beat, at the sixth try


async def test_the_wait_never_outlasts_the_requests_own_timeout() -> None:
    done, tries = hand_over(Node())  # beats never: its nats-server restarting, say
    started = time.monotonic()
    with pytest.raises(AsrError):
        await done._hand_over_within_grace("b", "m", TranscribeRequest(timeout=0.3), None)  # type: ignore[arg-type]
    assert 0.3 <= time.monotonic() - started < 1.5 and len(tries) > 5


async def test_a_node_whose_heartbeat_is_stale_is_not_waited_for() -> None:
    nodes = Node()
    nodes.values["a"] = NodeRecord(
        name="a", host="h", instance="i", started_at=0, heartbeat_at=time.time(), runtime="x"
    )
    nodes.beat(time.time() - 60)  # older than node.dead_after (20 s)
    done, tries = hand_over(nodes)
    with pytest.raises(AsrError):
        await done._hand_over_within_grace("b", "m", TranscribeRequest(timeout=30), None)  # type: ignore[arg-type]
    assert len(tries) == 1
