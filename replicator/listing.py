"""Listing a job's source into the catalogue: the first step of a run.

A source that lists key ranges in order (S3) is listed as `list_partitions` ranges in
parallel, each batch committed with how far its range got, so a run killed while listing a
huge bucket resumes every range where it stopped; `[jobs.inventory]` lists from an S3
Inventory report instead; any other source is listed whole (issue 9, docs/SCALING.md).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.sources.base import Source, SourceItem
from replicator.units import format_time_precise

if TYPE_CHECKING:
    from replicator.engine import Progress, RunStats

log = logging.getLogger("replicator.engine")

LIST_BATCH = 2000  # listed keys committed at a time


def list_source(cat: Catalogue, job: JobConfig, source: Source, stats: "RunStats", started: datetime,
                progress: "Progress | None", stop: threading.Event | None) -> datetime:
    """List the source into the catalogue; returns the snapshot's time (when the listing began).

    A source that lists key ranges in order (S3) is listed as `job.list_partitions` ranges in
    parallel, each batch committed with how far its range got: a run killed while listing a huge
    bucket resumes every range where it stopped, and keeps the time the listing began."""
    inventory = getattr(source, "inventory", None)
    if inventory is not None:
        head = cat.head(job.name)
        last = cat.snapshot_started(job.name, head[0]) if head else None
        report, why = inventory.usable(_parse_time(last) if last else None)
        if report is not None:
            cat.start_listing(job.name)
            _list_into(cat, job.name, inventory.items(report), stats, progress, stop)
            stats.started = format_time_precise(report.time)
            log.info("job %s: listed from the inventory report of %s", job.name, stats.started)
            return report.time
        log.info("job %s: %s; listing the bucket instead", job.name, why)
    if not getattr(source, "resumable", False):
        cat.start_listing(job.name)
        _list_into(cat, job.name, source.list(), stats, progress, stop)
        return started
    state = cat.listing_progress(job.name)
    settings = {"source": job.source, "include": list(job.include), "exclude": list(job.exclude),
                "partitions": job.list_partitions}
    if state is not None and state.get("settings") != settings:
        log.info("job %s: the source or its filters changed since the listing was interrupted: listing afresh", job.name)
        state = None
    if state is None:
        ranges = source.key_ranges(job.list_partitions)
        state = {"started": format_time_precise(started), "settings": settings,
                 "ranges": [[lo, hi, None, False] for lo, hi in ranges]}
        cat.start_listing(job.name, state)
    else:
        stats.listed, stats.started = cat.listing_count(job.name), state["started"]
        log.info("job %s: resuming the listing begun at %s (%d keys listed then)", job.name, state["started"], stats.listed)
    lock = threading.Lock()
    halt = threading.Event()  # one range failed: the others stop at their next batch

    def list_range(i: int) -> None:
        try:
            _list_range(i)
        except BaseException:
            halt.set()
            raise

    def _list_range(i: int) -> None:
        lo, hi, after, _ = state["ranges"][i]
        batch: list[SourceItem] = []

        def commit(done: bool) -> None:
            with lock:
                if batch:
                    state["ranges"][i][2] = batch[-1].key
                state["ranges"][i][3] = done
                cat.add_listing(job.name, batch, state)
                stats.listed += len(batch)
            batch.clear()
            if progress:
                progress(stats)

        for item in source.list_range(lo, hi, after):
            batch.append(item)
            if len(batch) >= LIST_BATCH:
                commit(False)
                if halt.is_set() or (stop is not None and stop.is_set()):
                    return
        commit(True)

    todo = [i for i, r in enumerate(state["ranges"]) if not r[3]]
    with ThreadPoolExecutor(max(1, len(todo)), thread_name_prefix="list") as pool:
        for f in [pool.submit(list_range, i) for i in todo]:
            f.result()  # the first failure is the run's error; what was listed stays for the next run
    if stop is None or not stop.is_set():
        cat.end_listing(job.name)
    return _parse_time(state["started"])


def _parse_time(text: str) -> datetime:
    """A time as format_time_precise writes it (older snapshots: whole seconds)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def _list_into(cat: Catalogue, job: str, items, stats: "RunStats", progress: "Progress | None",
               stop: threading.Event | None) -> None:
    batch: list[SourceItem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= LIST_BATCH:
            cat.add_listing(job, batch)
            stats.listed += len(batch)
            batch = []
            if progress:
                progress(stats)
            if stop is not None and stop.is_set():
                return
    cat.add_listing(job, batch)
    stats.listed += len(batch)
