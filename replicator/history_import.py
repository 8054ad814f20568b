"""history = "all": the versions a versioned source bucket keeps become snapshots (issue 10).

The design (docs/FORMAT.md, "Imported history"), in short:

* Each run of such a job, before its normal listing, lists every version and deletion the
  source keeps (S3 ListObjectVersions: versions and delete markers; GCS: generations) written
  in the *window*: before this run's start S, and (after the first run) not before the previous
  run's start rounded down to the second, less a second (listings round times to seconds).
* Events this job's snapshots already hold are dropped: a key's events at or before the newest
  of its events whose version id is in the head state or in a snapshot of the window.
* The rest are copied (by version id) and written as *imported snapshots*, in time order, each
  with `started` = the time of its last event (moved forward by a microsecond where needed so
  that times strictly increase and stay after the previous snapshot), before the run's own
  snapshot at S. A snapshot closes before a key would repeat in it (so every version is live in
  some snapshot) and when it would span more than the bucket width (1 s, widened step by step
  until the window makes at most MAX_SNAPSHOTS snapshots): `restore --at T` then shows a true
  state of the source at some time in (T - width, T].
* Later runs cannot insert snapshots in the past: versions written between two runs get
  snapshots between the previous snapshot and the new one.
* The mass-change breaker sees the whole window first (deletions and rewrites of the keys' final
  states, and encrypted-looking rewrites, counted as the engine counts them). If it would trip,
  nothing is imported this run (the engine's own breaker then holds the change) and the window
  stays open until the change is approved.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from replicator.breaker import Counts, evaluate, looks_encrypted
from replicator.catalogue import Catalogue
from replicator.errors import SourceChanged, SourceError
from replicator.history import History
from replicator.sources.base import SourceItem
from replicator.units import format_time_precise, parse_time
from replicator.vault.format import CHUNK_SIZE, PAGE_SIZE, ChunkRef
from replicator.vault.manifest import Entry, SnapshotRoot, encode_blob_lists, encode_pages
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.history")

MAX_SNAPSHOTS = 1000  # per window: buckets widen until the import writes at most about this many
WIDTHS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)  # seconds
MARGIN = 1.0  # seconds before the previous run's start (rounded down) that a window reaches back
TICK = timedelta(microseconds=1)


def import_history(vault: Vault, cat: Catalogue, job, source, started: datetime, stats, workers: int = 8,
                   stop: threading.Event | None = None) -> None:
    """Import the source's versions written before `started` that the job's snapshots lack."""
    if not hasattr(source, "versions"):
        raise SourceError(f"{job.name}: history = \"all\" needs an S3 or GCS source")
    source.list_versions = True  # the run's own listing then names current versions by version id
    try:
        versioning = source.versioning()
    except SourceError as e:  # e.g. no s3:GetBucketVersioning: the import itself may still work
        versioning = "enabled"
        log.warning("job %s: cannot tell whether the source bucket keeps every version: %s", job.name, e)
    if versioning != "enabled":
        log.warning('job %s: history = "all", but versioning is %s on the source bucket: only the versions it '
                    "kept are imported, and a key is missing from imported snapshots before its oldest kept "
                    "version (enable versioning on the bucket)", job.name, versioning)
    head = cat.head(job.name)
    s_new = started.timestamp()
    prev_started: datetime | None = None
    window_start = None
    if head is not None:
        prev_started = parse_time(cat.snapshot_started(job.name, head[0]) or
                                  History.for_job(vault, job.name).root(head[0])[0].started)
        mark = cat.meta(f"history:{job.name}")
        base = float(mark) if mark else prev_started.timestamp()
        window_start = math.floor(base) - MARGIN
    with tempfile.TemporaryDirectory(prefix="replicator-history-") as tmp:
        imp = _Import(Path(tmp) / "events.db")
        try:
            n = imp.load(source.versions(), window_start, s_new)
            if head is not None and n:
                imp.drop_known(_known(vault, cat, job.name, head[0], window_start))
            if not imp.count():
                cat.set_meta(f"history:{job.name}", repr(s_new))
                return
            imp.copy(vault, cat, job.name, source, workers, stop, stats)
            if stop is not None and stop.is_set():
                return
            if head is not None and not cat.meta(f"approve:{job.name}"):
                reason = imp.breaker(cat, job)
                if reason:
                    stats.warnings.append(f"versions written since the last run were not imported: {reason}; they "
                                          f"will be once the change is approved (`replicator approve {job.name}`)")
                    return
            written = imp.write_snapshots(vault, cat, job, prev_started, started, stats)
        finally:
            imp.close()
    cat.set_meta(f"history:{job.name}", repr(written if written is not None else s_new))


def _known(vault: Vault, cat: Catalogue, job: str, head_seq: int, window_start: float) -> Iterator[tuple[str, str]]:
    """(key, version) pairs the job's snapshots already hold: the head state, and every snapshot
    whose time is inside the window (the previous runs' imports and their own snapshots)."""
    for e in cat.entries(job):
        if e.version:
            yield e.key, e.version
    history = History.for_job(vault, job)
    seq = head_seq
    while seq in history.seqs:
        root = history.root(seq)[0]
        if parse_time(root.started).timestamp() < window_start:
            break
        for e in history.entries(root):  # a checkpoint: its whole state (read back further all the same)
            if e.version and not e.deleted:
                yield e.key, e.version
        seq -= 1


class _Import:
    """The window's events in a temporary SQLite file (memory does not grow with the bucket)."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript("""
            CREATE TABLE ev(id INTEGER PRIMARY KEY, key TEXT, version TEXT, t REAL, time TEXT, size INTEGER,
                            etag TEXT, deleted INTEGER, latest INTEGER, ord INTEGER, chunks TEXT, bucket INTEGER);
            CREATE INDEX ev_key ON ev(key, ord);
            CREATE TABLE known(key TEXT, version TEXT, PRIMARY KEY(key, version)) WITHOUT ROWID;
        """)
        self.read_versions = self.read_bytes = 0  # versions whose content was read from the source

    def close(self) -> None:
        self.db.close()

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM ev").fetchone()[0]

    def load(self, events, window_start: float | None, s_new: float) -> int:
        batch = []
        for ev in events:
            t = ev.time.timestamp()
            if t >= s_new or (window_start is not None and t < window_start):
                continue
            batch.append((ev.key, ev.version, t, format_time_precise(ev.time), ev.size, ev.etag, int(ev.deleted),
                          int(ev.latest), ev.order))
            if len(batch) >= 5000:
                self._insert(batch)
                batch = []
        self._insert(batch)
        return self.count()

    def _insert(self, batch: list) -> None:
        with self.db:
            self.db.executemany("INSERT INTO ev(key, version, t, time, size, etag, deleted, latest, ord) "
                                "VALUES(?,?,?,?,?,?,?,?,?)", batch)

    def drop_known(self, known: Iterator[tuple[str, str]]) -> None:
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO known VALUES(?,?)", known)
            # A key's events at or before one we hold were imported (or listed) together with it.
            self.db.execute("""DELETE FROM ev WHERE EXISTS (SELECT 1 FROM ev k JOIN known n ON n.key = k.key
                               AND n.version = k.version WHERE k.key = ev.key AND k.deleted = 0 AND ev.ord >= k.ord)""")

    # -- content --------------------------------------------------------------------------------

    def copy(self, vault: Vault, cat: Catalogue, job: str, source, workers: int, stop, stats) -> None:
        """Store every version's content (by version id); reuse what the head state has."""
        lock = threading.Lock()

        def known(cid: str) -> ChunkRef | None:
            with lock:
                return cat.chunk(cid)

        def one(row) -> list[ChunkRef] | None:
            _, key, version, time, size, etag = row
            with lock:
                have = cat.entry(job, key)
            if have is not None and etag and have.etag == etag and have.size == size:
                return list(have.chunks)  # the same content is stored already
            refs = []
            for data in _read_version(source, SourceItem(key, size, time, etag, version)):
                cid = vault.chunk_id(data)
                ref = known(cid) or vault.write_chunk(data, cid=cid)
                refs.append(ref)
            with lock:
                self.read_versions += 1
                self.read_bytes += size
            return refs

        def record(done: list) -> None:
            with lock, cat.transaction():
                for _, refs in done:
                    cat.add_chunks(refs)
                cat.record_checksums(vault.take_checksums())
            with self.db:
                self.db.executemany("UPDATE ev SET chunks = ? WHERE id = ?",
                                    ((json.dumps([r.to_json() for r in refs]), i) for i, refs in done))

        done: list = []
        after = 0
        with ThreadPoolExecutor(workers, thread_name_prefix="history") as pool:
            while True:  # pages of the table, a pool's worth of reads at a time
                if stop is not None and stop.is_set():
                    return
                rows = self.db.execute("SELECT id, key, version, time, size, etag FROM ev WHERE deleted = 0 AND "
                                       "chunks IS NULL AND id > ? ORDER BY id LIMIT ?", (after, workers * 4)).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                for row, fut in [(r, pool.submit(one, r)) for r in rows]:
                    try:
                        refs = fut.result()
                    except SourceChanged as e:  # that version was removed meanwhile: nothing to keep
                        stats.warnings.append(f"version {row[2]} of {row[1]!r}: {e}")
                        with self.db:
                            self.db.execute("DELETE FROM ev WHERE id = ?", (row[0],))
                        continue
                    done.append((row[0], refs))
                if len(done) >= 200:
                    record(done)
                    done = []
        record(done)

    # -- the breaker ------------------------------------------------------------------------------

    def breaker(self, cat: Catalogue, job) -> str | None:
        """What the engine's breaker would say about the keys' final states in the window."""
        live = cat.live_count(job.name)
        deleted = rewritten = suspicious = 0
        rows = self.db.execute("SELECT e.key, e.size, e.etag, e.deleted, e.chunks FROM ev e WHERE e.ord = "
                               "(SELECT min(ord) FROM ev f WHERE f.key = e.key)")
        for key, size, etag, gone, chunks in rows:
            old = cat.entry(job.name, key)
            if old is None:
                continue
            if gone:
                deleted += 1
            elif not (old.size == size and etag is not None and old.etag == etag):
                rewritten += 1
                new = [ChunkRef.from_json(c) for c in json.loads(chunks or "[]")]
                if looks_encrypted(old.chunks, new):
                    suspicious += 1
        return evaluate(job.safety, Counts(live, deleted, rewritten, suspicious))

    # -- snapshots ----------------------------------------------------------------------------------

    def _order(self):
        return self.db.execute("SELECT id, key, t FROM ev ORDER BY t, key, ord DESC")

    def _buckets(self, width: float, assign: bool) -> int:
        n, first, keys, updates = 0, None, set(), []
        for i, key, t in self._order():
            if first is None or key in keys or t - first >= width:
                n, first, keys = n + 1, t, set()
            keys.add(key)
            if assign:
                updates.append((n, i))
        if assign:
            with self.db:
                self.db.executemany("UPDATE ev SET bucket = ? WHERE id = ?", updates)
                self.db.execute("CREATE INDEX IF NOT EXISTS ev_bucket ON ev(bucket)")
        return n

    def write_snapshots(self, vault: Vault, cat: Catalogue, job, prev_started: datetime | None,
                        started: datetime, stats) -> float | None:
        """Write the imported snapshots in time order. Returns the time up to which events are
        imported when some had to wait for the next run (None: all of them)."""
        width = next((w for w in WIDTHS if self._buckets(w, False) <= MAX_SNAPSHOTS), WIDTHS[-1])
        count = self._buckets(width, True)
        label = prev_started
        info = {"versions": 0, "deletions": 0, "snapshots": 0, "bucket_seconds": width, "first": None, "last": None,
                "read_versions": self.read_versions, "read_bytes": self.read_bytes}
        stats.history = info
        for b in range(1, count + 1):
            rows = self.db.execute("SELECT key, version, time, t, size, etag, deleted, chunks FROM ev WHERE bucket = ? "
                                   "ORDER BY key", (b,)).fetchall()
            at = parse_time(max(r[2] for r in rows))  # the exact (microsecond) text, not a float
            if label is not None and at <= label:
                at = label + TICK
            if at >= started:  # only a microsecond below the run's start: the next run takes these
                return min(r[3] for r in rows)
            entries, versions, deletions = [], 0, 0
            for key, version, time, _, size, etag, gone, chunks in rows:
                if gone:
                    if cat.entry(job.name, key) is not None:
                        entries.append(Entry(key, 0, deleted=True))
                        deletions += 1
                    continue
                refs = tuple(ChunkRef.from_json(c) for c in json.loads(chunks))
                entries.append(Entry(key, size, time, etag, version, refs))
                versions += 1
            if not entries:
                continue
            _write_snapshot(vault, cat, job, entries, at, {"imported": True, "changed": versions, "tombstones": deletions})
            label = at
            info["versions"] += versions
            info["deletions"] += deletions
            info["snapshots"] += 1
            info["first"] = info["first"] or format_time_precise(at)
            info["last"] = format_time_precise(at)
        if info["snapshots"]:
            log.info("job %s: imported %d versions and %d deletions from the source as %d snapshots (%s .. %s)",
                     job.name, info["versions"], info["deletions"], info["snapshots"], info["first"], info["last"])
        return None


def _write_snapshot(vault: Vault, cat: Catalogue, job, entries: list[Entry], at: datetime, extra: dict) -> None:
    """One imported snapshot: a delta (or checkpoint, by the engine's policy) of `entries` at time `at`."""
    from replicator.engine import CHECKPOINT_EVERY, put_unwritten_root, stage_root

    head = cat.head(job.name)
    seq = 0 if head is None else head[0] + 1
    n_delta = len(entries)
    count, delta_sum = cat.since_checkpoint(job.name)
    with cat.transaction():
        live_before = cat.live_count(job.name)
        checkpoint = head is None or count >= CHECKPOINT_EVERY or delta_sum + n_delta >= max(live_before, 1000)
        delta_pages = [] if checkpoint else [vault.write_chunk(p) for p in encode_pages(iter(entries), PAGE_SIZE)]
        cat.apply(job.name, entries)
        pages = [vault.write_chunk(p) for p in encode_pages(cat.entries(job.name), PAGE_SIZE)] if checkpoint else delta_pages
        root = SnapshotRoot(
            job=job.name, kind=job.kind, seq=seq, prev=head[1] if head else None, started=format_time_precise(at),
            finished=format_time_precise(datetime.now(timezone.utc)), checkpoint=checkpoint, pages=tuple(pages),
            stats={"listed": 0, "live": cat.live_count(job.name), "copied_bytes": 0, "held": 0, **extra},
            blobs=tuple(vault.write_meta_page(p) for p in encode_blob_lists(
                sorted({(c.blob, c.blob_size) for e in entries for c in e.chunks}), PAGE_SIZE)) if vault.keyring.write_only else ())
        digest = stage_root(vault, cat, root)
        cat.record_snapshot(job.name, seq, digest, root.started, root.finished, checkpoint, 0 if checkpoint else n_delta)
        cat.record_checksums(vault.take_checksums())
    put_unwritten_root(vault, cat, job.name)  # as the engine does: committed first, then put


def _read_version(source, item: SourceItem) -> Iterator[bytes]:
    """One version's content in chunks: S3 through the source's own read (VersionId, If-Match);
    GCS by generation."""
    if source.protocol in ("gs", "gcs"):
        path = f"{source.root}/{item.key}" if source.root else item.key
        generation = item.version
        got = 0
        try:
            while got < item.size or (got == 0 and item.size == 0):
                end = min(got + CHUNK_SIZE, item.size)
                data = source.fs.cat_file(path, start=got, end=end, generation=generation) if end > got else b""
                if len(data) != end - got:
                    raise SourceChanged(f"{item.key!r} generation {generation} is not the size listed")
                got += len(data)
                yield data
                if item.size == 0:
                    break
        except FileNotFoundError:
            raise SourceChanged(f"{item.key!r} generation {generation} is gone") from None
        return
    yield from source.read(item, CHUNK_SIZE)
