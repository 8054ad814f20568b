"""Write a job's objects as they were at a point in time to any target."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from replicator.errors import ReplicatorError
from replicator.futures import INLINE_BELOW, run_here
from replicator.history import History
from replicator.restore_processes import restore_in_processes
from replicator.stores.base import is_local
from replicator.targets import LocalTarget, Unrepresentable
from replicator.vault.manifest import Entry
from replicator.vault.packs import PackReader
from replicator.vault.vault import Vault
from replicator.worker_pool import workers_for



@dataclass
class RestoreResult:
    job: str
    snapshot: int
    time: str
    objects: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # keys the target cannot represent
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    kind: str = "objects"  # git/svn: `objects` counts repositories rebuilt


def restore(vault: Vault, job: str, target, at: str | None, prefix: str, dry_run: bool = False,
            workers: int | None = None, progress: Callable[[RestoreResult], None] | None = None,
            reopen: tuple[str, str | None] | None = None, processes: int | None = None) -> RestoreResult:
    """`reopen` (the config file's path, and the key file's if not the config's) lets worker
    processes open this vault themselves: from a local vault into a local directory, a restore of
    many objects is then written by them (restore_processes.py). `processes` as [engine]
    processes (worker_pool.workers_for): None, one per CPU from 2,000 objects on; N, always N; 0, never."""
    history = History.for_job(vault, job)
    if not history.seqs:
        raise ReplicatorError(f"the vault holds no snapshot of job {job!r}")
    root = history.select(at)
    if root.kind in ("git", "svn"):
        from replicator.repos import restore_repositories

        return restore_repositories(vault, history, root, target, prefix, dry_run, progress)
    result = RestoreResult(job=job, snapshot=root.seq, time=root.started, dry_run=dry_run)
    with history.state(root.seq) as state:
        if dry_run:
            result.objects, result.bytes = state.count(prefix)
            return result

        local = isinstance(target, LocalTarget) and is_local(vault.store)
        n = workers_for(processes, lambda: state.count(prefix)[0]) if local and reopen and workers is None else 0
        if n and not target.folds():
            settle = lambda entry, outcome, message: _count(entry, outcome, message, result, progress)  # noqa: E731
            if restore_in_processes(reopen, target.url, state.iter(prefix), n, settle):
                return result
        packs = PackReader(vault, state.iter(prefix))
        # From a vault on a local disk to a local directory nothing is waited on: a thread per core
        # decrypts large objects, and a small one is written by this thread (threads contending for
        # the interpreter would only slow it down). Anything remote: 8 requests in flight.
        workers = workers or ((os.cpu_count() or 1) if local else 8)
        inline_below = INLINE_BELOW if local else 0

        def one(entry: Entry) -> None:
            target.write(entry.key, (packs.read(ref) for ref in entry.chunks))

        with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
            window: list = []
            for entry in state.iter(prefix):
                window.append((entry, run_here(one, entry) if entry.size < inline_below else pool.submit(one, entry)))
                if len(window) >= workers * 2:
                    _settle(window.pop(0), result, progress)
            for w in window:
                _settle(w, result, progress)
    return result


def _settle(pair, result: RestoreResult, progress) -> None:
    entry, fut = pair
    try:
        fut.result()
        _count(entry, "ok", None, result, progress)
    except Unrepresentable as e:
        _count(entry, "skipped", str(e), result, progress)
    except ReplicatorError as e:
        _count(entry, "error", f"{entry.key!r}: {e}", result, progress)


def _count(entry: Entry, outcome: str, message: str | None, result: RestoreResult, progress) -> None:
    if outcome == "ok":
        result.objects += 1
        result.bytes += entry.size
    else:
        (result.skipped if outcome == "skipped" else result.errors).append(message)
    if progress:
        progress(result)
