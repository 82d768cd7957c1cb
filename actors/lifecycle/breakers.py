"""The breaker gate: the circuit breakers as the recovery actor announced them (replayed from the stream at start),
and the refusal of a start that an open (or half-open) breaker forbids."""

from __future__ import annotations

import time

from framework.kv_view import KvView
from schemas import errors
from schemas.errors import AsrError, ErrorCode
from schemas.events import BreakerChanged
from schemas.lifecycle import BreakerState
from schemas.nodes import NodeRecord, alive


class BreakerGate:
    def __init__(self, node: str, dead_after: float, heartbeats: KvView[NodeRecord]) -> None:
        self.node, self.dead_after, self.heartbeats = node, dead_after, heartbeats
        self.by_model: dict[str, BreakerChanged] = {}  # open and half-open ones; a closed one is forgotten
        # Whether the nodes' heartbeats are followed (on NATS): only then can the node that opened one be told lost.
        self.nodes_known = False

    def changed(self, event: BreakerChanged) -> None:
        if event.state == "closed":
            self.by_model.pop(event.model, None)
        else:
            self.by_model[event.model] = event

    def states(self, model: str | None = None) -> list[BreakerState]:
        return [
            BreakerState(model=b.model, state=b.state, reason=b.reason, retry_at=b.retry_at)
            for b in self.by_model.values()
            if model in (None, b.model) and b.state != "closed"  # never kept: for the type
        ]

    def check(self, model_id: str, *, probe: bool) -> None:
        """An open (or half-open) circuit lets only the recovery actor's probe start the model."""
        breaker = self.by_model.get(model_id)
        if breaker is None or probe:
            return
        if self._opened_by_a_lost_node(breaker):
            return  # nobody would ever probe it
        wait = max(1.0, (breaker.retry_at or time.time()) - time.time())
        raise AsrError(
            errors.UNAVAILABLE,
            f"{model_id} is unavailable: its circuit breaker is {breaker.state.replace('_', '-')} after repeated "
            f"failures ({breaker.reason}); next try in {wait:.0f} s",
            retry_after=wait,
            kind=ErrorCode.BREAKER_OPEN,
        )

    def _opened_by_a_lost_node(self, breaker: BreakerChanged) -> bool:
        opener = breaker.node
        if not opener or opener == self.node or not self.nodes_known:
            return False
        return opener not in alive(self.heartbeats.values.values(), self.dead_after)
