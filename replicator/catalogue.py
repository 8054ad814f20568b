"""The catalogue: a local SQLite cache of what the vault holds. The only SQL in the program.

It speeds up planning (diff a listing against the last snapshot without reading
the vault) and lets an interrupted run resume without redoing finished objects.
It is never the source of truth: a new host rebuilds it from the vault's manifests.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from replicator.errors import ReplicatorError
from replicator.sources.base import SourceItem
from replicator.vault.format import ChunkRef
from replicator.vault.manifest import Entry

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);
-- the head snapshot of each job, as the vault holds it
CREATE TABLE IF NOT EXISTS snapshots(job TEXT, seq INTEGER, hash TEXT, started TEXT, finished TEXT,
    checkpoint INTEGER, delta INTEGER, live INTEGER, PRIMARY KEY(job, seq));
-- the live state of each job at its head snapshot
CREATE TABLE IF NOT EXISTS entries(job TEXT, key TEXT, size INTEGER, mtime TEXT, etag TEXT, version TEXT,
    chunks TEXT, PRIMARY KEY(job, key)) WITHOUT ROWID;
-- objects copied by a run that has not yet written its snapshot
CREATE TABLE IF NOT EXISTS pending(job TEXT, key TEXT, size INTEGER, mtime TEXT, etag TEXT, version TEXT,
    chunks TEXT, PRIMARY KEY(job, key)) WITHOUT ROWID;
-- the current run's listing
CREATE TABLE IF NOT EXISTS listing(job TEXT, key TEXT, size INTEGER, mtime TEXT, etag TEXT, version TEXT,
    PRIMARY KEY(job, key)) WITHOUT ROWID;
-- chunk id -> reference, for dedup across objects and runs
CREATE TABLE IF NOT EXISTS chunks(id TEXT PRIMARY KEY, ref TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs(job TEXT, started TEXT, finished TEXT, ok INTEGER, error TEXT,
    copied INTEGER, bytes INTEGER, tombstones INTEGER);
-- [vault.immutability]: vault objects referenced by snapshots and how long the provider protects
-- them (unix time; NULL = not yet read back). Only objects near the end are touched (immutability.py).
CREATE TABLE IF NOT EXISTS retention(name TEXT PRIMARY KEY, until REAL) WITHOUT ROWID;
-- issue 10: the checksum the vault provider reported for each object when it was written (origin 'put')
-- or first listed by verify (origin 'listing', trust on first use); unix time recorded
CREATE TABLE IF NOT EXISTS checksums(name TEXT PRIMARY KEY, checksum TEXT, recorded REAL, origin TEXT) WITHOUT ROWID;
-- issue 10: deep-verify coverage of referenced blobs: first seen (unix time) and last read in full (NULL: never)
CREATE TABLE IF NOT EXISTS coverage(blob TEXT PRIMARY KEY, first_seen REAL, verified REAL) WITHOUT ROWID;
-- issue 9: the keys an event run looked at (a partial listing). While a job has rows here, its
-- listing covers only these keys: tombstones and the end of the run are restricted to them.
CREATE TABLE IF NOT EXISTS scope(job TEXT, key TEXT, PRIMARY KEY(job, key)) WITHOUT ROWID;
-- issue 9: the net change event runs made to each key since the job's last full run, as that run's
-- listing would see it: 'created' (not live then), 'deleted' or 'rewritten' (live then); suspicious =
-- a rewrite that looked like encryption or a rename to a new extension. For the breaker (change_counts).
CREATE TABLE IF NOT EXISTS event_changes(job TEXT, key TEXT, what TEXT, suspicious INTEGER,
    PRIMARY KEY(job, key)) WITHOUT ROWID;
"""



def same(a: str, b: str) -> str:
    """SQL: rows a and b describe the same content (etag, or without one mtime, and size)."""
    return (f"({a}.size = {b}.size AND ({a}.etag = {b}.etag OR "
            f"({a}.etag IS NULL AND {b}.etag IS NULL AND {a}.mtime IS {b}.mtime)))")


