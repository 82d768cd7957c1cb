"""keep_alive values: seconds as a number, or a duration string ("90s", "5m", "1h30m"); 0 = stop right
after the request, any negative value = never stop."""

from __future__ import annotations

import re

NEVER = -1.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | int | str | None) -> float | None:
    """Seconds (NEVER for negative values), None for None; ValueError with the accepted forms otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return NEVER if value < 0 else float(value)
    text = value.strip().lower()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return NEVER if number < 0 else number
    if text.startswith("-"):
        return NEVER
    if not text or _PART.sub("", text):
        raise ValueError(f"keep_alive {value!r} is not a duration: use seconds, '30s', '5m', '1h', 0 or -1")
    return sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
