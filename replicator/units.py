"""Parsing of the small languages users type: times, durations, glob patterns."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """`90m`, `3d`, `30s` -> timedelta. Raises ValueError with a readable message."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a number and one of s m h d w (like 15m), got {text!r}")
    try:
        return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    except OverflowError:
        raise ValueError(f"duration {text.strip()!r} is too long") from None


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 or a relative form meaning 'that long ago' -> aware UTC datetime."""
    now = now or datetime.now(timezone.utc)
    if _DURATION.match(text):
        try:
            return now - parse_duration(text)
        except OverflowError:
            raise ValueError(f"{text.strip()!r} ago is before year 1") from None
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected ISO 8601 (2026-11-29T10:00:00Z) or an age like 90m or 3d, got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    try:
        return t.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00
        raise ValueError(f"time {text!r} is out of range") from None


def format_time(t: datetime) -> str:
    """UTC, second precision, with a Z: the one way times are shown."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time_precise(t: datetime) -> str:
    """UTC with microseconds: snapshot times, so that `--at <a snapshot's time>` selects exactly it."""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_age(seconds: float | None) -> str:
    """90061 -> '1d': the largest whole unit, for status columns."""
    if seconds is None:
        return "-"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds // n:.0f}{unit}"
    return f"{seconds:.0f}s"


def glob_to_regex(pattern: str) -> re.Pattern:
    """A key glob: `**` crosses `/`, `*` and `?` do not, `[...]` is a class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                raise ValueError(f"unclosed '[' in pattern {pattern!r}")
            body = pattern[i + 1 : j]
            neg = body[:1] in ("!", "^")
            # every member literal but a lone `-` (a range): `[`, `--`, `&&`, `~~`, `||` would be regex set syntax
            members = body[neg:]
            members = "".join("-" if c == "-" and "-" not in (members[k - 1:k], members[k + 1:k + 2]) else re.escape(c)
                              for k, c in enumerate(members))
            out.append("[" + ("^" if neg else "") + members + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as e:  # a bad class: [z-a], []
        raise ValueError(f"bad pattern {pattern!r}: {e.msg}") from None


class KeyFilter:
    """include/exclude globs over source keys; a key passes if it matches an include and no exclude."""

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]):
        self._inc = [glob_to_regex(p) for p in include]
        self._exc = [glob_to_regex(p) for p in exclude]

    def __call__(self, key: str) -> bool:
        return any(r.match(key) for r in self._inc) and not any(r.match(key) for r in self._exc)
