"""A bandwidth limit on a store: a token bucket whose rate can depend on the time of day.

`[vault] bandwidth` is "50MiB/s", or a list whose first matching entry wins:
["08:00-18:00 10MiB/s", "50MiB/s"] (local time; a window may wrap past midnight;
"off" means unlimited). A rate below MIN_RATE and an empty window ("08:00-08:00") are refused:
the first would stall every transfer for hours, the second would never match.

The limit belongs to one process: worker processes would each get the whole of it, so runs and
restores do not use them while a limit is set (runs._copier, restore_processes). On a graceful
stop the daemon releases the bucket (`release`), so the transfers in flight finish at full speed
within systemd's TimeoutStopSec instead of queueing behind the limit.
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
MIN_RATE = 1024  # bytes per second: below this one 4 MiB chunk takes over an hour


def parse_rate(text: str) -> float | None:
    """'50MiB/s' -> bytes per second; 'off' -> None (unlimited)."""
    if text.strip() in ("off", "unlimited"):
        return None
    m = _RATE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate like 50MiB/s, 500KB/s or off; got {text!r}")
    rate = float(m.group(1)) * _UNITS[m.group(2)]
    if rate < MIN_RATE:
        raise ValueError(f"{text.strip()!r} is below the minimum of 1KiB/s (use \"off\" for no limit)")
    return rate


def is_limited(value: str | list[str] | tuple[str, ...] | None) -> bool:
    """Whether a `[vault] bandwidth` setting limits anything at some time of day."""
    if not value:
        return False
    schedule = BandwidthSchedule.parse(value)
    return schedule.default is not None or any(rate is not None for _, _, rate in schedule.rules)


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
                start, end = h1 * 60 + m1, h2 * 60 + m2
                if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
                    raise ValueError(f"bad time window in {e!r}")
                if start == end:
                    raise ValueError(f"the window in {e!r} is empty (it ends where it starts); "
                                     "for all day, give the rate alone")
                rules.append((start, end, parse_rate(m.group(5))))
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

    def __init__(self, rate: Callable[[], float | None], clock=time.monotonic, sleep=None):
        self._released = threading.Event()
        self._rate, self._clock, self._sleep = rate, clock, sleep or self._released.wait
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()

    def release(self) -> None:
        """No limit from now on, also for transfers waiting now (a graceful stop)."""
        self._released.set()

    def consume(self, n: int) -> None:
        rate = self._rate()
        if rate is None or self._released.is_set():
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


def release(store) -> None:
    """Lift the bandwidth limit of `store` (or of a store it wraps), if it has one."""
    while store is not None:
        if isinstance(store, ThrottledStore):
            store.bucket.release()
        store = getattr(store, "inner", None)
