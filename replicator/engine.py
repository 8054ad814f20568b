"""One replication pass of one job: sync the catalogue, list, copy what changed, write a snapshot.

Order of effects, which is what makes a crash at any moment safe:
  1. listed keys are committed in batches with the listing's progress, so a run killed while
     listing a huge S3 bucket resumes the listing (`_list`);
  2. every blob is written (create-only, size checked) before the catalogue records it;
  3. copied objects are recorded as `pending`, so a killed run resumes where it stopped;
  4. the catalogue commits the new head together with the sealed root's bytes, then the
     root is put; if the process dies between the two, the next run puts those same bytes
     (`put_unwritten_root`), which needs no key that reads manifests (write-only vaults).

A graceful stop (the `stop` event) ends a run within a few chunks' time: objects not started are
cancelled, single-chunk objects in hand finish and are recorded as pending, a large object gives
up between chunks (its stored chunks stay unrecorded, harmless; the next run copies it again),
and no snapshot is written (`RunStats.stopped`; the next run resumes).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from replicator.breaker import Counts, evaluate, looks_encrypted
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.errors import IntegrityError, PrivateKeyNeeded, SnapshotTaken, SourceChanged, SourceError, VaultError
from replicator.futures import INLINE_BELOW, run_here
from replicator.history import History
from replicator.listing import list_source
from replicator.sources.base import Source, SourceItem
from replicator.stores.base import is_local
from replicator.units import format_time_precise
from replicator.vault.format import CHUNK_SIZE, PAGE_SIZE, ChunkRef
from replicator.vault.manifest import SnapshotRoot, encode_blob_lists, encode_pages, encode_row_pages
from replicator.vault.packs import PACK_THRESHOLD, PackWriter
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.engine")

CHECKPOINT_EVERY = 200  # a checkpoint and at most 199 deltas after it
PACK_MAX_AGE = 30.0  # seconds a partly filled pack may wait for more small chunks
PROGRESS_EVERY = 0.5  # seconds between progress calls while waiting for objects in flight


@dataclass
class RunStats:
    job: str
    started: str = ""
    listed: int = 0
    to_copy: int = 0
    to_copy_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    stored_bytes: int = 0  # source bytes stored so far, objects still in flight included (progress)
    reused: int = 0  # chunks found already in the vault
    unchanged: int = 0
    tombstones: int = 0
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seq: int | None = None
    breaker: str | None = None  # why the breaker tripped, if it did
    held: int = 0  # changes held back by the breaker
    dry_run: bool = False
    stopped: bool = False  # a graceful stop ended the run before its snapshot (not an error: the next run resumes)
    seconds: float = 0.0
    history: dict | None = None  # issue 10, history = "all": versions imported from the source (history_import.py)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


Progress = Callable[[RunStats], None]
Copier = Callable[[Vault, Catalogue, str, Source, RunStats, int, "Progress | None", "threading.Event | None"], None]


_UNWRITTEN = "unwritten-root:"


def stage_root(vault: Vault, cat: Catalogue, root: SnapshotRoot) -> str:
    """Inside the transaction that records a snapshot: seal its root and keep the sealed bytes in
    the catalogue, to be put by `put_unwritten_root` once the transaction commits. Returns the
    SHA-256 of the stored bytes (the snapshot's hash, the next root's `prev`)."""
    sealed = vault.seal_snapshot(vault.job_id(root.job), root)
    cat.set_meta(_UNWRITTEN + root.job, f"{root.seq} {base64.b64encode(sealed).decode()}")
    return hashlib.sha256(sealed).hexdigest()


def unwritten_seq(cat: Catalogue, job: str) -> int | None:
    """The seq of a snapshot this host committed whose root is not known to be in the vault yet."""
    pending = cat.meta(_UNWRITTEN + job)
    return None if pending is None else int(pending.split(" ", 1)[0])


def put_unwritten_root(vault: Vault, cat: Catalogue, job: str) -> None:
    """Store the root that the catalogue committed but the vault may not hold yet (idempotent)."""
    pending = cat.meta(_UNWRITTEN + job)
    if pending is None:
        return
    seq, sealed = pending.split(" ", 1)
    try:
        vault.put_snapshot(vault.job_id(job), int(seq), base64.b64decode(sealed))
    except SnapshotTaken:
        # Another writer (one that ignored or predates the vault lease) stored its snapshot first.
        # Ours is discarded, its blobs stay unreferenced; the next run adopts the vault's history.
        with cat.transaction():
            cat.reset_job(job)
            cat.set_meta(_UNWRITTEN + job, None)
        raise VaultError(f"job {job}: snapshot {seq} was written by another replicator at the same time; this "
                         "run's snapshot is discarded (what it copied stays in the vault) and the next run "
                         "continues from the vault's history") from None
    with cat.transaction():
        cat.record_checksums(vault.take_checksums())
        cat.set_meta(_UNWRITTEN + job, None)


def sync_job(vault: Vault, cat: Catalogue, job: str) -> None:
    """Bring the catalogue's copy of a job up to the vault's head; detect rollback."""
    put_unwritten_root(vault, cat, job)
    history = History.for_job(vault, job)
    seqs = history.seqs
    head = cat.head(job)
    if seqs and seqs != list(range(seqs[-1] + 1)):
        missing = sorted(set(range(seqs[-1] + 1)) - set(seqs))
        raise IntegrityError(f"job {job!r}: snapshot {missing[0]} is missing from the vault")
    if head is not None:
        if not seqs or seqs[-1] < head[0]:
            raise IntegrityError(f"job {job!r}: the vault lacks snapshot {head[0]} that this host wrote (deleted or rolled back)")
        if history.root(head[0])[1] != head[1]:
            raise IntegrityError(f"job {job!r}: snapshot {head[0]} in the vault differs from the one this host wrote")
        if seqs[-1] == head[0]:
            return
        start = head[0] + 1
    elif not seqs:
        return
    else:
        start = seqs[-1]
        while not history.root(start)[0].checkpoint:
            start -= 1
    if not vault.can_read_content:
        raise PrivateKeyNeeded(f"job {job!r}: this host's catalogue is behind the write-only vault (snapshot "
                               f"{seqs[-1]}); rebuilding it needs the private key once: `replicator run --key PATH`")
    with cat.transaction():
        prev = head[1] if head and start == head[0] + 1 else None
        for seq in range(start, seqs[-1] + 1):
            root, digest = history.root(seq)
            if prev is not None and root.prev != prev:
                raise IntegrityError(f"job {job!r}: snapshot {seq} does not chain to snapshot {seq - 1}")
            if root.checkpoint:
                cat.reset_job(job)
            n = cat.apply(job, history.entries(root))
            cat.record_snapshot(job, seq, digest, root.started, root.finished, root.checkpoint, 0 if root.checkpoint else n)
            prev = digest
    log.info("job %s: catalogue synced with the vault up to snapshot %d", job, seqs[-1])


def run_job(vault: Vault, cat: Catalogue, job: JobConfig, source: Source, *, dry_run: bool = False,
            workers: int = 8, progress: Progress | None = None, stop: threading.Event | None = None,
            copier: "Copier | None" = None) -> RunStats:
    """One pass of one job. `copier` does the copying (default: `_copy`, threads here; the Dask
    engine is another with the same contract: record an object pending only once it is stored)."""
    stats = RunStats(job=job.name, dry_run=dry_run)
    t0 = time.monotonic()
    started = datetime.now(timezone.utc)
    stats.started = format_time_precise(started)
    sync_job(vault, cat, job.name)
    if job.history == "all" and not dry_run:
        # The source's own versions, written before this run, become snapshots before this
        # run's one (history_import.py); the listing below then reads current versions by version id.
        from replicator.history_import import import_history

        import_history(vault, cat, job, source, started, stats, workers, stop)

    started = list_source(cat, job, source, stats, started, progress, stop)
    if stop is not None and stop.is_set():
        stats.stopped = True  # while listing: the next run resumes the listing
        stats.seconds = time.monotonic() - t0
        return stats
    stats.to_copy, stats.to_copy_bytes = cat.count_to_copy(job.name)
    if progress:
        progress(stats)

    if dry_run:
        cat.prepare_delta(job.name)
        stats.tombstones = cat.delta_counts()[2]
        stats.unchanged = stats.listed - stats.to_copy
        stats.seconds = time.monotonic() - t0
        return stats

    (copier or _copy)(vault, cat, job.name, source, stats, workers, progress, stop)
    if stop is not None and stop.is_set():
        stats.stopped = True  # what was copied is pending: the next run resumes and writes the snapshot
        stats.seconds = time.monotonic() - t0
        return stats
    _write_snapshot(vault, cat, job, started, stats)
    stats.seconds = time.monotonic() - t0
    return stats


def _copy(vault: Vault, cat: Catalogue, job: str, source: Source, stats: RunStats, workers: int,
          progress: Progress | None, stop: threading.Event | None) -> None:
    """Copy every item that needs it, `workers` at a time; record each as pending when done.

    Small chunks go into packs (vault/packs.py), large ones into a blob each. An item is done
    when all its chunks are verifiably stored: for a packed chunk, when its pack is written.
    Only then is it recorded as pending (with its chunks in the chunk index), so a crash at any
    moment leaves no reference to anything missing. `stats.stored_bytes` grows as chunks are
    stored, and `progress` is called at least every PROGRESS_EVERY seconds, so progress moves
    while large objects copy."""
    lock = threading.Lock()
    packer = PackWriter(vault)

    def stopping() -> bool:
        return stop is not None and stop.is_set()

    def known(cid: str) -> ChunkRef | Future | None:
        found = packer.pending(cid)  # first: a chunk leaves it only once the catalogue has it
        if found is None:
            with lock:
                found = cat.chunk(cid)
        if found is not None:
            with lock:
                stats.reused += 1
        return found

    def store(data: bytes) -> ChunkRef | Future:
        cid = vault.chunk_id(data)
        ref = known(cid)
        if ref is None and len(data) < PACK_THRESHOLD:
            ref, added = packer.add(data, cid)
            if not added:  # another thread packed it meanwhile
                with lock:
                    stats.reused += 1
        elif ref is None:
            ref = vault.write_chunk(data, cid=cid)
        with lock:
            stats.stored_bytes += len(data)
        return ref

    # The chunks of a large object are stored (hashed, compressed, sealed, written) in parallel by a
    # second pool, and, where the source is better read so, also read in parallel (read_part); else
    # the object is read as one stream (one GET on S3). `slots` bounds the chunks in memory at once
    # over all objects (workers / 2 x chunk size, never an object).
    slots = threading.BoundedSemaphore(max(2, workers // 2))

    def part(get: Callable[[], bytes]) -> ChunkRef | Future:
        try:
            return store(get())
        finally:
            slots.release()

    def submit(get: Callable[[], bytes]) -> Future:
        slots.acquire()
        try:
            return parts.submit(part, get)
        except BaseException:
            slots.release()
            raise

    def copy_one(item: SourceItem) -> list[ChunkRef | Future]:
        if stopping():
            raise _GivenUp(item.key)  # picked up after a stop: not started
        if item.size <= CHUNK_SIZE:
            return [store(data) for data in source.read(item, CHUNK_SIZE)]
        if getattr(source, "parallel_parts", False):
            futures = []
            try:
                for start in range(0, item.size, CHUNK_SIZE):
                    if stopping():
                        raise _GivenUp(item.key)
                    futures.append(submit(lambda start=start: source.read_part(item, start, min(start + CHUNK_SIZE, item.size))))
            except BaseException:
                wait(futures)  # nothing of this object left running when it is given up
                raise
            refs = [f.result() for f in futures]
            source.finish_parts(item)
            return refs
        futures, chunks = [], source.read(item, CHUNK_SIZE)
        try:
            while True:
                if stopping():
                    raise _GivenUp(item.key)  # between chunks: its stored chunks stay unrecorded
                slots.acquire()  # before the read: a thread waiting for a slot holds no chunk
                try:
                    data = next(chunks, None)
                    if data is None:
                        break
                    futures.append(parts.submit(part, lambda data=data: data))
                    del data
                except BaseException:
                    slots.release()
                    raise
            slots.release()
        except BaseException:
            wait(futures)  # nothing of this object left running when it is given up
            raise
        return [f.result() for f in futures]

    # Local files into a vault on a local disk: nothing is waited on, so a small object is copied by
    # this thread; threads contending for the interpreter would only slow it down (issue 7).
    local = getattr(source, "local", False) and is_local(vault.store)
    inline_below = INLINE_BELOW if local else 0
    last_commit = time.monotonic()
    in_flight: dict[Future, SourceItem] = {}
    waiting: list[tuple[SourceItem, list[ChunkRef | Future]]] = []  # copied; some chunks' packs not yet written

    def flush() -> None:
        """Record the items whose chunks are all stored; a failed pack write fails the run."""
        ready, still, failed = [], [], None
        for item, refs in waiting:
            futures = [r for r in refs if isinstance(r, Future)]
            if any(not f.done() for f in futures):
                still.append((item, refs))
                continue
            error = next((f.exception() for f in futures if f.exception() is not None), None)
            if error is not None:  # its pack was not stored: not recorded, the run fails below
                failed = failed or error
                continue
            ready.append((item, [r.result() if isinstance(r, Future) else r for r in refs]))
        waiting[:] = still
        with lock, cat.transaction():
            cat.add_copied(job, ready)
            cat.record_checksums(vault.take_checksums())  # issue 10: provider checksums of the new blobs
        packer.forget(r.id for _, refs in ready for r in refs)
        if failed is not None:
            raise failed

    def collect(done) -> None:
        for f in done:
            item = in_flight.pop(f)
            try:
                refs = f.result()
            except _GivenUp:
                continue  # stopped: not recorded, the next run copies it
            except SourceChanged as e:
                stats.warnings.append(str(e))
                continue
            except SourceError as e:
                stats.errors.append(str(e))
                continue
            waiting.append((item, refs))
            stats.copied += 1
            stats.copied_bytes += item.size

    def settle(below: int) -> None:
        """Wait until fewer than `below` objects are in flight, calling progress meanwhile. After a
        stop, objects not started are cancelled (not recorded; the next run copies them)."""
        while len(in_flight) >= below:
            if stopping():
                for f in [f for f in in_flight if f.cancel()]:
                    del in_flight[f]
                if len(in_flight) < below:
                    return
            done, _ = wait(in_flight, timeout=PROGRESS_EVERY, return_when=FIRST_COMPLETED)
            collect(done)
            if progress:
                progress(stats)

    with ThreadPoolExecutor(workers, thread_name_prefix="part") as parts, \
            ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
        try:
            for item in cat.to_copy(job):
                settle(below=workers * 2)
                if stopping():
                    break
                in_flight[run_here(copy_one, item) if item.size < inline_below else pool.submit(copy_one, item)] = item
                if waiting and (len(waiting) >= 500 or time.monotonic() - last_commit > 1.0):
                    packer.flush(older_than=PACK_MAX_AGE)  # a slow trickle still gets recorded
                    flush()
                    last_commit = time.monotonic()
                    if progress:
                        progress(stats)
            settle(below=1)
        finally:
            # Whatever happens, what finished is recorded: a rerun will not copy it again.
            for f in list(in_flight):
                f.cancel()
            done = [f for f in in_flight if f.done() and not f.cancelled() and f.exception() is None]
            # Those still running (the run failed) are not recorded, as after a crash.
            for f in done:
                waiting.append((in_flight.pop(f), f.result()))
            try:
                packer.flush()  # the last, partly filled pack (a failure fails its items' futures)
            finally:
                flush()
    if progress:
        progress(stats)


class _GivenUp(Exception):
    """An object abandoned because the run is stopping: nothing of it is recorded."""


def _write_snapshot(vault: Vault, cat: Catalogue, job: JobConfig, started: datetime, stats: RunStats,
                    bookkeeping: Callable[[], None] | None = None) -> None:
    """Write the run's delta (or checkpoint) and root. `bookkeeping` runs inside the transaction that
    commits the new head, so what a caller records with the snapshot commits with it or not at all."""
    head = cat.head(job.name)
    seq = 0 if head is None else head[0] + 1
    n_delta = cat.prepare_delta(job.name)
    _check_breaker(cat, job, stats)
    if stats.breaker:
        n_delta -= cat.hold(job.name)
    changed, _, stats.tombstones = cat.delta_counts()
    stats.unchanged = stats.listed - stats.to_copy
    count, delta_sum = cat.since_checkpoint(job.name)
    with cat.transaction():
        live_before = cat.live_count(job.name)
        checkpoint = head is None or count >= CHECKPOINT_EVERY or delta_sum + n_delta >= max(live_before, 1000)
        delta_pages = [] if checkpoint else [vault.write_chunk(p) for p in encode_row_pages(cat.delta_rows(), PAGE_SIZE)]
        held_pages = [vault.write_chunk(p) for p in encode_pages(cat.held(), PAGE_SIZE)] if stats.breaker else []
        blob_lists = ([vault.write_meta_page(p) for p in encode_blob_lists(cat.delta_blobs(bool(stats.breaker)), PAGE_SIZE)]
                      if vault.keyring.write_only else [])
        cat.apply_delta(job.name)
        pages = [vault.write_chunk(p) for p in encode_row_pages(cat.entry_rows(job.name), PAGE_SIZE)] if checkpoint else delta_pages
        root = SnapshotRoot(
            job=job.name, kind=job.kind, seq=seq, prev=head[1] if head else None, started=format_time_precise(started),
            finished=format_time_precise(datetime.now(timezone.utc)), checkpoint=checkpoint, pages=tuple(pages),
            stats={"listed": stats.listed, "changed": changed, "tombstones": stats.tombstones,
                   "live": cat.live_count(job.name), "copied_bytes": stats.copied_bytes, "held": stats.held},
            held=tuple(held_pages), blobs=tuple(blob_lists))
        digest = stage_root(vault, cat, root)
        cat.record_snapshot(job.name, seq, digest, root.started, root.finished, checkpoint, 0 if checkpoint else n_delta)
        cat.record_checksums(vault.take_checksums())  # issue 10: pages
        cat.finish_run(job.name, keep_held=bool(stats.breaker))
        cat.set_meta(f"breaker:{job.name}", stats.breaker)
        if not stats.breaker:
            cat.set_meta(f"approve:{job.name}", None)
        if bookkeeping is not None:
            bookkeeping()
    # The catalogue holds the sealed root before the vault does: a crash from here on is finished by
    # the next run (`put_unwritten_root`), which needs no key to read manifest pages back.
    put_unwritten_root(vault, cat, job.name)
    stats.seq = seq
    log.info("job %s: snapshot %d written (%d changed, %d tombstones, %d held, %s)", job.name, seq, changed,
             stats.tombstones, stats.held, "checkpoint" if checkpoint else "delta")


def _check_breaker(cat: Catalogue, job: JobConfig, stats: RunStats) -> None:
    """Trip the breaker if this run would record a mass deletion or rewrite (unless an operator approved it)."""
    if cat.meta(f"approve:{job.name}"):
        return
    live, deleted, rewritten, renamed = cat.change_counts(job.name)
    suspicious = renamed
    if rewritten:
        suspicious += sum(1 for old, new in cat.rewrites(job.name) if looks_encrypted(old.chunks, new.chunks))
    reason = evaluate(job.safety, Counts(live, deleted, rewritten, suspicious))
    if reason:
        stats.breaker = reason
        stats.held = deleted + rewritten
        stats.errors.append(f"breaker tripped: {reason}; the previous versions stay current until "
                            f"`replicator approve {job.name}`")
        log.info("job %s: breaker tripped: %s", job.name, reason)  # the caller reports it as an error
