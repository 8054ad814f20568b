"""`verify --against-source`: the latest snapshot of a job compared with the live source (issue 10).

Three kinds of difference, by key:
  missing  listed by the source, absent from the snapshot
  changed  in both, but the content differs (size; comparable etags; or, in doubt, the content)
  extra    in the snapshot, gone from the source
Listing metadata decides where it can: a different size is a change; two MD5-shaped etags (or
two identical etags, or the same version id) decide equality. Otherwise (an S3 multipart etag
against a plain MD5, a local file touched without a change, ...) the doubt is settled by reading
the source object and comparing its chunks' keyed hashes with the chunk ids the manifest holds:
the vault is not read at all.

A difference is *in flight*, not drift, when the schedule explains it: the next scheduled run after
the snapshot's has not had its time yet (its start, plus the snapshot run's own duration and a
little slack) and the object's
source mtime is newer than the snapshot's time (an extra object: it may have been deleted since).
Everything else is drift; `verify` exits 1 when there is any.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from replicator import schedules
from replicator.errors import ReplicatorError, SourceChanged, SourceError
from replicator.history import History
from replicator.sources.base import SourceItem
from replicator.units import parse_time
from replicator.vault.format import CHUNK_SIZE
from replicator.vault.manifest import Entry
from replicator.vault.vault import Vault

_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
LIST_CAP = 1000  # items kept per kind in the report (counts are always complete)
DEFAULT_READ_BUDGET = 2**30  # bytes read from the source to settle doubts, per job


@dataclass
class JobDrift:
    job: str
    snapshot: int | None = None
    snapshot_time: str | None = None
    interval_seconds: float | None = None
    fresh: bool = False  # the snapshot is within one schedule interval: recent changes are in flight
    listed: int = 0  # objects the source lists (after include/exclude)
    in_snapshot: int = 0
    unchanged: int = 0
    drift: dict = field(default_factory=lambda: {"missing": 0, "changed": 0, "extra": 0})
    in_flight: dict = field(default_factory=lambda: {"missing": 0, "changed": 0, "extra": 0})
    settled_by_reading: int = 0  # doubts settled by reading the source: this many turned out unchanged
    bytes_read: int = 0
    items: list[dict] = field(default_factory=list)  # {"key", "kind", "detail", "in_flight"}
    error: str | None = None

    @property
    def drifted(self) -> int:
        return sum(self.drift.values())

    def as_dict(self) -> dict:
        return {**self.__dict__, "drifted": self.drifted}

    def summary(self) -> str:
        if self.error:
            return f"{self.job}: {self.error}"
        d, f = self.drift, self.in_flight
        head = (f"{self.job}: snapshot {self.snapshot} of {self.snapshot_time} against {self.listed} source objects: "
                f"{self.unchanged} unchanged; drift: {d['missing']} missing from the vault, {d['changed']} changed since, "
                f"{d['extra']} gone from the source; in flight (within one {_span(self.interval_seconds)} interval): "
                f"{f['missing'] + f['changed'] + f['extra']}")
        if self.settled_by_reading or self.bytes_read:
            head += f"; {self.bytes_read} bytes read to settle doubts ({self.settled_by_reading} found unchanged)"
        return head


def against_source(vault: Vault, job, source, now: float | None = None,
                   read_budget: int = DEFAULT_READ_BUDGET) -> JobDrift:
    """Compare the job's latest snapshot in the vault with what `source` lists now."""
    report = JobDrift(job=job.name)
    history = History.for_job(vault, job.name)
    if not history.seqs:
        report.error = "the vault holds no snapshot of this job yet"
        return report
    root = history.select(None)
    now = time.time() if now is None else now
    started = parse_time(root.started).timestamp()
    finished = parse_time(root.finished).timestamp()
    report.snapshot, report.snapshot_time = root.seq, root.started
    # Fresh until the next scheduled run after this snapshot's has had its time to finish.
    at = datetime.fromtimestamp(started, timezone.utc)
    report.interval_seconds = interval = schedules.period(job.schedule, at)
    due = schedules.next_run(job.schedule, at + timedelta(seconds=1)).timestamp()
    report.fresh = now <= due + max(0.0, finished - started) + max(1.0, 0.05 * interval)
    with tempfile.TemporaryDirectory(prefix="replicator-drift-") as tmp, history.state(root.seq) as state:
        db = sqlite3.connect(Path(tmp) / "drift.db")
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("CREATE TABLE v(key TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID")
        db.execute("CREATE TABLE s(key TEXT PRIMARY KEY, size INTEGER, mtime TEXT, etag TEXT, version TEXT) WITHOUT ROWID")
        with db:
            db.executemany("INSERT INTO v VALUES(?,?)", ((e.key, json.dumps(e.to_json())) for e in state))
        report.in_snapshot = db.execute("SELECT count(*) FROM v").fetchone()[0]
        batch: list[tuple] = []
        for item in source.list():
            batch.append((item.key, item.size, item.mtime, item.etag, item.version))
            if len(batch) >= 2000:
                db.executemany("INSERT OR REPLACE INTO s VALUES(?,?,?,?,?)", batch)
                batch = []
        db.executemany("INSERT OR REPLACE INTO s VALUES(?,?,?,?,?)", batch)
        report.listed = db.execute("SELECT count(*) FROM s").fetchone()[0]

        def recent(mtime: str | None) -> bool:
            if not report.fresh:
                return False
            if mtime is None:
                return True
            try:
                return parse_time(mtime).timestamp() > started - 1.0  # listings may round to whole seconds
            except ValueError:
                return True

        def add(key: str, kind: str, detail: str, in_flight: bool) -> None:
            counts = report.in_flight if in_flight else report.drift
            counts[kind] += 1
            if counts[kind] <= LIST_CAP:
                report.items.append({"key": key, "kind": kind, "detail": detail, "in_flight": in_flight})

        for key, mtime in db.execute("SELECT s.key, s.mtime FROM s WHERE NOT EXISTS (SELECT 1 FROM v WHERE v.key = s.key) "
                                     "ORDER BY s.key"):
            add(key, "missing", f"listed by the source (modified {mtime or 'at an unknown time'}), not in the snapshot",
                recent(mtime))
        for (key,) in db.execute("SELECT v.key FROM v WHERE NOT EXISTS (SELECT 1 FROM s WHERE s.key = v.key) ORDER BY v.key"):
            add(key, "extra", "in the snapshot, no longer listed by the source", report.fresh)
        after = ""
        while True:  # keyset pages: settling a doubt reads the source meanwhile
            rows = db.execute("SELECT s.key, s.size, s.mtime, s.etag, s.version, v.data FROM s JOIN v ON v.key = s.key "
                              "WHERE s.key > ? ORDER BY s.key LIMIT 500", (after,)).fetchall()
            for key, size, mtime, etag, version, data in rows:
                item = SourceItem(key, size, mtime, etag, version)
                entry = Entry.from_json(json.loads(data))
                verdict, detail = _compare(vault, source, item, entry, report, read_budget)
                if verdict:
                    report.unchanged += 1
                else:
                    add(key, "changed", detail, recent(mtime))
            if len(rows) < 500:
                break
            after = rows[-1][0]
        db.close()
    return report


