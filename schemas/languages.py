"""Whisper's language codes (what `language` may be), and what a model's catalogue `languages` allows."""

from __future__ import annotations

from schemas import errors

# Whisper's languages: code (ISO 639-1, as `language` takes it) -> the name OpenAI's verbose_json shows.
NAMES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
WHISPER_LANGUAGES: tuple[str, ...] = tuple(NAMES)


def check_language(language: str | None, model_id: str, model_languages: list[str]) -> str | None:
    """The language to decode in (None: detect); 400 for a code Whisper does not know, or one the model lacks."""
    if not language:
        return None
    code = language.strip().lower()
    if code not in WHISPER_LANGUAGES:
        raise errors.AsrError(
            errors.BAD_REQUEST,
            # Cut short: a client's megabyte-long "language" is not echoed back whole.
            f"language {language[:40]!r} is not one of Whisper's language codes (ISO 639-1): "
            f"{', '.join(WHISPER_LANGUAGES)}",
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


def language_name(code: str) -> str:
    """The language's name as OpenAI's verbose_json gives it ("english"); an unknown code as it is."""
    return NAMES.get(code, code)
