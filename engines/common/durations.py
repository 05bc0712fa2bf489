"""Durations as operators write them: `45s`, `30m`, `12h`, `90d`."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`90d` -> 90 days; anything else is a ValueError naming the accepted forms."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration: use a number and s, m, h or d, e.g. 90d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration: `90d`, `12h`, `30m` or `45s`, the largest exact unit."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
