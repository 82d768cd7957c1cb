"""`POST /api/pull`: a model's weights onto a node, with progress as it goes — newline-delimited JSON as Ollama's
/api/pull streams it (`{"status", "completed", "total"}` lines, then `{"status": "success", ...}`). Weights are per
host: `?node=` names the node (default: this gateway's), whose lifecycle actor runs the pull."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from framework import bus
from framework.config import node_name
from gateway.connection import Connection, Settings
from gateway.errors import error_object, status_and_code
from schemas import codec, endpoints, errors
from schemas.errors import AsrError
from schemas.lifecycle import PullModel, PullProgress, PullResult

router = APIRouter()


class PullRequest(msgspec.Struct, kw_only=True):
    """The body of POST /api/pull, as Ollama's clients send it."""

    model: str = ""
    name: str = ""


PULL_TIMEOUT_S = 3600.0  # a large model over a slow line
SILENCE_S = 30.0  # the lifecycle actor sends its figures at least every 5 s while it pulls


@router.post("/api/pull")
async def pull(request: Request, conn: Connection, config: Settings, node: str | None = None) -> StreamingResponse:
    try:
        asked = codec.decode(await request.body(), PullRequest, codec.JSON)
    except codec.DecodeError:  # not JSON, not an object, the wrong types, nested without end: all the same to us
        asked = PullRequest()
    wanted = asked.model or asked.name  # Ollama's clients send either
    if not wanted:
        raise AsrError(errors.BAD_REQUEST, 'send JSON {"model": "<model id>"}', param="model")
    model = conn.catalogue.resolve(wanted).id  # 404 naming the known models
    target = node or node_name(config)
    if node is not None and node not in conn.nodes.values:
        raise AsrError(errors.NOT_FOUND, f"no live node {node!r} (GET /api/nodes lists them)", param="node")
    rpc = endpoints.LIFECYCLE_PULL.on(target)
    replies = bus.stream_replies(
        conn.client,
        rpc.subject,
        codec.encode(PullModel(model=model)),
        timeout=PULL_TIMEOUT_S,
        silence=SILENCE_S,
        what=f"the lifecycle actor of node {target}",
    )
    # The first line only once the node answered: a node that is not there is an HTTP error, not a 200 stream.
    first = await anext(replies)
    if not (first.headers and first.headers.get(codec.PARTIAL_HEADER)):
        bus.decode_reply(rpc, first.headers, first.data)  # refused at once (unknown model there, ...): its status
    return StreamingResponse(_lines(first, replies, rpc), media_type="application/x-ndjson")


async def _lines(first: Any, rest: AsyncIterator[Any], rpc: Any) -> AsyncIterator[str]:
    async def replies() -> AsyncIterator[Any]:
        yield first
        async for reply in rest:
            yield reply

    try:
        async for reply in replies():
            if reply.headers and reply.headers.get(codec.PARTIAL_HEADER):
                step = codec.decode(reply.data, PullProgress, codec.content_type(reply.headers))
                yield _line({"status": step.status, "completed": step.completed, "total": step.total})
                continue
            result: PullResult = bus.decode_reply(rpc, reply.headers, reply.data)
            state = result.installed
            done = {"status": "success", "model": result.model, "pulled": result.pulled, "where": state.where}
            yield _line(done | {"size_bytes": state.size_bytes})
    except AsrError as exc:
        status, code = status_and_code(exc)
        yield _line({"error": error_object(status, exc.message, code, exc.param)})


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data) + "\n"
