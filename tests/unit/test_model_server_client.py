"""The one client of the model-server HTTP contract, against httpx.MockTransport."""

from __future__ import annotations

import time

import httpx
import pytest

from framework import logs
from framework.model_server import ModelServerClient, ServerGone
from schemas.errors import AsrError
from schemas.model_server import TranscribeOptions
from tests.unit.fakes import FakeModelServer, error_response

URL = "http://whisper-tiny.en.fake"


async def test_health_states() -> None:
    servers = FakeModelServer()
    client = servers.client()
    assert await client.health(URL) == ("ok", "")
    servers.health["whisper-tiny.en"] = "loading"
    assert await client.health(URL) == ("loading", "whisper-tiny.en is loading")
    servers.health["whisper-tiny.en"] = "error"
    assert await client.problem(URL) == "whisper-tiny.en is error"
    servers.respond = lambda _: httpx.Response(500, content=b"not json")
    assert await client.health(URL) == ("error", "/health answered 500")


async def test_unreachable_health_says_why() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = ModelServerClient(transport=httpx.MockTransport(refuse))
    status, detail = await client.health(URL)
    assert status == "unreachable" and "connection refused" in detail


async def test_transcribe_sends_the_contract_and_the_request_id() -> None:
    servers = FakeModelServer()
    logs.request_id.set("req-42")
    options = TranscribeOptions(response_format="verbose_json", language="en", temperature=[0.2], beam_size=1)
    result = await servers.client().transcribe(URL, "whisper-tiny.en", b"RIFF", "a.wav", options, time.monotonic() + 5)
    assert result.text == "part 0 by whisper-tiny.en part 1 by whisper-tiny.en part 2 by whisper-tiny.en"
    sent = servers.requests[-1]
    body = sent.content.decode(errors="replace")
    assert sent.url.path == "/transcribe" and sent.headers["X-Request-Id"] == "req-42"
    params = dict(sent.url.params)
    assert params["response_format"] == "verbose_json" and params["language"] == "en"
    assert (params["temperature"], params["beam_size"], params["filename"]) == ("0.2", "1", "a.wav")
    assert params["word_timestamps"] == "false" and "prompt" not in params
    assert body == "RIFF" and sent.headers["Content-Type"] == "application/octet-stream"


async def test_refusals_keep_the_servers_code_and_message() -> None:
    servers = FakeModelServer()
    servers.respond = lambda _: error_response(415, "could not decode audio: not a media file")
    with pytest.raises(AsrError) as err:
        await servers.client().transcribe(URL, "m", b"x", "x", TranscribeOptions(), time.monotonic() + 5)
    assert (err.value.code, err.value.message) == ("415", "could not decode audio: not a media file")


async def test_a_gone_server_is_retryable_a_slow_one_is_a_timeout() -> None:
    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    gone = ModelServerClient(transport=httpx.MockTransport(reset))
    with pytest.raises(ServerGone):
        await gone.transcribe(URL, "m", b"x", "x", TranscribeOptions(), time.monotonic() + 5)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(AsrError) as err:
        await ModelServerClient(transport=httpx.MockTransport(slow)).transcribe(
            URL, "m", b"x", "x", TranscribeOptions(), time.monotonic() + 5
        )
    assert err.value.code == "504"


async def test_a_long_prompt_goes_in_a_multipart_body() -> None:
    servers = FakeModelServer()
    options = TranscribeOptions(response_format="verbose_json", prompt="漢字" * 2000)
    await servers.client().transcribe(URL, "whisper-tiny.en", b"RIFF", "a.wav", options, time.monotonic() + 5)
    sent = servers.requests[-1]
    assert sent.headers["Content-Type"].startswith("multipart/form-data") and not sent.url.query
    assert len(sent.url.raw_path) < 100


async def test_a_server_of_another_model_at_the_address_is_gone_not_an_error() -> None:
    servers = FakeModelServer()
    servers.respond = lambda _: error_response(409, "this server runs whisper-base, not whisper-tiny.en")
    with pytest.raises(ServerGone, match=r"not whisper-tiny\.en's"):
        await servers.client().transcribe(URL, "whisper-tiny.en", b"x", "x", TranscribeOptions(), time.monotonic() + 5)
    assert servers.requests[-1].headers["X-Model-Id"] == "whisper-tiny.en"


def test_request_ids_from_outside_must_be_sensible() -> None:
    assert logs.clean_request_id("trace-7f3a:9c.2e_x") == "trace-7f3a:9c.2e_x"
    for hostile in ("", None, "a b", "x\r\nX-Evil: 1", "é", "a" * 129):
        assert logs.clean_request_id(hostile) == ""
    assert len(logs.new_request_id()) == 32


def test_options_read_back_what_the_form_wrote_and_refuse_bad_values() -> None:
    sent = TranscribeOptions(language="de", temperature=[0.0, 0.4], beam_size=1, vad_filter=True, hotwords="ASR")
    assert TranscribeOptions.from_form(sent.form()) == sent
    assert TranscribeOptions.from_form({}) == TranscribeOptions()
    for bad in ({"temperature": "hot"}, {"temperature": "1.5"}, {"beam_size": "0"}, {"response_format": "mp3"}):
        with pytest.raises(AsrError) as err:
            TranscribeOptions.from_form(bad)
        assert err.value.code == "400", bad
