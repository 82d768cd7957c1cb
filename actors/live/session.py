"""One live session: the client's events in, OpenAI's server events out.

Audio is appended to the buffer; with server_vad the VAD finds where speech starts and stops and commits each
utterance itself, without it the client commits. While an utterance grows it is decoded again every
`partial_every_s` of new audio, and only the words two successive decodes agree on are sent as deltas (the
local-agreement policy of whisper_streaming), so deltas are append-only; once committed the whole utterance is
decoded once more (the model's full decoding) and `completed` carries it, beginning with the deltas already sent.
The transport is someone else's: `emit` sends an event, `transcribe` decodes audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.live.audio_in import RATE, BadAudio, Decoder
from actors.live.protocol import ProtocolError, Settings, new_id, session_event
from actors.live.vad import SpeechProbability, Turns
from schemas import errors, live
from schemas.live import Shape

log = logging.getLogger("asrpro.live")
Emit = Callable[[dict[str, Any]], Awaitable[None]]
# (audio at 16 kHz, final?, settings) -> text; raises errors.AsrError when the decode fails.
# (audio at 16 kHz, final?, settings, prompt) -> the decode's segments as (end in seconds, text); raises
# errors.AsrError when the decode fails. `prompt`: the text before this audio (None: the session's own prompt).
Transcribe = Callable[[np.ndarray, bool, Settings, str | None], Awaitable[list[tuple[float, str]]]]
TRIM_AFTER_S = 6.0  # partial decodes of a longer utterance start after its last segment already sent
FORCE_AFTER_S = 12.0  # a partial region this long sends all but its last segment, agreed or not
HOLD_BACK_WORDS = 1  # the last words of each partial decode, not sent until a later decode has more after them
PROMPT_CHARS = 200  # of the text already sent, given as the prompt of a decode that starts after it
# A model name as a session.update gives it -> the model id it means; raises ProtocolError for one that is not there.
Resolve = Callable[[str], Awaitable[str]]
MAX_UTTERANCE_S = 28.0  # an utterance is committed at this length even while speech goes on: one Whisper window
MIN_COMMIT_MS = 100  # OpenAI's floor for a commit


@dataclass
class Limits:
    partial_every_s: float = 0.5  # new audio between two partial decodes of a growing utterance
    max_buffer_s: float = 60.0  # uncommitted audio held without turn detection; more is refused
    max_event_bytes: int = 15 * 2**20  # one client event, as OpenAI takes it


@dataclass
class Utterance:
    item_id: str
    start: int  # its first sample in the session's audio
    end: int | None = None  # one past its last, once committed
    decoded_at: int = 0  # the session's samples when the last partial decode began
    hypothesis: list[str] = field(default_factory=list)  # the last partial decode's words (the anchored ones first)
    # Partial decodes start this many samples into the utterance, after `anchored`: words already sent whose
    # segments ended there (whisper_streaming's buffer trimming: a decode's cost grows with its audio).
    partial_from: int = 0
    anchored: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # words sent as deltas
    deltas: list[str] = field(default_factory=list)

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // RATE


class History:
    """The session's recent audio, by sample number: what an utterance is cut from (the VAD decides where it
    began only after it began, the padding before it included)."""

    def __init__(self, keep_s: float) -> None:
        self.keep = int(keep_s * RATE)
        self.start = 0  # sample number of audio[0]
        self.audio = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.audio)

    def add(self, samples: np.ndarray) -> None:
        self.audio = np.concatenate([self.audio, samples])
        if len(self.audio) > self.keep:
            drop = len(self.audio) - self.keep
            self.audio, self.start = self.audio[drop:], self.start + drop

    def between(self, start: int, end: int) -> np.ndarray:
        return self.audio[max(0, start - self.start) : max(0, end - self.start)].copy()


class Session:
    def __init__(
        self,
        session_id: str,
        shape: Shape,
        settings: Settings,
        emit: Emit,
        transcribe: Transcribe,
        model: str,
        limits: Limits | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        self.id, self.shape, self.settings, self.model = session_id, shape, settings, model
        self._emit, self._transcribe, self._resolve = emit, transcribe, resolve
        self.limits = limits or Limits()
        self._decoder = Decoder(settings.format)
        self._vad = SpeechProbability()
        self._turns = Turns(settings.turn) if settings.turn else None
        self._history = History(max(self.limits.max_buffer_s, MAX_UTTERANCE_S) + 2)
        self._current: Utterance | None = None
        self._last_end = 0  # where the last committed utterance ended
        self._previous_item: str | None = None
        self._partial: asyncio.Task[None] | None = None
        self._finals: asyncio.Queue[tuple[Utterance, np.ndarray] | None] = asyncio.Queue()
        self._final_worker = asyncio.ensure_future(self._finalise_in_turn())
        self._emitting = asyncio.Lock()
        self.last_activity = time.monotonic()
        self.audio_s = 0.0
        self.utterances = 0  # committed
        self.delta_latency: list[float] = []  # seconds from the audio a delta covers to the delta (its end)

    # ---- the client's events

    async def handle(self, raw: bytes) -> None:
        self.last_activity = time.monotonic()
        event_id = None
        try:
            if len(raw) > self.limits.max_event_bytes:
                raise ProtocolError(
                    live.BUFFER_TOO_LARGE, f"an event may hold at most {self.limits.max_event_bytes} bytes", None
                )
            try:
                event = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ProtocolError(live.INVALID_JSON, f"the event is not valid JSON: {exc}") from None
            if not isinstance(event, dict):
                raise ProtocolError(live.INVALID_JSON, "an event must be a JSON object")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            await self._dispatch(event)
        except ProtocolError as exc:
            await self.emit(live.error_event(exc.code, exc.message, exc.param, event_id))

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            await self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            await self._commit(client=True)
        elif kind == "input_audio_buffer.clear":
            await self._clear()
        elif kind in ("session.update", "transcription_session.update"):
            shape: Shape = "beta" if kind == "transcription_session.update" else "ga"
            await self._update(event.get("session"), shape)
        else:
            known = "input_audio_buffer.append, .commit, .clear, session.update, transcription_session.update"
            raise ProtocolError(live.INVALID_EVENT, f"unknown event type {kind!r}: this server takes {known}", "type")

    async def _update(self, session: Any, shape: Shape) -> None:
        before, model = self.settings.format, self.model
        candidate = Settings(**vars(self.settings))
        candidate.apply(session, shape)
        if self._resolve is not None and candidate.model and candidate.model != self.settings.model:
            model = await self._resolve(candidate.model)  # an unknown model: an error event, nothing changed
        self.settings, self.model = candidate, model
        if self.settings.format != before:
            self._decoder = Decoder(self.settings.format)
        # New turn settings apply from here; speech under way is cut at this point (committed by the VAD, or by
        # the client without it).
        self._turns = Turns(self.settings.turn) if self.settings.turn else None
        self.shape = shape
        await self.emit(session_event("updated", shape, self.settings.render(self.id, shape, self.model)))

    async def _append(self, audio_b64: Any) -> None:
        if not isinstance(audio_b64, str):
            raise ProtocolError(live.BAD_AUDIO, "audio must be a base64 string", "audio")
        try:
            samples = self._decoder.decode(audio_b64)
        except BadAudio as exc:
            raise ProtocolError(live.BAD_AUDIO, str(exc), "audio") from None
        if self._turns is None:
            held = self._held(self._current) if self._current else 0.0
            if held + len(samples) / RATE > self.limits.max_buffer_s:
                raise ProtocolError(
                    live.BUFFER_TOO_LARGE,
                    f"the input audio buffer would hold more than {self.limits.max_buffer_s:g} s: commit or clear it",
                    "audio",
                )
        self.audio_s += len(samples) / RATE
        at = self._history.end
        self._history.add(samples)
        if self._turns is None:
            if self._current is None:
                self._current = Utterance(new_id("item"), at)
        else:
            for window_start, probability in self._vad.feed(samples):
                await self._turn(self._turns.step(window_start * 1000 // RATE, probability))
        utterance = self._current
        if utterance is not None and self._turns is not None and self._held(utterance) >= MAX_UTTERANCE_S:
            # One Whisper window: commit it, and go on with the same speech as a new item.
            await self._commit(client=False)
            await self._started(self._history.end)
        self._maybe_decode()

    async def _turn(self, change: tuple[str, int] | None) -> None:
        if change is None:
            return
        what, at_ms = change
        if what == "started":
            await self._started(max(at_ms * RATE // 1000, self._history.start))
        elif self._current is not None:
            self._current.end = at_ms * RATE // 1000
            await self.emit(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": at_ms, "item_id": self._current.item_id}
            )
            await self._commit(client=False)

    async def _started(self, at: int) -> None:
        # Not before the previous utterance's end: its padding must not hear the last words again.
        self._current = Utterance(new_id("item"), max(at, self._last_end))
        await self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": self._current.start_ms,
                "item_id": self._current.item_id,
            }
        )

    def _held(self, utterance: Utterance) -> float:
        return ((utterance.end or self._history.end) - utterance.start) / RATE

    def _audio(self, utterance: Utterance) -> np.ndarray:
        return self._history.between(utterance.start, utterance.end or self._history.end)

    async def _commit(self, *, client: bool) -> None:
        utterance = self._current
        if utterance is None or self._held(utterance) * 1000 < MIN_COMMIT_MS:
            if client:
                held = 0.0 if utterance is None else self._held(utterance) * 1000
                raise ProtocolError(
                    live.COMMIT_EMPTY,
                    f"buffer too small: expected at least {MIN_COMMIT_MS} ms of audio, the buffer holds {held:.2f} ms",
                )
            self._current = None
            return
        self._current = None
        if utterance.end is None:
            utterance.end = self._history.end
        self._last_end = utterance.end
        if self._partial is not None:
            self._partial.cancel()
        await self.emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": utterance.item_id,
                "previous_item_id": self._previous_item,
            }
        )
        self._previous_item = utterance.item_id
        self.utterances += 1
        self._finals.put_nowait((utterance, self._audio(utterance)))

    async def _clear(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        self._current = None
        if self._turns is not None:
            self._turns = Turns(self._turns.settings)
        await self.emit({"type": "input_audio_buffer.cleared"})

    # ---- decoding

    def _maybe_decode(self) -> None:
        utterance = self._current
        if utterance is None or (self._partial is not None and not self._partial.done()):
            return
        if (self._history.end - max(utterance.decoded_at, utterance.start)) < self.limits.partial_every_s * RATE:
            return
        utterance.decoded_at = self._history.end
        self._partial = asyncio.ensure_future(self._decode_partial(utterance))

    async def _decode_partial(self, utterance: Utterance) -> None:
        began = time.monotonic()
        start = utterance.partial_from
        anchored = list(utterance.anchored)
        prompt = " ".join(anchored)[-PROMPT_CHARS:] if anchored else None
        try:
            pieces = await self._transcribe(self._audio(utterance)[start:], False, self.settings, prompt)
        except errors.AsrError as exc:
            log.info("partial decode failed", extra={"session": self.id, "error": exc.message})
            return
        if self._current is not utterance or utterance.partial_from != start:
            return  # committed or cleared meanwhile: the final decode speaks for it
        words = anchored + [word for _, text in pieces for word in text.split()]
        # Where the words already sent end, in this decode and in the previous one (a re-decode may word the
        # beginning differently): what the two agree on beyond that is new and stable.
        previous = utterance.hypothesis
        utterance.hypothesis = words
        fresh = words[_aligned(utterance.sent, words) :]
        before = previous[_aligned(utterance.sent, previous) :] if previous else []
        # The decode's last word is never sent: the audio may end inside it, and two decodes cut at nearly the same
        # place agree on a wrong word as readily as on a right one (and on a full stop that the next decode drops).
        agreed = min(_common_prefix(before, fresh), len(fresh) - HOLD_BACK_WORDS)
        if agreed > 0:
            new = fresh[:agreed]
            await self._delta(utterance, new)
            # How long after the end of the audio it was decoded from this delta went out.
            self.delta_latency.append(time.monotonic() - began)
        if (self._history.end - utterance.start - start) / RATE >= FORCE_AFTER_S and len(pieces) > 1:
            # Two decodes that never agree (a beginning worded anew each time) would hold every delta back and leave
            # the final decode a whole paragraph: past FORCE_AFTER_S, all but the last segment are taken as heard.
            settled = anchored + [word for _, text in pieces[:-1] for word in text.split()]
            await self._delta(utterance, settled[_aligned(utterance.sent, settled) :])
        self._trim(utterance, pieces, len(anchored))
        self._maybe_decode()

    def _trim(self, utterance: Utterance, pieces: list[tuple[float, str]], anchored: int) -> None:
        """Once the partial region is long, start the next partial decodes after the last segment whose words are
        all sent: what was agreed is not decoded again and again."""
        if (self._history.end - utterance.start - utterance.partial_from) / RATE < TRIM_AFTER_S:
            return
        counted, cut, cut_words = anchored, 0.0, anchored
        for end, text in pieces[:-1]:  # never the last segment: it may still grow
            counted += len(text.split())
            if counted > len(utterance.sent):
                break
            cut, cut_words = end, counted
        if cut > 0:
            utterance.partial_from += int(cut * RATE)
            utterance.anchored = utterance.sent[:cut_words]

    async def _delta(self, utterance: Utterance, words: list[str]) -> None:
        if not words:
            return
        text = (" " if utterance.sent else "") + " ".join(words)
        utterance.sent.extend(words)
        utterance.deltas.append(text)
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": utterance.item_id,
                "content_index": 0,
                "delta": text,
            }
        )

    async def _finalise_in_turn(self) -> None:
        """Committed utterances, decoded in the order they were committed."""
        while (committed := await self._finals.get()) is not None:
            await self._finalise(*committed)

    async def _finalise(self, utterance: Utterance, audio: np.ndarray) -> None:
        # The final decode starts where the partial decodes last started (after the words already sent whose
        # segments ended there, given as its prompt): those words stay anyway, and a 20-s utterance's final
        # decode would otherwise hold `completed` back by seconds.
        start, anchored = utterance.partial_from, list(utterance.anchored)
        prompt = " ".join(anchored)[-PROMPT_CHARS:] if anchored else None
        try:
            pieces = await self._transcribe(audio[start:], True, self.settings, prompt)
        except errors.AsrError as exc:
            await self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": utterance.item_id,
                    "content_index": 0,
                    "error": {"type": "server_error", "code": exc.kind or exc.code, "message": exc.message},
                }
            )
            return
        words = anchored + [word for _, text in pieces for word in text.split()]
        # What was sent stays: the rest of the final decode follows it (where the two disagree, the words the
        # final decode has beyond the sent ones' place).
        await self._delta(utterance, words[_aligned(utterance.sent, words) :])
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": utterance.item_id,
                "content_index": 0,
                "transcript": "".join(utterance.deltas),
                "usage": {"type": "duration", "seconds": round(len(audio) / RATE, 3)},
            }
        )

    # ---- out

    async def emit(self, event: dict[str, Any]) -> None:
        async with self._emitting:
            await self._emit({"event_id": new_id("event"), **event})

    async def close(self) -> None:
        """Stop decoding: what was committed is still finished (its completed event sent) unless cancelled."""
        if self._partial is not None:
            self._partial.cancel()
        self._finals.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._final_worker

    def abort(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        self._final_worker.cancel()


_WORD = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _WORD.sub("", word.lower())


def _same(a: list[str], b: list[str]) -> bool:
    return [_norm(w) for w in a] == [_norm(w) for w in b]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if _norm(x) != _norm(y):
            break
        n += 1
    return n


def _aligned(sent: list[str], final: list[str]) -> int:
    """Where, in the final decode's words, the words already sent end."""
    if not sent:
        return 0
    if _same(final[: len(sent)], sent):
        return len(sent)
    matcher = difflib.SequenceMatcher(a=[_norm(w) for w in sent], b=[_norm(w) for w in final], autojunk=False)
    blocks = [block for block in matcher.get_matching_blocks() if block.size]
    if not blocks:
        return min(len(sent), len(final))
    last = blocks[-1]
    return last.b + last.size + (len(sent) - (last.a + last.size))
