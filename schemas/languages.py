"""Whisper's language codes (what `language` may be), and what a model's catalogue `languages` allows."""

from __future__ import annotations

from schemas import errors

_CODES = """
af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy
id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru
sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue
"""
WHISPER_LANGUAGES: tuple[str, ...] = tuple(_CODES.split())


def check_language(language: str | None, model_id: str, model_languages: list[str]) -> str | None:
    """The language to decode in (None: detect); 400 for a code Whisper does not know, or one the model lacks."""
    if not language:
        return None
    code = language.strip().lower()
    if code not in WHISPER_LANGUAGES:
        raise errors.AsrError(
            errors.BAD_REQUEST,
            f"language {language!r} is not one of Whisper's language codes (ISO 639-1): {', '.join(WHISPER_LANGUAGES)}",
            kind=errors.ErrorCode.INVALID_LANGUAGE,
            param="language",
        )
    if model_languages and code not in model_languages:
        raise errors.AsrError(
            errors.BAD_REQUEST,
            f"{model_id} knows only {', '.join(model_languages)}, not {code}: use a multilingual model",
            kind=errors.ErrorCode.INVALID_LANGUAGE,
            param="language",
        )
    return code


def multilingual(model_languages: list[str]) -> bool:
    """Whether a model can translate: no language list (all of Whisper's) or more than English alone."""
    return model_languages != ["en"]
