"""Webhooks of ended jobs against a real HTTP receiver: signed per Standard Webhooks, retried with the same
webhook-id until a 2xx and never after one, and never sent where they could reach inside the network (SSRF)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nats.aio.client import Client

from actors.jobs.actor import Jobs
from framework import bus
from schemas import endpoints
from schemas.errors import AsrError
from schemas.jobs import JobQuery, ListJobs, SecretQuery
from tests.integration.test_jobs import submit, until_ended


class Receiver:
    """An HTTP endpoint on loopback that answers the statuses it is given in turn (then 200) and keeps what came."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[dict[str, str], bytes, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/asr"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver([500, 503])
    yield found
    found.server.shutdown()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' verification, written from the specification (not from the code under test)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[1] == expected for part in headers["webhook-signature"].split())


async def test_a_webhook_is_signed_retried_with_one_id_and_stops_after_a_2xx(
    system, start_actor, gateway_nc: Client, jfk: bytes, receiver: Receiver
) -> None:
    await start_actor(
        Jobs, ASRPRO_JOBS__WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]', ASRPRO_JOBS__WEBHOOK_RETRY="[0.5, 1.0, 1.0]"
    )
    job = await submit(gateway_nc, jfk, webhook_url=receiver.url)
    assert job.webhook_url == receiver.url and job.audio_seconds == pytest.approx(11.0, abs=0.1)
    assert (await until_ended(gateway_nc, job.id)).status == "completed"
    deadline = time.monotonic() + 30
    while len(receiver.received) < 3:
        assert time.monotonic() < deadline, f"3 attempts expected, got {len(receiver.received)}"
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # none follows the 2xx
    assert len(receiver.received) == 3
    ids = {headers["webhook-id"] for headers, _, _ in receiver.received}
    assert len(ids) == 1, ids
    # The back-off: at least the configured delays between attempts.
    times = [t for _, _, t in receiver.received]
    assert times[1] - times[0] >= 0.4 and times[2] - times[1] >= 0.9
    secret = (await bus.request(gateway_nc, endpoints.JOBS_SECRET, SecretQuery(owner="key-a"))).secret
    other = (await bus.request(gateway_nc, endpoints.JOBS_SECRET, SecretQuery(owner="key-b"))).secret
    assert secret.startswith("whsec_") and secret != other
    for headers, body, _ in receiver.received:
        assert verify(secret, headers, body)
        assert not verify(other, headers, body)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        event = json.loads(body)
        assert event["type"] == "audio.job.completed"
        assert event["data"]["id"] == job.id and event["data"]["status"] == "completed"
        assert "audio_object" not in event["data"] and "owner" not in event["data"]
    record = await bus.request(gateway_nc, endpoints.JOBS_GET, JobQuery(owner="key-a", id=job.id))
    assert record.webhook is not None and record.webhook.attempts == 3 and record.webhook.delivered_at


REFUSED = [
    "http://127.0.0.1:9/x",  # loopback
    "http://localhost/x",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata: link-local
    "http://10.0.0.5/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 as one number
    "ftp://example.com/",
    "file:///etc/passwd",
    "http://user:pw@example.com/",
    "not a url",
]


async def test_webhooks_that_could_reach_inside_the_network_are_refused_before_anything_is_stored(
    system, start_actor, gateway_nc: Client, jfk: bytes
) -> None:
    await start_actor(Jobs)  # the default: any public host, nothing private
    for url in REFUSED:
        with pytest.raises(AsrError) as err:
            await submit(gateway_nc, jfk, webhook_url=url)
        assert (err.value.code, err.value.param) == ("400", "webhook_url"), (url, err.value.message)
    assert (await bus.request(gateway_nc, endpoints.JOBS_LIST, ListJobs(owner="key-a"))).jobs == []
