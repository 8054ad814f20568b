"""Write a job's objects as they were at a point in time to any target."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from replicator.errors import ReplicatorError
from replicator.futures import INLINE_BELOW, run_here
from replicator.history import History
from replicator.stores.base import is_local
from replicator.targets import LocalTarget, Unrepresentable
from replicator.vault.format import ChunkRef
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
            workers: int | None = None, progress: Callable[[RestoreResult], None] | None = None) -> RestoreResult:
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

        packs = _PackReader(vault, state.iter(prefix))
        # From a vault on a local disk to a local directory nothing is waited on: a thread per core
        # decrypts large objects, and a small one is written by this thread (threads contending for
        # the interpreter would only slow it down). Anything remote: 8 requests in flight.
        local = isinstance(target, LocalTarget) and is_local(vault.store)
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
        result.objects += 1
        result.bytes += entry.size
    except Unrepresentable as e:
        result.skipped.append(str(e))
    except ReplicatorError as e:
        result.errors.append(f"{entry.key!r}: {e}")
    if progress:
        progress(result)


class _PackReader:
    """Chunks for a restore. A pack from which this restore takes at least MANY chunks is fetched
    once, whole, and its payload kept (a few at a time) until they are all served: one request per
    pack instead of one per small object. Any other chunk is read by itself: only the segments of
    its record (so restoring one object never downloads a whole pack)."""

    MANY = 4
    KEEP = 4  # payloads held at once (packs are at most 8 MiB of payload)
    LARGEST = 16 * 2**20

    def __init__(self, vault: Vault, entries):
        self.vault = vault
        wanted: dict[str, int] = {}
        for e in entries:
            for ref in e.chunks:
                if ref.blob != ref.id and ref.blob_size <= self.LARGEST:
                    wanted[ref.blob] = wanted.get(ref.blob, 0) + 1
        self.left = {b: n for b, n in wanted.items() if n >= self.MANY}  # chunks still to serve from each
        self.lock = threading.Lock()
        self.payloads: OrderedDict[str, bytes] = OrderedDict()
        self.loading: dict[str, Future] = {}

    def read(self, ref: ChunkRef) -> bytes:
        if ref.blob not in self.left:
            return self.vault.read_chunk(ref)
        with self.lock:
            payload = self.payloads.get(ref.blob)
            fut = None if payload is not None else self.loading.get(ref.blob)
            mine = payload is None and fut is None
            if mine:
                fut = self.loading[ref.blob] = Future()
        if mine:
            try:
                payload = self.vault.read_payload(ref.blob, ref.blob_size)
                fut.set_result(payload)
            except BaseException as e:
                fut.set_exception(e)
                raise
            finally:
                with self.lock:
                    self.loading.pop(ref.blob, None)
                    if payload is not None:
                        self.payloads[ref.blob] = payload
                        while len(self.payloads) > self.KEEP:
                            self.payloads.popitem(last=False)
        elif payload is None:
            payload = fut.result()
        data = self.vault.chunk_in(payload, ref)
        with self.lock:
            self.left[ref.blob] -= 1
            if self.left[ref.blob] <= 0:  # all served: let it go
                self.payloads.pop(ref.blob, None)
        return data
