"""One live session: the client's events in, OpenAI's server events out.

Audio is appended to the buffer; with server_vad the VAD finds where speech starts and stops and commits each
utterance itself, without it the client commits. While an utterance grows it is decoded again every
`partial_every_s` of new audio, and only the words two successive decodes agree on are sent as deltas (the
local-agreement policy of whisper_streaming), so deltas are append-only; once committed the whole utterance is
decoded once more (the model's full decoding) and `completed` carries that decode: it begins with the deltas' text
wherever the partial decodes heard right, and corrects them where they did not (measured with tiny.en: keeping the
deltas' words in `completed` made its word error rate about twice the offline decode's). Speech that goes on with
only short pauses is committed at one once the utterance is PAUSE_CUT_AFTER_S long.
The transport is someone else's: `emit` sends an event, `transcribe` decodes audio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import difflib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from actors.live.audio_in import RATE, BadAudio, Decoder
from actors.live.protocol import ProtocolError, Settings, new_id, quoted, session_event
from actors.live.vad import WINDOW, SpeechProbability, Turns, TurnSettings
from framework.cancelling import retrieved
from schemas import errors, live
from schemas.live import Shape

log = logging.getLogger("asrpro.live")
Emit = Callable[[dict[str, Any]], Awaitable[None]]


class Piece(NamedTuple):
    """One segment of a decode: its text, and where it ends in seconds into the decoded audio (its last word's end
    where the decode gave word times: a segment's own end may stretch over speech it left out)."""

    end: float
    text: str


# (audio at 16 kHz, final?, settings, prompt) -> the decode's segments; raises errors.AsrError when the decode fails.
# `prompt`: the text before this audio (None: the session's own prompt).
Transcribe = Callable[[np.ndarray, bool, Settings, str | None], Awaitable[list[Piece]]]
TRIM_AFTER_S = 6.0  # partial decodes of a longer utterance start after its last segment already sent
FORCE_AFTER_S = 12.0  # a partial region this long sends all but its last segment, agreed or not
HOLD_BACK_WORDS = 1  # the last words of each partial decode, not sent until a later decode has more after them
PROMPT_CHARS = 200  # of the text already sent, given as the prompt of a decode that starts after it
# A session.update's settings (and its shape) -> the id of the model they name; raises ProtocolError for a model that
# is not there or a language it lacks.
Resolve = Callable[[Settings, Shape], Awaitable[str]]
MAX_UTTERANCE_S = 28.0  # an utterance is committed at this length even while speech goes on: one Whisper window
# Speech that goes on without the turn's silence (a reader, a speaker who pauses only briefly between sentences) is
# committed at its first pause once it is this long, so that no utterance is cut inside a word at MAX_UTTERANCE_S
# (measured on plain prose: utterances of 8 to 12 s decode as well as 28-s ones, and their final decodes are shorter).
PAUSE_CUT_AFTER_S = 8.0
PAUSE_WINDOWS = 8  # VAD windows (32 ms) below the silence level in a row that make such a pause: 256 ms
# A shorter utterance's final decode starts at such a pause too, before the turn's silence has elapsed: if the
# silence does (no window above the silence level in between), that decode is the final one, begun up to
# silence_duration_ms - 256 ms early; if speech resumes, it is cancelled and the utterance goes on.
TAIL_WINDOWS = 10  # VAD windows of speech in a row after a final decode's last segment: its rest is decoded again
TAIL_MARGIN = RATE * 3 // 10  # after a segment's end, where its last word's tail may still sound
CARRY_TEXT = True  # each utterance is decoded with the session's text before it as the prompt, as Whisper does
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
    announced: bool = False  # speech_started sent for it (not for one the client began without turn detection)

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // RATE


@dataclass
class Early:
    """An utterance's final decode, begun at a pause before the turn's silence had elapsed."""

    utterance: Utterance
    end: int  # the session sample its audio ends at
    decode: asyncio.Task[list[Piece]]


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
        self._windows: collections.deque[tuple[int, float]] = collections.deque()  # (first sample, P(speech))
        self._quiet_since: int | None = None  # the first sample of the VAD's current run of quiet windows
        self._earlier: list[Utterance] = []  # the last committed utterances: their words are the next one's prompt
        self._previous_item: str | None = None
        self._partial: asyncio.Task[None] | None = None
        self._finals: asyncio.Queue[tuple[Utterance, np.ndarray, Early | None] | None] = asyncio.Queue()
        self._early: Early | None = None  # the current utterance's final decode, begun at a pause
        self._final_worker = asyncio.ensure_future(self._finalise_in_turn())
        self._finalising = 0  # committed utterances whose final decode has not ended
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
            except RecursionError:  # JSON nested deeper than the parser goes
                raise ProtocolError(live.INVALID_JSON, "the event is nested too deeply") from None
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
            shown = quoted(kind)
            raise ProtocolError(live.INVALID_EVENT, f"unknown event type {shown}: this server takes {known}", "type")

    async def _update(self, session: Any, shape: Shape) -> None:
        before, model = self.settings.format, self.model
        candidate = Settings(**vars(self.settings))
        candidate.apply(session, shape)
        if self._resolve is not None:
            # An unknown model, or a language it lacks: an error event, nothing changed.
            model = await self._resolve(candidate, shape)
        self.settings, self.model = candidate, model
        if self.settings.format != before:
            self._decoder = Decoder(self.settings.format)
        # New turn settings apply from here; speech under way goes on as the same utterance (committed by the VAD,
        # or by the client without it). A final decode begun at a pause was begun under the old settings.
        self._cancel_early()
        self._quiet_since = None
        turns = Turns(self.settings.turn) if self.settings.turn else None
        if turns is not None and self._turns is not None:
            turns.speaking, turns.started_ms = self._turns.speaking, self._turns.started_ms
        self._turns = turns
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
        if self._turns is None and self._current is None:
            self._current = Utterance(new_id("item"), at)
        # The VAD runs without turn detection too: a final decode's rest is checked against it (_speech_after).
        for window_start, probability in self._vad.feed(samples):
            self._windows.append((window_start, probability))
            if self._turns is not None:
                await self._turn(self._turns.step(window_start * 1000 // RATE, probability))
                await self._pause(window_start, probability)
        while self._windows and self._windows[0][0] < self._history.start:
            self._windows.popleft()
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

    async def _pause(self, at: int, probability: float) -> None:
        """A long utterance is committed at a short pause (speech_stopped there, as if the turn's silence were
        shorter); the next begins when speech resumes, without the turn's silence in between."""
        assert self._turns is not None
        settings = self._turns.settings
        if probability >= settings.silence_level:
            # Not silence (as Turns counts it): the pause, if any, has ended.
            self._cancel_early()
            self._quiet_since = None
            if probability >= settings.threshold and self._current is None and self._turns.speaking:
                await self._started(max(at - settings.prefix_padding_ms * RATE // 1000, self._history.start))
            return
        if self._quiet_since is None:
            self._quiet_since = at
        utterance = self._current
        if (
            utterance is not None
            and at + WINDOW - self._quiet_since >= PAUSE_WINDOWS * WINDOW
            and (self._quiet_since - utterance.start) / RATE >= PAUSE_CUT_AFTER_S
        ):
            # Cut in the middle of the pause so far: neither side's word is clipped.
            utterance.end = (self._quiet_since + at + WINDOW) // 2
            await self.emit(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": utterance.end * 1000 // RATE,
                    "item_id": utterance.item_id,
                }
            )
            await self._commit(client=False)
        elif (
            utterance is not None
            and self._early is None
            and not self._finalising
            and at + WINDOW - self._quiet_since >= PAUSE_WINDOWS * WINDOW
            and self._held(utterance) * 1000 >= MIN_COMMIT_MS
        ):
            # Earlier words' final decodes have ended, so this one's prompt is what it would be at the commit.
            if self._partial is not None:
                self._partial.cancel()
            # Up to this window only: the rest of the chunk being read may hold speech (the next utterance's).
            end = at + WINDOW
            audio = self._history.between(utterance.start, end)
            decode = asyncio.ensure_future(self._transcribe(audio, True, self.settings, self._prompt(utterance, [])))
            decode.add_done_callback(retrieved)
            self._early = Early(utterance, end, decode)

    def _cancel_early(self) -> None:
        if self._early is not None:
            self._early.decode.cancel()
            self._early = None

    async def _started(self, at: int) -> None:
        if self._current is not None and self._current.announced:
            return
        if self._current is None:
            # Not before the previous utterance's end: its padding must not hear the last words again.
            self._current = Utterance(new_id("item"), max(at, self._last_end))
        # else an utterance the client began before turn detection was switched on: it goes on, and is announced
        # now, so that its speech_stopped is never the first a client hears of it.
        self._current.announced = True
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
            self._cancel_early()
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
        self._earlier = [*self._earlier[-4:], utterance]
        self.utterances += 1
        self._finalising += 1
        early, self._early = self._early, None
        if early is not None and (early.utterance is not utterance or early.end > utterance.end):
            early.decode.cancel()
            early = None
        self._finals.put_nowait((utterance, self._audio(utterance), early))

    async def _clear(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        self._cancel_early()
        self._current, self._quiet_since = None, None
        if self._turns is not None:
            self._turns = Turns(self._turns.settings)
        await self.emit({"type": "input_audio_buffer.cleared"})

    # ---- decoding

    def _maybe_decode(self) -> None:
        utterance = self._current
        if utterance is None or (self._partial is not None and not self._partial.done()):
            return
        if self._finalising or self._early is not None:
            # The final decode first: on a busy CPU a partial decode of the next utterance beside it would delay
            # `completed` by as much as it takes itself (measured: speech_stopped -> completed p50 1.5-1.9 s).
            return
        if self._quiet_since is not None and self._quiet_since > utterance.start:
            # In a pause: a decode would hear no new word, and may be running still when the pause commits the
            # utterance and its final decode needs the cores.
            return
        if (self._history.end - max(utterance.decoded_at, utterance.start)) < self.limits.partial_every_s * RATE:
            return
        utterance.decoded_at = self._history.end
        self._partial = asyncio.ensure_future(self._decode_partial(utterance))

    async def _decode_partial(self, utterance: Utterance) -> None:
        began = time.monotonic()
        start = utterance.partial_from
        anchored = list(utterance.anchored)
        try:
            pieces = await self._transcribe(
                self._audio(utterance)[start:], False, self.settings, self._prompt(utterance, anchored)
            )
        except errors.AsrError as exc:
            log.info("partial decode failed", extra={"session": self.id, "error": exc.message})
            return
        if self._current is not utterance or utterance.partial_from != start:
            return  # committed or cleared meanwhile: the final decode speaks for it
        words = anchored + [word for piece in pieces for word in piece.text.split()]
        # Where the words already sent end, in this decode and in the previous one (a re-decode may word the
        # beginning differently): what the two agree on beyond that is new and stable.
        previous = utterance.hypothesis
        utterance.hypothesis = words
        at = _aligned(utterance.sent, words)
        fresh = words[at:]
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
            settled = anchored + [word for piece in pieces[:-1] for word in piece.text.split()]
            await self._delta(utterance, settled[_aligned(utterance.sent, settled) :])
        self._trim(utterance, pieces, len(anchored))
        self._maybe_decode()

    def _trim(self, utterance: Utterance, pieces: list[Piece], anchored: int) -> None:
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

    def _prompt(self, utterance: Utterance, anchored: list[str]) -> str | None:
        """The text before a decode's audio, as Whisper conditions each window on the one before: the session's
        prompt, the words of the utterances before this one, and this one's words before the decode's start; its
        last PROMPT_CHARS, whole words."""
        # Those committed before it (a final decode may run after later utterances were committed).
        at = next((n for n, before in enumerate(self._earlier) if before is utterance), len(self._earlier))
        earlier = [word for before in self._earlier[:at] for word in before.sent]
        words = (self.settings.prompt or "").split() + (earlier if CARRY_TEXT else []) + anchored
        kept: list[str] = []
        for word in reversed(words):
            if sum(len(w) + 1 for w in kept) + len(word) > PROMPT_CHARS:
                break
            kept.append(word)
        return " ".join(reversed(kept)) or None

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
            try:
                await self._finalise(*committed)
            except Exception:  # a bug in one item's ending must not end the session's decoding
                log.exception("final decode failed", extra={"session": self.id})
            finally:
                self._finalising -= 1
            self._maybe_decode()

    async def _finalise(self, utterance: Utterance, audio: np.ndarray, early: Early | None) -> None:
        """The final decode of the whole utterance is its `completed` transcript. The deltas sent before it are the
        words partial decodes agreed on; where the final decode (all of the utterance heard, the model's full
        decoding) words them otherwise, `completed` carries the final decode's words, and the last delta the words it
        has beyond the sent ones' place."""
        try:
            pieces = await self._whole(utterance, audio, early)
            pieces += await self._rest(utterance, audio, pieces)
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
        words = [word for piece in pieces for word in piece.text.split()]
        await self._delta(utterance, words[_aligned(utterance.sent, words) :])
        utterance.sent = words  # what the next utterance's decodes take as the text before them
        await self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": utterance.item_id,
                "content_index": 0,
                "transcript": " ".join(words),
                "usage": {"type": "duration", "seconds": round(len(audio) / RATE, 3)},
            }
        )

    async def _whole(self, utterance: Utterance, audio: np.ndarray, early: Early | None) -> list[Piece]:
        """The decode of the whole utterance: the one begun at its last pause (what followed it was silence), or a
        new one."""
        if early is not None:
            try:
                return await early.decode
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the session's end, not the early decode's: speech resumed is handled before the commit
        return await self._transcribe(audio, True, self.settings, self._prompt(utterance, []))

    async def _rest(self, utterance: Utterance, audio: np.ndarray, pieces: list[Piece]) -> list[Piece]:
        """What a final decode left out at its end. Whisper may close a window's text at the last segment it could
        time and leave the rest to a next window, and an utterance is one window: where the VAD heard speech after
        the last segment, that rest is decoded again, after the words before it as the prompt (measured: a 12-s
        utterance lost its last sentence of 20 words)."""
        more: list[Piece] = []
        decoded = int(pieces[-1].end * RATE) if pieces else len(audio)
        for _ in range(2):  # a rest that itself loses its end gets one more try
            assert utterance.end is not None
            if not self._speech_after(utterance.start + decoded + TAIL_MARGIN, utterance.end):
                break
            said = [word for piece in pieces + more for word in piece.text.split()]
            found = await self._transcribe(audio[decoded:], True, self.settings, self._prompt(utterance, said))
            if not found:
                break
            shift = decoded / RATE
            more += [piece._replace(end=piece.end + shift) for piece in found]
            decoded += int(found[-1].end * RATE)
        return more

    def _speech_after(self, begin: int, end: int) -> bool:
        """Whether the session's audio between samples `begin` and `end` holds TAIL_WINDOWS windows of speech in a
        row (the turn's threshold, or server_vad's default one)."""
        threshold = (self._turns.settings if self._turns else TurnSettings()).threshold
        run = 0
        for first, probability in self._windows:
            if first < begin or first + WINDOW > end:
                continue
            run = run + 1 if probability >= threshold else 0
            if run >= TAIL_WINDOWS:
                return True
        return False

    # ---- out

    async def emit(self, event: dict[str, Any]) -> None:
        async with self._emitting:
            await self._emit({"event_id": new_id("event"), **event})

    async def close(self) -> None:
        """Stop decoding: what was committed is still finished (its completed event sent) unless cancelled."""
        if self._partial is not None:
            self._partial.cancel()
        self._cancel_early()
        self._finals.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._final_worker

    def abort(self) -> None:
        if self._partial is not None:
            self._partial.cancel()
        self._cancel_early()
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
