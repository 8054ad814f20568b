"""Copies on a Dask cluster (issue 9, `[engine] kind = "dask"`).

The coordinator (`replicator run` or the daemon) lists, plans, and alone writes snapshots and
the catalogue, so the vault keeps a single writer of manifests. Workers only stream objects
from the source into vault blobs and hand back the ChunkRefs. A task's blobs are written
(create-only, size checked) before it returns, so the coordinator records an object as
pending only once its content is stored. A worker lost mid-task loses nothing: Dask runs the
task again on another worker, and blobs the lost one wrote are reused by name or left
unreferenced (harmless, FORMAT.md §8).

Workers need the replicator package, the config file at the same path and the key file it
names: secrets never travel over the cluster's network, only keys and refs do.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import astuple

from replicator import batch_copy
from replicator.catalogue import Catalogue
from replicator.config import Config
from replicator.engine import Progress, RunStats
from replicator.errors import ReplicatorError, StoreError
from replicator.sources.base import Source, SourceItem
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.dask")


class SchedulerUnreachable(ReplicatorError):
    """The Dask scheduler named in [engine] does not answer."""


class DaskCopier:
    """Drop-in for the engine's thread-pool copy: the same contract, on a cluster."""

    def __init__(self, cfg: Config):
        if cfg.path is None:
            raise ReplicatorError('[engine] kind = "dask" needs the config read from a file (workers read it too)')
        self.cfg = cfg
        self.config_path = str(cfg.path.resolve())

    def __call__(self, vault: Vault, cat: Catalogue, job: str, source: Source, stats: RunStats, workers: int,
                 progress: Progress | None, stop: threading.Event | None) -> None:
        from distributed import as_completed

        client = connect(self.cfg.engine.scheduler, self.cfg.engine.connect_timeout)
        try:
            threads = sum(client.nthreads().values()) or 1
            limit = max(2, 2 * threads)
            futures = as_completed(loop=client.loop)
            in_flight: dict = {}

            def submit(batch: list[SourceItem]) -> None:
                f = client.submit(batch_copy.copy_batch, self.config_path, job, [astuple(i) for i in batch], pure=False,
                                  retries=2)
                in_flight[f] = batch
                futures.add(f)

            def collect(f) -> None:
                del in_flight[f]
                try:
                    done, checksums = f.result()
                except ReplicatorError:
                    raise
                except Exception as e:  # KilledWorker after Dask's retries, a lost connection, ...
                    raise StoreError(f"a Dask copy task failed: {type(e).__name__}: {e}") from None
                copied = batch_copy.outcomes(done, stats)
                with cat.transaction():
                    cat.add_copied(job, copied)
                    cat.record_checksums(checksums)
                stats.copied += len(copied)
                stats.copied_bytes += sum(item.size for item, _ in copied)
                if progress:
                    progress(stats)

            batch: list[SourceItem] = []
            try:
                for item in cat.to_copy(job):
                    if stop is not None and stop.is_set():
                        break
                    batch.append(item)
                    if len(batch) >= self.cfg.engine.batch:
                        submit(batch)
                        batch = []
                    while len(in_flight) >= limit:
                        collect(next(futures))
                if batch and not (stop is not None and stop.is_set()):
                    submit(batch)
                for f in futures:
                    collect(f)
                    if stop is not None and stop.is_set():
                        break  # the rest: cancelled below, copied again by the next run
            finally:
                for f in list(in_flight):  # stopped or failed: what finished is recorded, the rest is dropped
                    if f.done() and f.status == "finished":
                        try:
                            collect(f)
                        except ReplicatorError:
                            pass
                    else:
                        f.cancel()
        finally:
            client.close()


def connect(address: str, timeout: float = 10.0):
    """A client of the scheduler at `address`; SchedulerUnreachable (exit 2) if it does not answer."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise SchedulerUnreachable(f"cannot reach the Dask scheduler at {address} ([engine] scheduler): "
                                   f"{type(e).__name__}: {e}") from None
