"""Which chunks the kept snapshots still need: shared by verify and prune.

One pass over a job's manifests (oldest first) turns entries into versions, each live
over a half-open range of snapshots [from_seq, to_seq). A version's chunks are referenced
iff some kept (not forgotten) snapshot falls in its range. Manifest pages and the held
pages of kept snapshots are always referenced. Everything is on disk (SQLite), so memory
does not grow with the number of objects.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator

from replicator.history import History
from replicator.vault.format import ChunkRef


class VersionTable:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS versions(job TEXT, key TEXT, from_seq INTEGER, to_seq INTEGER, chunks TEXT);
            CREATE INDEX IF NOT EXISTS open_versions ON versions(job, key, to_seq);
            CREATE TABLE IF NOT EXISTS kept(job TEXT, seq INTEGER, PRIMARY KEY(job, seq));
            CREATE TABLE IF NOT EXISTS extra(ref TEXT PRIMARY KEY);
        """)

    def add_job(self, history: History, forgotten: set[int]) -> None:
        """Record every version of one job, which snapshots are kept, and the pages they need."""
        job, open_ = history.job_id, 2**62
        with self.db:
            for seq in history.seqs:
                root = history.root(seq)[0]
                for page in root.pages + root.blobs:  # blob lists (write-only vaults) are pages too
                    self._extra(page)
                if seq not in forgotten:
                    self.db.execute("INSERT OR IGNORE INTO kept VALUES(?, ?)", (job, seq))
                    for page in root.held:
                        self._extra(page)
                    for entry in history.held_entries(root):
                        for ref in entry.chunks:
                            self._extra(ref)
                if root.checkpoint:  # everything not restated by the checkpoint ends here
                    self.db.execute("CREATE TEMP TABLE IF NOT EXISTS seen(key TEXT PRIMARY KEY)")
                    self.db.execute("DELETE FROM seen")
                for entry in history.entries(root):
                    chunks = json.dumps([r.to_json() for r in entry.chunks])
                    row = self.db.execute("SELECT rowid, chunks FROM versions WHERE job=? AND key=? AND to_seq=?",
                                          (job, entry.key, open_)).fetchone()
                    if root.checkpoint:
                        self.db.execute("INSERT OR IGNORE INTO seen VALUES(?)", (entry.key,))
                    if row and not entry.deleted and row[1] == chunks:
                        continue  # restated unchanged (a checkpoint)
                    if row:
                        self.db.execute("UPDATE versions SET to_seq=? WHERE rowid=?", (seq, row[0]))
                    if not entry.deleted:
                        self.db.execute("INSERT INTO versions VALUES(?,?,?,?,?)", (job, entry.key, seq, open_, chunks))
                if root.checkpoint:
                    self.db.execute("UPDATE versions SET to_seq=? WHERE job=? AND to_seq=? AND key NOT IN "
                                    "(SELECT key FROM seen)", (seq, job, open_))

    def _extra(self, ref: ChunkRef) -> None:
        self.db.execute("INSERT OR IGNORE INTO extra VALUES(?)", (json.dumps(ref.to_json()),))

    def referenced(self) -> Iterator[ChunkRef]:
        """Every chunk reference a kept snapshot needs (each version's refs, then pages), possibly repeated."""
        q = ("SELECT v.chunks FROM versions v WHERE EXISTS (SELECT 1 FROM kept k WHERE k.job = v.job "
             "AND k.seq >= v.from_seq AND k.seq < v.to_seq)")
        for (chunks,) in self.db.execute(q):
            for c in json.loads(chunks):
                yield ChunkRef.from_json(c)
        for (ref,) in self.db.execute("SELECT ref FROM extra"):
            yield ChunkRef.from_json(json.loads(ref))

    def close(self) -> None:
        self.db.close()
