"""Write a job's objects as they were at a point in time to any target."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

from replicator.errors import ReplicatorError
from replicator.history import History
from replicator.targets import Unrepresentable
from replicator.vault.manifest import Entry
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.restore")


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
            workers: int = 8, progress: Callable[[RestoreResult], None] | None = None) -> RestoreResult:
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

        def one(entry: Entry) -> None:
            target.write(entry.key, _chunks(vault, entry))

        with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
            window: list = []
            for entry in state.iter(prefix):
                window.append((entry, pool.submit(one, entry)))
                if len(window) >= workers * 2:
                    _settle(window.pop(0), result, progress)
            for w in window:
                _settle(w, result, progress)
    return result


def _settle(pair, result: RestoreResult, progress) -> None:
    entry, fut = pair
    try:
        fut.result()
        result.objects += 1
        result.bytes += entry.size
    except Unrepresentable as e:
        result.skipped.append(str(e))
    except ReplicatorError as e:
        result.errors.append(f"{entry.key!r}: {e}")
    if progress:
        progress(result)


def _chunks(vault: Vault, entry: Entry) -> Iterator[bytes]:
    for ref in entry.chunks:
        yield vault.read_chunk(ref)
