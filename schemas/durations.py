"""keep_alive values: seconds as a number, or a duration string ("90s", "5m", "1h30m"); 0 = stop right
after the request, any negative value = never stop."""

from __future__ import annotations

import math
import re

NEVER = -1.0
MAX_KEEP_ALIVE_S = 7 * 24 * 3600.0  # a week; longer is -1 (never), said outright
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | int | str | None) -> float | None:
    """Seconds (NEVER for negative values), None for None; ValueError with the accepted forms otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return _bounded(float(value), value)
    text = value.strip().lower()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _bounded(number, value)
    if text.startswith("-"):
        return NEVER
    if not text or _PART.sub("", text):
        raise ValueError(f"keep_alive {value!r} is not a duration: use seconds, '30s', '5m', '1h', 0 or -1")
    return _bounded(sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text)), value)


def _bounded(seconds: float, given: object) -> float:
    if math.isnan(seconds) or (math.isinf(seconds) and seconds > 0):
        raise ValueError(
            f"keep_alive {given!r} is not a number of seconds: use 0 to {MAX_KEEP_ALIVE_S:g}, or -1 for never"
        )
    if seconds < 0:
        return NEVER
    if seconds > MAX_KEEP_ALIVE_S:
        raise ValueError(f"keep_alive {given!r} is longer than {MAX_KEEP_ALIVE_S:g} s (a week): use -1 for never")
    return seconds
