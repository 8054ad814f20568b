"""The retention policy: which snapshots to keep, as a pure function of their (provider) times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    """`[jobs.retention]`. Without any keep_* rule a job keeps everything."""

    keep_within: timedelta | None = None
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    min_age: timedelta = timedelta(days=30)

    @property
    def active(self) -> bool:
        return bool(self.keep_within or self.keep_daily or self.keep_weekly or self.keep_monthly)


def select_kept(times: list[tuple[int, datetime]], policy: Policy, now: datetime) -> set[int]:
    """Pure: the seqs the policy keeps, given (seq, provider time) oldest first."""
    if not times:
        return set()
    if not policy.active:
        return {s for s, _ in times}
    newest = times[-1][1]
    kept = {times[-1][0]}
    kept |= {s for s, t in times if now - t < policy.min_age}
    if policy.keep_within:
        kept |= {s for s, t in times if newest - t <= policy.keep_within}
    for count, bucket in ((policy.keep_daily, lambda t: t.date()),
                          (policy.keep_weekly, lambda t: t.isocalendar()[:2]),
                          (policy.keep_monthly, lambda t: (t.year, t.month))):
        seen: list = []
        for s, t in reversed(times):  # newest first: the newest snapshot of each bucket
            b = bucket(t)
            if b not in seen:
                if len(seen) >= count:
                    break
                seen.append(b)
                kept.add(s)
    return kept


def monotonic(times: list[tuple[int, datetime]]) -> list[tuple[int, datetime]]:
    out, high = [], None
    for s, t in times:
        high = t if high is None or t > high else high
        out.append((s, high))
    return out
