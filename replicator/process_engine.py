"""Many small files between local disks, copied by several processes (issue 7).

Between a local directory and a vault on a local disk nothing is waited on: copying tens of
thousands of small files is bound by the interpreter, which runs one thread at a time. So when a
run has many objects to copy, batches of them go to worker processes, each running
batch_copy.copy_batch as a Dask worker would; this process lists, hands out batches, records
what comes back and writes the snapshot. Crash safety holds as for the Dask engine: a batch's
blobs are written before its refs come back, and only then are its objects recorded.

With a vault bandwidth limit (`[vault] bandwidth`) there are no workers: each would open its own
throttled vault and get the whole limit; workers exist for local-disk speed, which a limit forgoes.

Workers (worker_pool.py) ignore SIGINT and SIGTERM: a stop is this process's to decide, and it
waits for the batches in flight (a few hundred small objects each) and records them. Chunks the
catalogue already records are not stored again (each worker reads it, read-only); a chunk that
two batches of one run both meet is stored by each.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool

from replicator import batch_copy
from replicator.catalogue import Catalogue
from replicator.config import Config
from replicator.engine import Progress, RunStats, _copy
from replicator.errors import StoreError
from replicator.sources.base import Source, SourceItem
from replicator.stores.base import is_local
from replicator.stores.throttle import is_limited
from replicator.vault.format import ChunkRef
from replicator.vault.vault import Vault
from replicator.worker_pool import BATCH, start_pool, workers_for

log = logging.getLogger("replicator.processes")

RECORD_EVERY = 2048  # objects recorded per catalogue transaction (or what a second brought)


class ProcessCopier:
    """The engine's copier for a local source and a local vault; threads (engine._copy) otherwise,
    and for runs with few objects to copy unless `[engine] processes` asks for workers anyway."""

    def __init__(self, cfg: Config):
        self.config_path = str(cfg.path.resolve())
        self.processes = cfg.engine.processes  # None: worker_pool.workers_for decides at each run
        self.limited = is_limited(cfg.vault.bandwidth)  # a limit per process would multiply

    def workers_for(self, vault: Vault, source: Source, stats: RunStats) -> int:
        """How many worker processes this run gets (0: copied by threads here)."""
        if self.limited or not (getattr(source, "local", False) and is_local(vault.store)):
            return 0
        return workers_for(self.processes, lambda: stats.to_copy)

    def __call__(self, vault: Vault, cat: Catalogue, job: str, source: Source, stats: RunStats, workers: int,
                 progress: Progress | None, stop: threading.Event | None) -> None:
        n = self.workers_for(vault, source, stats)
        if n == 0:
            return _copy(vault, cat, job, source, stats, workers, progress, stop)
        pool = start_pool(n)
        if pool is None:
            return _copy(vault, cat, job, source, stats, workers, progress, stop)
        log.info("job %s: %d objects to copy by %d worker processes", job, stats.to_copy, n)
        in_flight: dict = {}
        ready: list[tuple[SourceItem, list[ChunkRef]]] = []  # copied, not yet recorded
        checksums: list = []
        last_record = time.monotonic()

        def take(f) -> None:
            """A finished batch: its objects wait to be recorded (problems are reported)."""
            del in_flight[f]
            try:
                done, sums = f.result()
            except BrokenProcessPool:
                raise StoreError("a copy process died (killed, or out of memory); the next run resumes") from None
            ready.extend(batch_copy.outcomes(done, stats, checked=False))  # refs our own workers made
            checksums.extend(sums)

        def record() -> None:
            """Record what is ready as pending, in one transaction (some thousands of objects a second)."""
            nonlocal last_record
            with cat.transaction():
                cat.add_copied(job, ready)
                cat.record_checksums(checksums)
            stats.copied += len(ready)
            stats.copied_bytes += sum(item.size for item, _ in ready)
            ready.clear()
            checksums.clear()
            last_record = time.monotonic()
            if progress:
                progress(stats)

        def settle(block: bool) -> None:
            """Take the batches that finished (waiting for one if `block`), and record now and then."""
            for f in wait(in_flight, timeout=None if block else 0, return_when=FIRST_COMPLETED).done:
                take(f)
            if len(ready) >= RECORD_EVERY or time.monotonic() - last_record > 1.0:
                record()

        def submit(batch: list[SourceItem]) -> None:
            fields = [(i.key, i.size, i.mtime, i.etag, i.version) for i in batch]  # SourceItem's field order
            in_flight[pool.submit(batch_copy.copy_batch, self.config_path, job, fields, str(cat.path))] = batch

        try:
            batch: list[SourceItem] = []
            for item in cat.to_copy(job):
                if stop is not None and stop.is_set():
                    batch = []
                    break
                batch.append(item)
                if len(batch) >= BATCH:
                    submit(batch)
                    batch = []
                    settle(block=len(in_flight) >= 2 * n)
            if batch:
                submit(batch)
            while in_flight:
                settle(block=True)
        finally:
            # Stopped or failed: batches that finished are recorded (a rerun will not copy them
            # again), the ones not started are dropped, and the workers go.
            for f in list(in_flight):
                f.cancel()
            for f in list(in_flight):
                if f.cancelled():
                    del in_flight[f]
                    continue
                try:
                    wait([f])
                    take(f)
                except Exception:  # the run's own error, if any, is the one raised
                    in_flight.pop(f, None)
            try:
                if ready:
                    record()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
