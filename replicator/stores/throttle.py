"""A bandwidth limit on a store: a token bucket whose rate can depend on the time of day.

`[vault] bandwidth` is "50MiB/s", or a list whose first matching entry wins:
["08:00-18:00 10MiB/s", "50MiB/s"] (local time; a window may wrap past midnight;
"off" means unlimited).
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Callable, Iterator

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)/s\s*$")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})\s+(.+)$")
_UNITS = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2, "GB": 1000**3, "GiB": 1024**3}


def parse_rate(text: str) -> float | None:
    """'50MiB/s' -> bytes per second; 'off' -> None (unlimited)."""
    if text.strip() in ("off", "unlimited"):
        return None
    m = _RATE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate like 50MiB/s, 500KB/s or off; got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


class BandwidthSchedule:
    def __init__(self, rules: list[tuple[int, int, float | None]], default: float | None):
        self.rules, self.default = rules, default

    @classmethod
    def parse(cls, value: str | list[str]) -> "BandwidthSchedule":
        entries = [value] if isinstance(value, str) else list(value)
        rules, default = [], None
        for e in entries:
            m = _WINDOW.match(e)
            if m:
                h1, m1, h2, m2 = (int(x) for x in m.groups()[:4])
                if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
                    raise ValueError(f"bad time window in {e!r}")
                rules.append((h1 * 60 + m1, h2 * 60 + m2, parse_rate(m.group(5))))
            else:
                default = parse_rate(e)
        return cls(rules, default)

    def rate(self, now: datetime | None = None) -> float | None:
        now = now or datetime.now()
        minute = now.hour * 60 + now.minute
        for start, end, rate in self.rules:
            inside = start <= minute < end if start <= end else (minute >= start or minute < end)
            if inside:
                return rate
        return self.default


class TokenBucket:
    """Allows `rate()` bytes per second on average, with one second of burst."""

    def __init__(self, rate: Callable[[], float | None], clock=time.monotonic, sleep=time.sleep):
        self._rate, self._clock, self._sleep = rate, clock, sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()

    def consume(self, n: int) -> None:
        rate = self._rate()
        if rate is None:
            return
        with self._lock:  # callers queue up: the bucket is shared by every transfer thread
            now = self._clock()
            self._tokens = min(rate, self._tokens + (now - self._last) * rate) - n
            self._last = now
            if self._tokens < 0:
                wait = -self._tokens / rate
                self._sleep(wait)
                self._last = self._clock()
                self._tokens = 0.0


class ThrottledStore:
    """Wraps a store so that bytes moved by put and get honour the bucket."""

    def __init__(self, inner, bucket: TokenBucket):
        self.inner, self.bucket = inner, bucket
        self.url = inner.url

    def put(self, name: str, data: bytes) -> None:
        self.bucket.consume(len(data))
        self.inner.put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        data = self.inner.get(name, offset, length)
        self.bucket.consume(len(data))
        return data

    def stat(self, name: str) -> int:
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def list_times(self, prefix: str = ""):
        return self.inner.list_times(prefix)

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self) -> None:
        self.inner.create()