class Catalogue:
    def __init__(self, path: Path):
        self.path = path
        self.carry: int | None = None  # set_carry (issue 9)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per run; concurrent runs of different jobs wait for each other's commits.
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
            self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise ReplicatorError(f"cannot open the catalogue {path}: {e}") from None

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        return _Tx(self.db)

    # -- identity ------------------------------------------------------------------

    def bind(self, vault_id: str) -> None:
        """A catalogue belongs to one vault; pointed at another, it starts empty."""
        row = self.db.execute("SELECT v FROM meta WHERE k='vault_id'").fetchone()
        if row and row[0] == vault_id:
            return
        with self.transaction():
            for t in ("snapshots", "entries", "pending", "listing", "chunks", "runs", "meta", "retention",
                      "checksums", "coverage", "scope", "event_changes"):
                self.db.execute(f"DELETE FROM {t}")
            self.db.execute("INSERT INTO meta VALUES('vault_id', ?)", (vault_id,))

    # -- snapshots and state -------------------------------------------------------

    def head(self, job: str) -> tuple[int, str] | None:
        row = self.db.execute("SELECT seq, hash FROM snapshots WHERE job=? ORDER BY seq DESC LIMIT 1", (job,)).fetchone()
        return (row[0], row[1]) if row else None

    def since_checkpoint(self, job: str) -> tuple[int, int]:
        """(snapshots, delta entries) written since the last checkpoint, inclusive of it."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(delta), 0) FROM snapshots WHERE job=? AND seq >= "
            "(SELECT coalesce(max(seq), 0) FROM snapshots WHERE job=? AND checkpoint=1)", (job, job)).fetchone()
        return row[0], row[1]

    def record_snapshot(self, job: str, seq: int, hash_: str, started: str, finished: str,
                        checkpoint: bool, delta: int) -> None:
        live = self.db.execute("SELECT count(*) FROM entries WHERE job=?", (job,)).fetchone()[0]
        self.db.execute("INSERT OR REPLACE INTO snapshots VALUES(?,?,?,?,?,?,?,?)",
                        (job, seq, hash_, started, finished, int(checkpoint), delta, live))

    def reset_job(self, job: str) -> None:
        for t in ("snapshots", "entries"):
            self.db.execute(f"DELETE FROM {t} WHERE job=?", (job,))

    def apply(self, job: str, entries: Iterable[Entry]) -> int:
        """Apply manifest entries (changes and tombstones) to a job's state; also index their chunks."""
        n = 0
        for e in entries:
            n += 1
            if e.deleted:
                self.db.execute("DELETE FROM entries WHERE job=? AND key=?", (job, e.key))
                continue
            self.db.execute("INSERT OR REPLACE INTO entries VALUES(?,?,?,?,?,?,?)",
                            (job, e.key, e.size, e.mtime, e.etag, e.version, _refs_json(e.chunks)))
            self.add_chunks(e.chunks)
        return n

    def entries(self, job: str) -> Iterator[Entry]:
        for row in self.entry_rows(job):
            yield _entry(row)

    def entry_rows(self, job: str) -> Iterator[tuple]:
        """A job's live entries as rows (key, size, mtime, etag, version, chunks JSON), in key order."""
        return self.db.execute("SELECT key, size, mtime, etag, version, chunks FROM entries WHERE job=? ORDER BY key", (job,))

    def live_count(self, job: str) -> int:
        return self.db.execute("SELECT count(*) FROM entries WHERE job=?", (job,)).fetchone()[0]

    # -- chunks ---------------------------------------------------------------------

    def add_chunks(self, refs: Iterable[ChunkRef]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO chunks VALUES(?, ?)", [(r.id, r.json_text()) for r in refs])

    def chunk(self, chunk_id: str) -> ChunkRef | None:
        row = self.db.execute("SELECT ref FROM chunks WHERE id=?", (chunk_id,)).fetchone()
        return ChunkRef.from_json(json.loads(row[0])) if row else None

    def stored_blobs(self) -> tuple[int, int]:
        """(blobs, bytes) of the content blobs the chunk index refers to (a pack counted once).
        One pass over the index: about a second per million chunks."""
        return tuple(self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0) FROM (SELECT max(json_extract(ref, '$[1]')) AS size "
            "FROM chunks GROUP BY json_extract(ref, '$[0]'))").fetchone())

    # -- a run ------------------------------------------------------------------------

    def start_listing(self, job: str, progress: dict | None = None) -> None:
        """Forget any earlier listing; `progress` (JSON-able) marks a listing that can be resumed."""
        with self.transaction():
            self.db.execute("DELETE FROM listing WHERE job=?", (job,))
            self.db.execute("DELETE FROM scope WHERE job=?", (job,))  # a full listing: no partial scope
            self.set_meta(_LISTING + job, None if progress is None else json.dumps(progress))

    def start_partial_listing(self, job: str, keys: Iterable[str]) -> None:
        """An event run (issue 9): the listing that follows covers exactly `keys` (those still in the
        source are added with add_listing); keys outside them are neither tombstoned nor touched."""
        keys = list(keys)
        if not keys:  # an empty scope would read as a full listing of nothing: every key tombstoned
            raise ValueError("a partial listing needs at least one key")
        with self.transaction():
            self.db.execute("DELETE FROM listing WHERE job=?", (job,))
            self.db.execute("DELETE FROM scope WHERE job=?", (job,))
            self.db.executemany("INSERT OR IGNORE INTO scope VALUES(?, ?)", ((job, k) for k in keys))
            self.set_meta(_LISTING + job, None)  # (event_runs.run_events waits while a full listing can resume)
        self.carry = None

    def set_carry(self, live_before: int) -> None:
        """Judge this partial run's changes together with the net changes earlier event runs made since
        the last full run (table event_changes), against `live_before`, the live count before the first
        of them: what a full run would have seen at once (change_counts). Issue 9."""
        self.carry = live_before

    def prepare_event_changes(self, job: str, suspicious: Iterable[str]) -> None:
        """From the prepared delta (before it is applied): each key's net change since the last full
        run, into temp table ev_new, for commit_event_changes. A key created and deleted again since
        then is no change at all; one deleted and created again is a rewrite."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS ev_new(key TEXT PRIMARY KEY, what TEXT, suspicious INTEGER)")
        self.db.execute("DELETE FROM ev_new")
        self.db.execute("""INSERT INTO ev_new SELECT d.key,
                  CASE WHEN c.what = 'created' THEN (CASE WHEN d.deleted THEN NULL ELSE 'created' END)
                       WHEN d.deleted THEN 'deleted'
                       WHEN c.what IS NOT NULL THEN 'rewritten'
                       WHEN EXISTS (SELECT 1 FROM entries e WHERE e.job=:job AND e.key=d.key) THEN 'rewritten'
                       ELSE 'created' END,
                  coalesce(c.suspicious, 0)
                FROM delta d LEFT JOIN event_changes c ON c.job=:job AND c.key=d.key""", {"job": job})
        self.db.executemany("UPDATE ev_new SET suspicious=1 WHERE key=?", ((k,) for k in suspicious))

    def commit_event_changes(self, job: str, suspicious: Iterable[str] = ()) -> None:
        """Record ev_new, with more keys marked suspicious (inside the caller's transaction, after the snapshot)."""
        self.db.executemany("UPDATE ev_new SET suspicious=1 WHERE key=?", ((k,) for k in suspicious))
        self.db.execute("DELETE FROM event_changes WHERE job=? AND key IN (SELECT key FROM ev_new)", (job,))
        self.db.execute("INSERT INTO event_changes SELECT ?, key, what, suspicious FROM ev_new WHERE what IS NOT NULL", (job,))

    def partial(self, job: str) -> bool:
        return self.db.execute("SELECT 1 FROM scope WHERE job=? LIMIT 1", (job,)).fetchone() is not None

    def listing_progress(self, job: str) -> dict | None:
        """The progress of an unfinished resumable listing (a run killed while listing), if any."""
        text = self.meta(_LISTING + job)
        return None if text is None else json.loads(text)

    def add_listing(self, job: str, items: list[SourceItem], progress: dict | None = None) -> None:
        """Record listed items, and with them (same transaction) how far the listing got."""
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO listing VALUES(?,?,?,?,?,?)",
                                [(job, i.key, i.size, i.mtime, i.etag, i.version) for i in items])
            if progress is not None:
                self.set_meta(_LISTING + job, json.dumps(progress))

    def listing_count(self, job: str) -> int:
        return self.db.execute("SELECT count(*) FROM listing WHERE job=?", (job,)).fetchone()[0]

    def end_listing(self, job: str) -> None:
        """The listing is complete: a later crash starts the next run's listing afresh."""
        with self.transaction():
            self.set_meta(_LISTING + job, None)

    def to_copy(self, job: str, batch: int = 1000) -> Iterator[SourceItem]:
        """Listed items that are neither unchanged at the head nor already copied by an unfinished run.
        Fetched in key-ordered batches, so memory holds one batch and writes may go on meanwhile."""
        q = f"""SELECT a.key, a.size, a.mtime, a.etag, a.version FROM listing a
                WHERE a.job=:job AND a.key > :after
                  AND NOT EXISTS (SELECT 1 FROM entries b WHERE b.job=:job AND b.key=a.key AND {same("a", "b")})
                  AND NOT EXISTS (SELECT 1 FROM pending b WHERE b.job=:job AND b.key=a.key AND {same("a", "b")})
                ORDER BY a.key LIMIT :n"""
        after = ""
        while True:
            rows = self.db.execute(q, {"job": job, "after": after, "n": batch}).fetchall()
            for row in rows:
                yield SourceItem(*row)
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def count_to_copy(self, job: str) -> tuple[int, int]:
        q = f"""SELECT count(*), coalesce(sum(a.size), 0) FROM listing a WHERE a.job=:job
                  AND NOT EXISTS (SELECT 1 FROM entries b WHERE b.job=:job AND b.key=a.key AND {same("a", "b")})
                  AND NOT EXISTS (SELECT 1 FROM pending b WHERE b.job=:job AND b.key=a.key AND {same("a", "b")})"""
        return tuple(self.db.execute(q, {"job": job}).fetchone())

    def add_copied(self, job: str, copied: list[tuple[SourceItem, list[ChunkRef]]]) -> None:
        """Record copied items as pending and index their chunks: together, so that every pending
        item's chunks are in the chunk index (apply_delta counts on it)."""
        self.db.executemany("INSERT OR REPLACE INTO pending VALUES(?,?,?,?,?,?,?)",
                            [(job, i.key, i.size, i.mtime, i.etag, i.version, _refs_json(refs)) for i, refs in copied])
        self.add_chunks(r for _, refs in copied for r in refs)

    def prepare_delta(self, job: str) -> int:
        """Fix what the next snapshot records into table `delta`: copied items that match the
        listing and differ from the head, and tombstones for head entries no longer listed."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS delta(key TEXT PRIMARY KEY, size INTEGER, mtime TEXT,"
                        " etag TEXT, version TEXT, chunks TEXT, deleted INTEGER)")
        self.db.execute("DELETE FROM delta")
        self.db.execute(f"""INSERT INTO delta SELECT a.key, a.size, a.mtime, a.etag, a.version, a.chunks, 0
                  FROM pending a JOIN listing l ON l.job=a.job AND l.key=a.key AND {same("a", "l")}
                  WHERE a.job=:job
                    AND NOT EXISTS (SELECT 1 FROM entries b WHERE b.job=:job AND b.key=a.key AND {same("a", "b")})""",
                        {"job": job})
        self.db.execute("""INSERT INTO delta SELECT key, 0, NULL, NULL, NULL, '[]', 1 FROM entries e
                  WHERE job=:job AND NOT EXISTS (SELECT 1 FROM listing l WHERE l.job=:job AND l.key=e.key)
                    AND (NOT EXISTS (SELECT 1 FROM scope s WHERE s.job=:job)
                         OR EXISTS (SELECT 1 FROM scope s WHERE s.job=:job AND s.key=e.key))""",
                        {"job": job})
        return self.db.execute("SELECT count(*) FROM delta").fetchone()[0]

    def delta(self) -> Iterator[Entry]:
        """The prepared delta, in key order."""
        for row in self.delta_rows():
            yield Entry(row[0], 0, deleted=True) if row[6] else _entry(row[:6])

    def delta_rows(self) -> Iterator[tuple]:
        """The prepared delta as rows (key, size, mtime, etag, version, chunks JSON, deleted), in key order."""
        return self.db.execute("SELECT key, size, mtime, etag, version, chunks, deleted FROM delta ORDER BY key")

    def apply_delta(self, job: str) -> None:
        """Apply the prepared delta to the job's entries, in SQL: apply(job, delta()) without reading
        a row into Python. Its chunks are indexed already (add_copied)."""
        self.db.execute("DELETE FROM entries WHERE job=? AND key IN (SELECT key FROM delta WHERE deleted=1)", (job,))
        self.db.execute("INSERT OR REPLACE INTO entries SELECT ?, key, size, mtime, etag, version, chunks"
                        " FROM delta WHERE deleted=0", (job,))

    def delta_counts(self) -> tuple[int, int, int]:
        """(changed, their bytes, tombstones) in the prepared delta."""
        return tuple(self.db.execute("SELECT coalesce(sum(deleted=0),0), coalesce(sum(size),0), coalesce(sum(deleted),0) FROM delta").fetchone())

    def change_counts(self, job: str) -> tuple[int, int, int, int]:
        """For the breaker, from the prepared delta: (live before, deleted, rewritten, renamed to a new
        extension: a new key that is a vanished key plus `.ext`)."""
        live = self.live_count(job)
        deleted = self.db.execute("SELECT count(*) FROM delta WHERE deleted=1").fetchone()[0]

        rewritten = self.db.execute("SELECT count(*) FROM delta d JOIN entries e ON e.job=? AND e.key=d.key "
                                    "WHERE d.deleted=0", (job,)).fetchone()[0]
        renamed = self.db.execute(
            "SELECT count(DISTINCT o.key) FROM delta o JOIN delta n ON n.deleted=0 AND o.deleted=1 "
            "AND n.key > o.key || '.' AND n.key < o.key || '/' AND instr(substr(n.key, length(o.key) + 2), '/') = 0 "
            "AND substr(n.key, 1, length(o.key) + 1) = o.key || '.'").fetchone()[0]
        if self.carry is not None and self.partial(job):  # an event run: net of earlier event runs and this one
            return (max(self.carry, 1),) + tuple(self.db.execute("""SELECT
                  coalesce(sum(what = 'deleted'), 0), coalesce(sum(what = 'rewritten'), 0), coalesce(sum(suspicious), 0)
                FROM (SELECT what, suspicious FROM ev_new
                      UNION ALL SELECT what, suspicious FROM event_changes c
                      WHERE c.job=? AND c.key NOT IN (SELECT key FROM ev_new))""", (job,)).fetchone())
        return live, deleted, rewritten, renamed

    def renamed_keys(self) -> list[str]:
        """New keys in the prepared delta that are a vanished key plus `.ext` (change_counts' renames)."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT n.key FROM delta o JOIN delta n ON n.deleted=0 AND o.deleted=1 "
            "AND n.key > o.key || '.' AND n.key < o.key || '/' AND instr(substr(n.key, length(o.key) + 2), '/') = 0 "
            "AND substr(n.key, 1, length(o.key) + 1) = o.key || '.'")]

    def rewrites(self, job: str) -> Iterator[tuple[Entry, Entry]]:
        """(old, new) for every rewritten key in the prepared delta."""
        q = ("SELECT e.key, e.size, e.mtime, e.etag, e.version, e.chunks, d.size, d.mtime, d.etag, d.version, d.chunks "
             "FROM delta d JOIN entries e ON e.job=? AND e.key=d.key WHERE d.deleted=0")
        for row in self.db.execute(q, (job,)):
            yield _entry(row[:6]), _entry((row[0],) + tuple(row[6:]))

    def hold(self, job: str) -> int:
        """A tripped breaker: take tombstones and rewrites out of the delta; the rewrites move to table
        `held` (recorded, not live). Returns how many changes were held."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS held(key TEXT PRIMARY KEY, size INTEGER, mtime TEXT,"
                        " etag TEXT, version TEXT, chunks TEXT)")
        self.db.execute("DELETE FROM held")
        self.db.execute("INSERT INTO held SELECT d.key, d.size, d.mtime, d.etag, d.version, d.chunks FROM delta d "
                        "JOIN entries e ON e.job=? AND e.key=d.key WHERE d.deleted=0", (job,))
        n = self.db.execute("SELECT count(*) FROM delta WHERE deleted=1").fetchone()[0]
        self.db.execute("DELETE FROM delta WHERE deleted=1 OR key IN (SELECT key FROM held)")
        return n + self.db.execute("SELECT count(*) FROM held").fetchone()[0]

    def delta_blobs(self, with_held: bool) -> Iterator[tuple[str, int]]:
        """(blob, stored size) of every blob the prepared delta's (and held) entries reference, once each."""
        held = " UNION ALL SELECT chunks FROM held" if with_held else ""
        yield from self.db.execute(
            "SELECT DISTINCT json_extract(c.value, '$[0]'), json_extract(c.value, '$[1]') "
            f"FROM (SELECT chunks FROM delta{held}) d, json_each(d.chunks) c ORDER BY 1")

    def held(self) -> Iterator[Entry]:
        for row in self.db.execute("SELECT key, size, mtime, etag, version, chunks FROM held ORDER BY key"):
            yield _entry(row)

    def finish_run(self, job: str, keep_held: bool = False) -> None:
        """Forget the run's listing and pending copies (held ones are kept: no need to read them again).
        After an event run only the scoped keys' copies are forgotten: an interrupted full run's stay."""
        if self.partial(job):
            held = " AND key NOT IN (SELECT key FROM held)" if keep_held else ""
            self.db.execute(f"DELETE FROM pending WHERE job=? AND key IN (SELECT key FROM scope WHERE job=?){held}", (job, job))
            self.db.execute("DELETE FROM listing WHERE job=?", (job,))
            self.db.execute("DELETE FROM scope WHERE job=?", (job,))
            return
        self.db.execute("DELETE FROM meta WHERE k=?", (f"events:carry:{job}",))  # a full run judged everything anew
        self.db.execute("DELETE FROM event_changes WHERE job=?", (job,))
        if keep_held:
            self.db.execute("DELETE FROM pending WHERE job=? AND key NOT IN (SELECT key FROM held)", (job,))
        else:
            self.db.execute("DELETE FROM pending WHERE job=?", (job,))
        self.db.execute("DELETE FROM listing WHERE job=?", (job,))

    def record_run(self, job: str, started: str, finished: str, ok: bool, error: str | None,
                   copied: int, nbytes: int, tombstones: int) -> None:
        self.db.execute("INSERT INTO runs VALUES(?,?,?,?,?,?,?,?)",
                        (job, started, finished, int(ok), error, copied, nbytes, tombstones))

    def set_meta(self, key: str, value: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES(?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return row[0] if row else None

    # -- retention of vault objects ([vault.immutability]) -----------------------------------

    def track_retention(self, names: Iterable[str]) -> None:
        """Vault objects that must stay protected; ones already known keep their `until`."""
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO retention VALUES(?, NULL)", ((n,) for n in names))

    def replace_retention(self, names: Iterable[str]) -> None:
        """Track exactly `names` (repeats allowed): others are dropped, known ones keep their `until`."""
        with self.transaction():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS retention_keep(name TEXT PRIMARY KEY) WITHOUT ROWID")
            self.db.execute("DELETE FROM retention_keep")
            self.db.executemany("INSERT OR IGNORE INTO retention_keep VALUES(?)", ((n,) for n in names))
            self.db.execute("DELETE FROM retention WHERE name NOT IN (SELECT name FROM retention_keep)")
            self.db.execute("INSERT OR IGNORE INTO retention SELECT name, NULL FROM retention_keep")
            self.db.execute("DELETE FROM retention_keep")

    def retention_due(self, before: float, after: str = "", limit: int = 10000) -> list[str]:
        """Tracked objects whose protection is unknown or ends before `before` (unix time), by name after `after`."""
        return [r[0] for r in self.db.execute(
            "SELECT name FROM retention WHERE (until IS NULL OR until < ?) AND name > ? ORDER BY name LIMIT ?",
            (before, after, limit))]

    def set_retention(self, items: Iterable[tuple[str, float]]) -> None:
        with self.transaction():
            self.db.executemany("UPDATE retention SET until=? WHERE name=?", ((u, n) for n, u in items))

    def retention_summary(self) -> tuple[int, float | None]:
        """(objects tracked, earliest end of protection among them)."""
        return tuple(self.db.execute("SELECT count(*), min(until) FROM retention").fetchone())

    # -- provider checksums and verify coverage (issue 10; coverage.py, verify.py) ----------------

    def record_checksums(self, items: Iterable[tuple[str, str, float]], origin: str = "put") -> None:
        """(store object name, provider checksum, unix time). What a put just wrote replaces an older record
        (a name written again after prune removed it); what a listing adopts never does."""
        verb = "REPLACE" if origin == "put" else "IGNORE"
        self.db.executemany(f"INSERT OR {verb} INTO checksums VALUES(?,?,?,?)", ((n, c, t, origin) for n, c, t in items))

    def checksums(self, prefix: str = "") -> Iterator[tuple[str, str, float, str]]:
        """(name, checksum, recorded, origin) of recorded objects whose name starts with prefix."""
        yield from self.db.execute("SELECT name, checksum, recorded, origin FROM checksums WHERE substr(name,1,?)=?",
                                   (len(prefix), prefix))

    def coverage_rows(self) -> Iterator[tuple[str, float, float | None]]:
        """(blob, first seen, last verified or None) of every tracked blob."""
        yield from self.db.execute("SELECT blob, first_seen, verified FROM coverage")

    def sync_coverage(self, blobs: Iterable[str], now: float, forget_others: bool) -> None:
        """Track these referenced blobs (new ones: first seen when their checksum was recorded at write
        time, else now); with forget_others, blobs no longer referenced are dropped."""
        with self.transaction():
            self.db.execute("CREATE TEMP TABLE IF NOT EXISTS cov_seen(blob TEXT PRIMARY KEY) WITHOUT ROWID")
            self.db.execute("DELETE FROM cov_seen")
            self.db.executemany("INSERT OR IGNORE INTO cov_seen VALUES(?)", ((b,) for b in blobs))
            self.db.execute("""INSERT OR IGNORE INTO coverage SELECT s.blob, coalesce((SELECT c.recorded FROM checksums c
                                 WHERE c.name = 'data/' || substr(s.blob, 1, 2) || '/' || s.blob), :now), NULL
                               FROM cov_seen s""", {"now": now})
            if forget_others:
                self.db.execute("DELETE FROM coverage WHERE blob NOT IN (SELECT blob FROM cov_seen)")
            self.db.execute("DELETE FROM cov_seen")

    def mark_verified(self, blobs: Iterable[str], when: float) -> None:
        with self.transaction():
            self.db.executemany("UPDATE coverage SET verified=? WHERE blob=?", ((when, b) for b in blobs))

    def coverage_summary(self, since: float) -> tuple[int, int, int, float | None]:
        """(tracked blobs, read in full since `since`, never read, oldest of last-read-or-first-seen)."""
        return tuple(self.db.execute(
            "SELECT count(*), coalesce(sum(verified >= ?), 0), coalesce(sum(verified IS NULL), 0), "
            "min(coalesce(verified, first_seen)) FROM coverage", (since,)).fetchone())

    # -- imported history (issue 10; history_import.py) -------------------------------------------

    def snapshot_started(self, job: str, seq: int) -> str | None:
        row = self.db.execute("SELECT started FROM snapshots WHERE job=? AND seq=?", (job, seq)).fetchone()
        return row[0] if row else None

    def entry(self, job: str, key: str) -> Entry | None:
        row = self.db.execute("SELECT key, size, mtime, etag, version, chunks FROM entries WHERE job=? AND key=?",
                              (job, key)).fetchone()
        return _entry(row) if row else None

    def last_runs(self, job: str) -> dict:
        out = {}
        row = self.db.execute("SELECT finished FROM runs WHERE job=? AND ok=1 ORDER BY rowid DESC LIMIT 1", (job,)).fetchone()
        out["last_success"] = row[0] if row else None
        row = self.db.execute("SELECT finished, error FROM runs WHERE job=? AND ok=0 ORDER BY rowid DESC LIMIT 1", (job,)).fetchone()
        out["last_error"] = {"time": row[0], "error": row[1]} if row else None
        return out


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, typ, e, tb):
        self.db.execute("COMMIT" if e is None else "ROLLBACK")
        return False


_LISTING = "listing-progress:"


def _refs_json(refs: Iterable[ChunkRef]) -> str:
    return "[" + ",".join(r.json_text() for r in refs) + "]"


def _entry(row) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], tuple(ChunkRef.from_json(c) for c in json.loads(row[5])))
