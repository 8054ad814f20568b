"""Deep-verify coverage: which referenced blobs were read in full, and when (issue 10).

`verify --deep --sample PCT` reads the least recently verified blobs first (never read ones
first, then the oldest), so that ceil(100/PCT) runs read every blob once. The record is the
catalogue's `coverage` table (blob -> first seen, last read in full): it survives restarts and
is only a cache of *when* something was proven, never a reason to trust the vault (a new host
starts with nothing verified, and its sample is random until it has a catalogue).

"Coverage" is the fraction of referenced blobs read in full within the last WINDOW_DAYS; the
"oldest unverified byte" is the blob whose last full read (or, never read, its first sighting
or write) is longest ago.
"""

from __future__ import annotations

import math
import time

from replicator.catalogue import Catalogue
from replicator.units import format_age

WINDOW_DAYS = 30


def sample_size(eligible: int, pct: float) -> int:
    """Blobs to read this run: rounded up, so ceil(100/pct) runs cover everything."""
    return min(eligible, max(1, math.ceil(eligible * pct / 100))) if eligible else 0


def summary(cat: Catalogue, now: float | None = None, window_days: float = WINDOW_DAYS) -> dict | None:
    """Coverage as recorded in the catalogue (None before any verify tracked blobs)."""
    now = time.time() if now is None else now
    total, recent, never, oldest = cat.coverage_summary(now - window_days * 86400)
    if not total:
        return None
    return {"window_days": window_days, "blobs": total, "read_in_window": recent,
            "ratio": round(recent / total, 6), "never_read": never,
            "oldest_unverified_since": oldest,
            "oldest_unverified_age_seconds": None if oldest is None else max(0, round(now - oldest))}


def human(s: dict | None) -> str:
    if not s:
        return "deep-verify coverage: unknown (no verify has tracked blobs on this host)"
    age = s["oldest_unverified_age_seconds"]
    return (f"deep-verify coverage: {s['ratio']:.0%} of {s['blobs']} referenced blobs read in the last "
            f"{s['window_days']:g} days ({s['never_read']} never read); oldest unverified blob: "
            f"{format_age(age)} old")


def observe(cat: Catalogue) -> None:
    """Set the coverage metrics from the catalogue (the daemon calls this with its other catalogue metrics)."""
    from replicator import metrics

    s = summary(cat)
    if s is None:
        return
    metrics.VERIFY_COVERAGE.set(s["ratio"])
    if s["oldest_unverified_since"] is not None:
        metrics.VERIFY_OLDEST_UNVERIFIED.set(s["oldest_unverified_since"])