def _compare(vault: Vault, source, item: SourceItem, entry: Entry, report: JobDrift,
             read_budget: int) -> tuple[bool, str]:
    """(same content?, why not). Metadata first; the source's content only when metadata cannot tell."""
    if item.size != entry.size:
        return False, f"size {entry.size} in the snapshot, {item.size} at the source"
    if item.etag and entry.etag:
        if item.etag == entry.etag:
            return True, ""
        if _MD5.match(item.etag) and _MD5.match(entry.etag):
            return False, f"etag {entry.etag} in the snapshot, {item.etag} at the source"
    if item.version and entry.version and item.version == entry.version:
        return True, ""
    if item.etag is None and entry.etag is None and item.mtime and item.mtime == entry.mtime:
        return True, ""
    if report.bytes_read + item.size > read_budget:
        return False, "metadata differs and the read budget for settling doubts is spent (content not compared)"
    try:
        same = _same_content(vault, source, item, entry, report)
    except SourceChanged as e:
        return False, f"changed while it was read ({e})"
    except (SourceError, ReplicatorError) as e:
        return False, f"could not read it to settle a doubt: {e}"
    if same:
        report.settled_by_reading += 1
        return True, ""
    return False, "content differs (metadata differed in a way that cannot be compared; the content was read)"


def _same_content(vault: Vault, source, item: SourceItem, entry: Entry, report: JobDrift) -> bool:
    """Read the source object and compare its chunks' keyed hashes with the manifest's chunk ids."""
    refs = list(entry.chunks)
    buf = bytearray()
    i = 0
    for data in source.read(item, CHUNK_SIZE):
        report.bytes_read += len(data)
        buf += data
        while i < len(refs) and len(buf) >= refs[i].size:
            piece = bytes(buf[:refs[i].size])
            del buf[:refs[i].size]
            if vault.chunk_id(piece) != refs[i].id:
                return False
            i += 1
    while i < len(refs) and refs[i].size == 0:  # an empty object's one empty chunk
        if vault.chunk_id(b"") != refs[i].id:
            return False
        i += 1
    return i == len(refs) and not buf


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"
