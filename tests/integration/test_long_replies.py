"""Replies that come late or come in several messages get through nats-server's permissions: a responder with
`allow_responses` may answer only within its `expires` (2 minutes when it is just `true`) and `max` times."""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from tests.conftest import Nats

LATE_S = 125.0  # past nats-server's default of 2 minutes


async def test_a_reply_after_more_than_two_minutes_arrives(jetstream: Nats) -> None:
    proxy = await jetstream.connect("proxy")
    client = await jetstream.connect("client")

    async def answer_late(msg: Msg) -> None:
        await asyncio.sleep(LATE_S)
        await msg.respond(b"late but here")

    async def answer_late_in_parts(msg: Msg) -> None:
        assert msg.reply
        for part in (b"1", b"2", b"3"):
            await proxy.publish(msg.reply, part, headers={"Asr-Partial": "1"})
        await asyncio.sleep(LATE_S)
        await proxy.publish(msg.reply, b"done")

    try:
        # Handed to tasks: nats-py runs one callback at a time per subscription.
        tasks: set[asyncio.Task[None]] = set()

        async def late(msg: Msg) -> None:
            tasks.add(asyncio.ensure_future(answer_late(msg)))

        async def in_parts(msg: Msg) -> None:
            tasks.add(asyncio.ensure_future(answer_late_in_parts(msg)))

        await proxy.subscribe("asr.transcribe.late-model", cb=late)
        await proxy.subscribe("asr.transcribe.parts-model", cb=in_parts)
        await proxy.flush()
        inbox = client.new_inbox()
        sub = await client.subscribe(inbox)
        await client.publish("asr.transcribe.parts-model", b"", reply=inbox)
        late_reply = asyncio.ensure_future(client.request("asr.transcribe.late-model", b"", timeout=LATE_S + 30))
        parts = [(await sub.next_msg(timeout=LATE_S + 30)).data for _ in range(4)]
        assert parts == [b"1", b"2", b"3", b"done"]
        assert (await late_reply).data == b"late but here"
    finally:
        await client.close()
        await proxy.close()
