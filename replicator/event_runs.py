"""Event runs (issue 9): replicate the keys that bucket events named, between scheduled runs.

An event only names a key: the source is asked for each key's current state, what differs
from the head is copied, keys that are gone are tombstoned, and a delta snapshot is written
through the engine's own copy and snapshot steps; every other key is untouched.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from replicator.breaker import looks_encrypted
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import Progress, RunStats, _copy, _write_snapshot, sync_job
from replicator.sources.base import Source
from replicator.units import format_time_precise
from replicator.vault.vault import Vault


@dataclass
class EventRunStats(RunStats):
    keys: int = 0  # distinct keys the events named
    snapshot_time: float | None = None  # unix time the snapshot was written (None: nothing to record)
    changed_keys: tuple[str, ...] = ()  # keys the snapshot recorded (changed or tombstoned)
    newly_tripped: bool = False  # this run tripped a breaker that was not tripped before


def run_events(vault: Vault, cat: Catalogue, job: JobConfig, source: Source, keys, *, workers: int = 8,
               progress: Progress | None = None, stop: threading.Event | None = None) -> EventRunStats:
    """An event run: only the keys events named. The source is asked for each key's current state
    (so a duplicated, reordered or stale event changes nothing), what differs from the head is
    copied, keys that are gone are tombstoned, and a delta snapshot is written; every other key is
    untouched. Nothing changed: no snapshot. Deletions and rewrites go through the same breaker as a
    full run's, judged together with those earlier event runs recorded since the last full run."""
    stats = EventRunStats(job=job.name)
    t0 = time.monotonic()
    started = datetime.now(timezone.utc)
    stats.started = format_time_precise(started)
    keys = sorted(set(keys))
    stats.keys = len(keys)
    if not keys:
        return stats
    sync_job(vault, cat, job.name)
    if cat.listing_progress(job.name) is not None:
        # A partial listing would replace the rows an interrupted full listing kept for its resume.
        stats.errors.append("a full listing of this job was interrupted; events wait until the next scheduled run "
                            "resumes and finishes it")
        stats.seconds = time.monotonic() - t0
        return stats
    cat.start_partial_listing(job.name, keys)
    items = list(source.stat(keys))
    cat.add_listing(job.name, items)
    stats.listed = len(items)
    stats.to_copy, stats.to_copy_bytes = cat.count_to_copy(job.name)
    _copy(vault, cat, job.name, source, stats, workers, progress, stop)
    if stop is not None and stop.is_set():
        stats.errors.append("stopped before the snapshot was written; the events stay in the queue")
        stats.seconds = time.monotonic() - t0
        return stats
    if cat.prepare_delta(job.name) == 0:  # duplicates, or changes a full run already recorded
        with cat.transaction():
            cat.finish_run(job.name)
        stats.unchanged = stats.listed
        stats.seconds = time.monotonic() - t0
        return stats
    # The breaker judges what a full run would see: the net change since the last full run, per key.
    carry_key = f"events:carry:{job.name}"
    live_before = json.loads(cat.meta(carry_key) or "null") or {"live": cat.live_count(job.name)}
    # (renames count as suspicious now; _check_breaker adds this run's encrypted-looking rewrites itself)
    encrypted = [new.key for old, new in cat.rewrites(job.name) if looks_encrypted(old.chunks, new.chunks)]
    cat.prepare_event_changes(job.name, cat.renamed_keys())
    cat.set_carry(live_before["live"])
    was_tripped, approved = cat.meta(f"breaker:{job.name}"), cat.meta(f"approve:{job.name}")
    changed_keys: list[str] = []

    def bookkeeping() -> None:
        # Until the next full run: the net changes add up (held ones too), an earlier trip stands and
        # an operator's approval stays for the full run (which clears all three). Committed with the head.
        changed_keys.extend(e.key for e in cat.delta())
        cat.commit_event_changes(job.name, encrypted)
        cat.set_meta(carry_key, json.dumps(live_before))
        if was_tripped and not stats.breaker:
            cat.set_meta(f"breaker:{job.name}", was_tripped)
        if approved:
            cat.set_meta(f"approve:{job.name}", approved)

    try:
        _write_snapshot(vault, cat, job, started, stats, bookkeeping)
    finally:
        cat.carry = None
    stats.snapshot_time = time.time()
    stats.changed_keys = tuple(changed_keys)
    stats.newly_tripped = bool(stats.breaker and not was_tripped)
    stats.seconds = time.monotonic() - t0
    return stats
