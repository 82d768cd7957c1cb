"""OpenAI's Realtime transcription protocol, in its current shape (session.update with session.type
"transcription", audio.input.*) and the beta's (transcription_session.update, input_audio_*): a session's settings
read from either, and written back in the shape the client spoke."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from actors.live.audio_in import FORMATS, NAMES, SOURCE_RATE, Format
from actors.live.vad import TurnSettings
from schemas import live
from schemas.live import Shape

TURN_TYPES = ("server_vad", "semantic_vad")


class ProtocolError(ValueError):
    """A client event the session cannot take: answered with an `error` event; the session stays open."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class Settings:
    model: str = ""  # the transcription model asked for ("" or an OpenAI name: the default model)
    language: str | None = None
    prompt: str | None = None
    format: Format = "pcm16"
    turn: TurnSettings | None = field(default_factory=TurnSettings)  # None: the client commits
    turn_type: str = "server_vad"
    include: list[str] = field(default_factory=list)

    def apply(self, session: dict[str, Any], shape: Shape) -> None:
        """A session.update's (or transcription_session.update's) `session` object, validated before any of it
        is applied: a bad one changes nothing."""
        if not isinstance(session, dict):
            raise ProtocolError(live.INVALID_EVENT, "session must be an object", "session")
        new = Settings(**vars(self))
        if shape == "ga":
            kind = session.get("type", "transcription")
            if kind != "transcription":
                raise ProtocolError(
                    live.INVALID_EVENT,
                    f"this server transcribes only: session.type must be 'transcription', not {quoted(kind)}",
                    "session.type",
                )
            audio_in = _object(_object(session, "audio", "session.audio"), "input", "session.audio.input")
            if "format" in audio_in:
                new.format = _ga_format(audio_in["format"])
            transcription = audio_in.get("transcription")
            turn = audio_in.get("turn_detection", ...)
            where = "session.audio.input"
        else:
            if "input_audio_format" in session:
                name = session["input_audio_format"]
                if not isinstance(name, str) or name not in SOURCE_RATE:
                    raise ProtocolError(
                        live.INVALID_EVENT,
                        f"input_audio_format must be one of {', '.join(SOURCE_RATE)}, not {quoted(name)}",
                        "session.input_audio_format",
                    )
                new.format = name
            transcription = session.get("input_audio_transcription")
            turn = session.get("turn_detection", ...)
            where = "session"
        if transcription is not None:
            if not isinstance(transcription, dict):
                raise ProtocolError(live.INVALID_EVENT, "transcription must be an object", f"{where}.transcription")
            new.model = _text(transcription, "model", f"{where}.transcription") or new.model
            new.language = _text(transcription, "language", f"{where}.transcription")
            new.prompt = _text(transcription, "prompt", f"{where}.transcription")
        if turn is not ...:
            new.turn, new.turn_type = _turn(turn, f"{where}.turn_detection")
        if "include" in session:
            include = session["include"]
            if include is not None and (not isinstance(include, list) or not all(isinstance(x, str) for x in include)):
                raise ProtocolError(live.INVALID_EVENT, "include must be a list of strings", "session.include")
            new.include = list(include or [])
        vars(self).update(vars(new))

    def render(self, session_id: str, shape: Shape, model: str) -> dict[str, Any]:
        """The session object of session.created / session.updated (or transcription_session.*)."""
        transcription = {"model": model, "language": self.language, "prompt": self.prompt or ""}
        turn: dict[str, Any] | None = None
        if self.turn is not None:
            turn = {
                "type": self.turn_type,
                "threshold": self.turn.threshold,
                "prefix_padding_ms": self.turn.prefix_padding_ms,
                "silence_duration_ms": self.turn.silence_duration_ms,
            }
            if self.turn_type == "semantic_vad":
                # Said where the client looks: semantic_vad is accepted and run as server_vad.
                turn["x_asrpro_note"] = "semantic_vad is served as server_vad (voice activity with these settings)"
        common = {"id": session_id, "object": "realtime.transcription_session", "include": self.include}
        if shape == "beta":
            return {
                **common,
                "input_audio_format": self.format,
                "input_audio_transcription": transcription,
                "turn_detection": turn,
                "input_audio_noise_reduction": None,
                "modalities": ["text"],
            }
        audio_format: dict[str, Any] = {"type": NAMES[self.format]}
        if self.format == "pcm16":
            audio_format["rate"] = SOURCE_RATE["pcm16"]
        return {
            **common,
            "type": "transcription",
            "expires_at": int(time.time()) + 3600,
            "audio": {
                "input": {
                    "format": audio_format,
                    "transcription": transcription,
                    "turn_detection": turn,
                    "noise_reduction": None,
                }
            },
        }


def session_event(kind: str, shape: Shape, session: dict[str, Any]) -> dict[str, Any]:
    """session.created / session.updated, or the beta's transcription_session.* names."""
    prefix = "transcription_session" if shape == "beta" else "session"
    return {"type": f"{prefix}.{kind}", "session": session}


def _object(parent: dict[str, Any], key: str, param: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ProtocolError(live.INVALID_EVENT, f"{param} must be an object", param)
    return value


def quoted(value: Any, limit: int = 80) -> str:
    """A client's value as an error message quotes it: cut short (an 8-MB string echoed back would not fit a
    message on the bus)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _text(parent: dict[str, Any], key: str, where: str) -> str | None:
    """A string setting (empty or null: none)."""
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(live.INVALID_EVENT, f"{key} must be a string, not {quoted(value)}", f"{where}.{key}")
    return value or None


def _number(value: Any, name: str, low: float, high: float, param: str) -> float:
    """A finite number from `low` to `high` (not a boolean, not a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        message = f"turn_detection.{name} must be a number from {low:g} to {high:g}, not {quoted(value)}"
        raise ProtocolError(live.INVALID_EVENT, message, f"{param}.{name}")
    return value


def _ga_format(value: Any) -> Format:
    param = "session.audio.input.format"
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in FORMATS:
        raise ProtocolError(
            live.INVALID_EVENT, f"format.type must be one of {', '.join(FORMATS)}, not {quoted(value)}", param
        )
    rate = value.get("rate")
    if FORMATS[kind] == "pcm16" and rate not in (None, SOURCE_RATE["pcm16"]):
        message = f"audio/pcm is taken at 24000 Hz only, not {quoted(rate)}"
        raise ProtocolError(live.INVALID_EVENT, message, f"{param}.rate")
    return FORMATS[kind]


def _turn(value: Any, param: str) -> tuple[TurnSettings | None, str]:
    if value is None:
        return None, ""
    if not isinstance(value, dict):
        raise ProtocolError(live.INVALID_EVENT, "turn_detection must be an object or null", param)
    kind = value.get("type", "server_vad")
    if not isinstance(kind, str) or kind not in TURN_TYPES:
        raise ProtocolError(
            live.INVALID_EVENT,
            f"turn_detection.type must be one of {', '.join(TURN_TYPES)}, not {quoted(kind)}",
            f"{param}.type",
        )
    defaults = TurnSettings()

    def number(name: str, low: float, high: float) -> float:
        return _number(value.get(name, getattr(defaults, name)), name, low, high, param)

    settings = TurnSettings(
        threshold=float(number("threshold", 0.0, 1.0)),
        prefix_padding_ms=int(number("prefix_padding_ms", 0, 10_000)),
        silence_duration_ms=int(number("silence_duration_ms", 0, 10_000)),
    )
    return settings, kind
