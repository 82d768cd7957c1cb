"""Steady load on a running stack, every answer classified: correct, a clear error, or lost."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.conftest import JFK_TEXT
from tests.wer import word_error_rate


@dataclass
class Load:
    gateway: str
    audio: bytes
    model: str = "whisper-tiny.en"
    clients: int = 3
    timeout: float = 40.0  # longer than the service's request_timeout: an answer must come before it
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _running: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        self._running.set()
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def send(self, model: str | None = None) -> str:
        """One request; returns and counts its outcome."""
        outcome, detail = self._classify(model or self.model)
        with self._lock:
            self.counts["sent"] += 1
            self.counts[outcome] += 1
            if outcome != "ok":
                self.errors[detail[:120]] += 1
        return outcome

    def _client(self) -> None:
        while self._running.is_set():
            self.send()

    def _classify(self, model: str) -> tuple[str, str]:
        try:
            r = httpx.post(
                f"{self.gateway}/v1/audio/transcriptions",
                files={"file": ("jfk.flac", self.audio)},
                data={"model": model},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            return "lost", f"no answer: {exc!r}"
        try:
            body = r.json()
        except json.JSONDecodeError:
            return "lost", f"HTTP {r.status_code} without a JSON body"
        if r.status_code == 200:
            if word_error_rate(JFK_TEXT, body.get("text", "")) <= 0.2:
                return "ok", ""
            return "lost", f"wrong transcript: {body.get('text', '')!r}"
        message = (body.get("error") or {}).get("message", "")
        if r.status_code >= 400 and message:
            return "clear_error", f"{r.status_code} {message}"
        return "lost", f"HTTP {r.status_code} without an error message"

    def report(self, name: str) -> dict[str, object]:
        return {
            "scenario": name,
            **{k: self.counts.get(k, 0) for k in ("sent", "ok", "clear_error", "lost")},
            "errors": dict(self.errors.most_common(5)),
        }
