"""The mass-change breaker: notice a source being destroyed and refuse to let "latest" follow it.

Pure: counts in, a decision out. The engine counts what a run would record (vanished
objects, rewritten ones, rewrites that turned compressible content into noise, and
renames to a new extension) and asks `evaluate`. A tripped breaker holds the
disappearances and rewrites: the snapshot keeps the previous versions as current,
while the new content is still stored (held) so that nothing is lost either way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Safety:
    """`[jobs.safety]`: thresholds per run. A fraction is of the objects live before the run;
    fractions only count once at least `min_objects` objects are affected."""

    max_deleted_fraction: float = 0.25
    max_deleted: int = 100_000
    max_rewritten_fraction: float = 0.5
    max_suspicious_fraction: float = 0.1
    min_objects: int = 10
    enabled: bool = True


@dataclass(frozen=True)
class Counts:
    live_before: int
    deleted: int
    rewritten: int
    suspicious: int  # rewrites from compressible to incompressible content, plus renames to a new extension


def evaluate(s: Safety, c: Counts) -> str | None:
    """The reason the breaker trips, or None."""
    if not s.enabled:
        return None
    base = max(c.live_before, 1)
    if c.deleted > s.max_deleted:
        return f"{c.deleted} objects vanished in one run (limit {s.max_deleted})"
    if c.deleted >= s.min_objects and c.deleted / base > s.max_deleted_fraction:
        return (f"{c.deleted} of {c.live_before} objects ({c.deleted / base:.0%}) vanished in one run "
                f"(limit {s.max_deleted_fraction:.0%})")
    if c.suspicious >= s.min_objects and c.suspicious / base > s.max_suspicious_fraction:
        return (f"{c.suspicious} of {c.live_before} objects ({c.suspicious / base:.0%}) were rewritten like ransomware "
                f"does (compressible content became random, or renamed to a new extension; limit {s.max_suspicious_fraction:.0%})")
    if c.rewritten >= s.min_objects and c.rewritten / base > s.max_rewritten_fraction:
        return (f"{c.rewritten} of {c.live_before} objects ({c.rewritten / base:.0%}) were rewritten in one run "
                f"(limit {s.max_rewritten_fraction:.0%})")
    return None


def looks_encrypted(old_chunks, new_chunks) -> bool:
    """Old content compressed well (≤ 90% of its size) and the new content did not compress at all."""
    old_size = sum(r.size for r in old_chunks)
    new_size = sum(r.size for r in new_chunks)
    if old_size < 256 or new_size < 256:
        return False
    old_stored = sum(r.length - 1 for r in old_chunks)
    new_stored = sum(r.length - 1 for r in new_chunks)
    return old_stored <= 0.9 * old_size and new_stored >= new_size
