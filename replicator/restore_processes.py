"""Many small objects from a local vault into a local directory, written by worker processes
(issue 7), as process_engine.py copies them: one interpreter is the limit there, not the disks.

This process walks the snapshot and hands out batches of entries in key order (so a batch's
objects share packs, each read once); each worker opens the vault itself (the config file and
the key file: secrets never travel) and writes its objects with its own LocalTarget. Results
come back in order. Not used where the target folds names (macOS, Windows): telling that two
keys fold to one name needs every name written, in one place. Nor with a vault bandwidth limit:
each worker would open its own throttled vault and get the whole limit.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable

from replicator.errors import ReplicatorError
from replicator.vault.manifest import Entry
from replicator.worker_pool import BATCH, start_pool

log = logging.getLogger("replicator.restore")
_OPENED: dict[tuple, tuple] = {}
_LOCK = threading.Lock()


def restore_in_processes(reopen: tuple[str, str | None], root: str, entries: Iterable[Entry], n: int,
                         settle: Callable[[Entry, str, str | None], None]) -> bool:
    """Write `entries` under `root` by n workers; `settle(entry, outcome, message)` gets each one's
    outcome ("ok", "skipped": the target cannot represent it, "error") in entry order. False (and
    nothing written) where workers cannot be started here, or must not be (a bandwidth limit)."""
    if _bandwidth_limited(reopen[0]):
        log.info("a vault bandwidth limit is set: threads restore (each worker process would get all of it)")
        return False
    pool = start_pool(n)
    if pool is None:
        return False
    log.info("restoring by %d worker processes", n)
    window: deque = deque()

    def take_oldest() -> None:
        done, fut = window.popleft()
        try:
            outcomes = fut.result()
        except BrokenProcessPool:
            raise ReplicatorError("a restore process died (killed, or out of memory)") from None
        for entry, (outcome, message) in zip(done, outcomes):
            settle(entry, outcome, message)

    try:
        batch: list[Entry] = []
        for entry in entries:
            batch.append(entry)
            if len(batch) >= BATCH:
                window.append((batch, pool.submit(restore_batch, reopen, root, batch)))
                batch = []
                if len(window) >= 2 * n:
                    take_oldest()
        if batch:
            window.append((batch, pool.submit(restore_batch, reopen, root, batch)))
        while window:
            take_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return True


def _bandwidth_limited(config_path: str) -> bool:
    """Whether the config the workers would open limits the vault's bandwidth."""
    from replicator import config as configmod
    from replicator.stores.throttle import is_limited

    return is_limited(configmod.load(configmod.config_path(config_path)).vault.bandwidth)


def restore_batch(reopen: tuple[str, str | None], root: str, entries: list[Entry]) -> list[tuple[str, str | None]]:
    """In a worker: write these entries under root; (outcome, message) for each."""
    from replicator.targets import Unrepresentable
    from replicator.vault.packs import PackReader

    vault, target = _opened(reopen, root)
    packs = PackReader(vault, entries)
    out: list[tuple[str, str | None]] = []
    for e in entries:
        try:
            target.write(e.key, (packs.read(ref) for ref in e.chunks))
            out.append(("ok", None))
        except Unrepresentable as x:
            out.append(("skipped", str(x)))
        except ReplicatorError as x:
            out.append(("error", f"{e.key!r}: {x}"))
    return out


def _opened(reopen: tuple[str, str | None], root: str):
    """The vault (as the command opened it: its config, its key file) and the target, once per worker."""
    key = (*reopen, root, os.stat(reopen[0]).st_mtime_ns)
    with _LOCK:
        if key not in _OPENED:
            from replicator import config as configmod
            from replicator.batch_copy import open_vault
            from replicator.targets import LocalTarget

            _OPENED[key] = (open_vault(configmod.load(configmod.config_path(reopen[0])), reopen[1]), LocalTarget(root))
        return _OPENED[key]
