"""Which node serves a request (actors.proxy.routing): ready here, ready elsewhere, starting or claimed somewhere,
placed by room; and the nodes' installed reports merged by the registry."""

from __future__ import annotations

import time

from actors.proxy.routing import PLACING, choose_node, has_room
from actors.registry import merge_installed
from schemas.gpu import GpuDevice
from schemas.lifecycle import ServerStatus
from schemas.nodes import NodeRecord, alive
from schemas.registry import Installed, InstalledModels, ModelInfo

MODEL = ModelInfo(id="m", name="m", family="whisper", size="tiny", engine="faster-whisper", gpu_memory_mb=600)


def node(name: str, free_mb: int = 1024, servers: tuple[str, ...] = (), **kw: object) -> NodeRecord:
    devices = [GpuDevice(index=0, name="g", total_mb=1024, free_mb=free_mb)]
    now = time.time()
    return NodeRecord(
        name=name, host=name, instance="i", started_at=now, heartbeat_at=now, runtime="local",
        devices=devices, servers=list(servers), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def server(node_name: str, state: str = "ready", **kw: object) -> ServerStatus:
    url = "http://127.0.0.1:1" if state == "ready" else ""
    return ServerStatus(model="m", state=state, runtime="local", url=url, node=node_name, **kw)  # type: ignore[arg-type]


NODES = {n.name: n for n in (node("a", free_mb=424, servers=("other",)), node("b", free_mb=1024), node("c", 700))}


def test_ready_here_is_served_here_and_ready_elsewhere_is_sent_there() -> None:
    assert choose_node(MODEL, "a", NODES, [server("a"), server("b")]) == ("a", False)
    assert choose_node(MODEL, "a", NODES, [server("b")]) == ("b", False)
    # Its record counts even when our view of the heartbeats lags (the janitors clear a lost node's records).
    assert choose_node(MODEL, "a", {}, [server("b")]) == ("b", False)
    # Unless that node just failed us.
    assert choose_node(MODEL, "a", NODES, [server("b")], exclude={"b"})[0] != "b"


def test_a_model_starting_or_claimed_somewhere_goes_there_not_to_a_second_start() -> None:
    assert choose_node(MODEL, "a", NODES, [server("c", state="starting")]) == ("c", False)
    claim = server("b", state=PLACING, started_at=time.time())
    assert choose_node(MODEL, "a", NODES, [claim]) == ("b", False)
    stale = server("b", state=PLACING, started_at=time.time() - 600)
    assert choose_node(MODEL, "a", NODES, [stale], claim_valid_s=90)[1] is True


def test_a_cold_model_goes_where_it_fits_without_evicting_this_node_first() -> None:
    # "a" has 424 MB free: the 600 MB model goes to the node with the most free memory.
    assert choose_node(MODEL, "a", NODES, []) == ("b", True)
    # Where it fits here, here.
    assert choose_node(MODEL, "c", NODES, []) == ("c", True)
    # Nowhere room: here (its lifecycle actor evicts, falls back to the CPU or answers 503, as on one host).
    full = {n: node(n, free_mb=100) for n in ("a", "b")}
    assert choose_node(MODEL, "a", full, []) == ("a", True)


def test_room_counts_container_slots_cpu_fallback_and_installed_weights() -> None:
    assert not has_room(node("x", servers=("p", "q"), max_containers=2), MODEL)
    cpu_only = NodeRecord(name="x", host="x", instance="i", started_at=0, heartbeat_at=0, runtime="local")
    assert not has_room(cpu_only, MODEL)
    fallback = ModelInfo(id="m", name="m", family="whisper", size="t", engine="onnx-asr", cpu_fallback=True)
    assert has_room(cpu_only, fallback)
    # Weights are per host: a node that has them wins over one with more room that has not.
    nodes = {"a": node("a", free_mb=424), "b": node("b", installed=[]), "c": node("c", 700, installed=["m"])}
    assert choose_node(MODEL, "a", nodes, []) == ("c", True)


def test_nodes_silent_longer_than_dead_after_are_not_alive() -> None:
    now = time.time()
    fresh, old = node("a"), node("b")
    old.heartbeat_at = now - 30
    assert list(alive([fresh, old], 20.0, now)) == ["a"]


def test_installed_reports_of_several_nodes_merge() -> None:
    yes = InstalledModels(models={"m": Installed(installed=True, where="/w")})
    no = InstalledModels(models={"m": Installed(installed=False, missing="model.bin")})
    assert merge_installed({"installed.a": yes}) == yes.models
    merged = merge_installed({"installed.a": no, "installed.b": yes})
    assert merged["m"].installed and merged["m"].where == "b: /w"
    assert not merge_installed({"installed.a": no, "installed.b": no})["m"].installed
