"""Prove the vault complete, intact and authentic.

Shallow: every snapshot of every job present is there, authentic, and chained;
every blob any snapshot references exists with its recorded size (one listing,
no per-blob request); the catalogue's heads are not ahead of the vault (rollback).
Deep: also download and decrypt every referenced blob and check each chunk's hash.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from replicator.catalogue import Catalogue
from replicator.errors import NotFound, ReplicatorError
from replicator.history import History
from replicator.references import VersionTable
from replicator.vault.format import ChunkRef, data_name
from replicator.vault.vault import Vault


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)  # job -> snapshots checked
    blobs_referenced: int = 0
    blobs_read: int = 0
    chunks_checked: int = 0
    unreferenced_blobs: int = 0
    unreferenced_bytes: int = 0
    repositories_checked: int = 0  # git/svn repositories rebuilt by --deep
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(vault: Vault, catalogue: Catalogue | None, configured_jobs: list[str], only_job: str | None = None,
           deep: bool = False, sample: float | None = None, workers: int = 8) -> VerifyReport:
    report = VerifyReport(deep=deep)
    with tempfile.TemporaryDirectory(prefix="replicator-verify-") as tmp:
        refs = _RefTable(Path(tmp) / "refs.db")
        seqs_by_job = vault.snapshot_seqs()
        for jid, seqs in sorted(seqs_by_job.items()):
            _check_chain(vault, jid, seqs, only_job, refs, report)
        found = set()
        for name in configured_jobs:
            if vault.job_id(name) in seqs_by_job:
                found.add(name)
            elif only_job in (None, name):
                report.warnings.append(f"job {name!r} is configured but has no snapshot in the vault yet")
        if catalogue is not None:
            for name in configured_jobs:
                head = catalogue.head(name)
                have = seqs_by_job.get(vault.job_id(name), [])
                if not head or only_job not in (None, name):
                    continue
                if not have or have[-1] < head[0]:
                    report.problems.append(f"job {name!r}: snapshot {head[0]} recorded by this host is missing from the vault (deleted or rolled back)")
                elif head[0] in have:
                    try:
                        if History(vault, vault.job_id(name), have).root(head[0])[1] != head[1]:
                            report.problems.append(f"job {name!r}: snapshot {head[0]} differs from the one this host recorded (replaced)")
                    except ReplicatorError:
                        pass  # already reported by the chain check
        _check_blobs(vault, refs, report, deep, sample, workers, only_job is None)
        refs.close()
        if deep and (sample is None or sample >= 100):  # git/svn captures: rebuilt with the real tools
            from replicator.repos import verify_repositories

            verify_repositories(vault, seqs_by_job, only_job, report)
    return report


def _check_chain(vault: Vault, jid: str, seqs: list[int], only_job: str | None, refs: "_RefTable",
                 report: VerifyReport) -> None:
    history = History(vault, jid, seqs)
    label = f"job {jid[:8]}"
    prev_digest = None
    try:
        forgotten = history.forgotten()  # pruned: their data may be gone, by design
    except ReplicatorError as e:
        report.problems.append(f"{label}: {e}")
        forgotten = set()
    for seq in range(seqs[-1] + 1):
        if seq not in seqs:
            report.problems.append(f"{label}: snapshot {seq} is missing (snapshots/{jid}/{seq:010d})")
            prev_digest = None
            continue
        try:
            root, digest = history.root(seq)
        except ReplicatorError as e:
            report.problems.append(f"{label}: snapshot {seq}: {e}")
            prev_digest = None
            continue
        label = f"job {root.job!r}"
        if only_job is not None and root.job != only_job:
            return
        if seq > 0 and prev_digest is not None and root.prev != prev_digest:
            report.problems.append(f"{label}: snapshot {seq} does not chain to snapshot {seq - 1} (replaced or reordered)")
        if seq == 0 and (root.prev is not None or not root.checkpoint):
            report.problems.append(f"{label}: snapshot 0 is not the start of a history (history before it was removed)")
        prev_digest = digest
        report.jobs[root.job] = report.jobs.get(root.job, 0) + 1
        for page in root.pages + root.held:
            refs.add(page)
        if forgotten:
            continue  # references are worked out below, over versions
        try:
            for entry in itertools.chain(history.entries(root), history.held_entries(root)):
                for ref in entry.chunks:
                    refs.add(ref)
        except ReplicatorError as e:
            report.problems.append(f"{label}: snapshot {seq}: manifest page unreadable: {e}")
    if forgotten:
        with tempfile.TemporaryDirectory(prefix="replicator-versions-") as tmp:
            table = VersionTable(Path(tmp) / "versions.db")
            try:
                table.add_job(history, forgotten)
                for ref in table.referenced():
                    refs.add(ref)
            except ReplicatorError as e:
                report.problems.append(f"{label}: manifest unreadable: {e}")
            finally:
                table.close()


def _check_blobs(vault: Vault, refs: "_RefTable", report: VerifyReport, deep: bool, sample: float | None,
                 workers: int, count_unreferenced: bool) -> None:
    refs.stored(vault.blobs())
    report.blobs_referenced = refs.blob_count()
    for blob, want, have in refs.blob_sizes():
        if have is None:
            report.problems.append(f"blob {data_name(blob)} is missing (referenced by a snapshot)")
        elif have != want:
            report.problems.append(f"blob {data_name(blob)} is {have} bytes, expected {want} (truncated or altered)")
    if count_unreferenced:
        report.unreferenced_blobs, report.unreferenced_bytes = refs.unreferenced()
    if not deep:
        return
    blobs = [b for b, want, have in refs.blob_sizes() if have == want]
    if sample is not None and sample < 100:
        k = max(1, round(len(blobs) * sample / 100)) if blobs else 0
        blobs = random.sample(blobs, k)

    def check(blob: str) -> tuple[int, list[str]]:
        problems, n = [], 0
        for ref in refs.refs_of(blob):
            try:
                vault.read_chunk(ref)
                n += 1
            except NotFound:
                return n, [f"blob {data_name(blob)} is missing"]
            except ReplicatorError as e:
                return n, [str(e)]
        return n, problems

    with ThreadPoolExecutor(workers) as pool:
        for n, problems in pool.map(check, blobs):
            report.blobs_read += 1
            report.chunks_checked += n
            report.problems.extend(problems)


class _RefTable:
    """Referenced chunks on disk, so verifying a huge vault needs little memory."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("CREATE TABLE refs(blob TEXT, blob_size INTEGER, ref TEXT, PRIMARY KEY(blob, ref)) WITHOUT ROWID")
        self.db.execute("CREATE TABLE stored(blob TEXT PRIMARY KEY, size INTEGER) WITHOUT ROWID")

    def add(self, ref: ChunkRef) -> None:
        self.db.execute("INSERT OR IGNORE INTO refs VALUES(?,?,?)", (ref.blob, ref.blob_size, json.dumps(ref.to_json())))

    def stored(self, blobs) -> None:
        self.db.executemany("INSERT OR REPLACE INTO stored VALUES(?,?)", blobs)

    def blob_count(self) -> int:
        return self.db.execute("SELECT count(DISTINCT blob) FROM refs").fetchone()[0]

    def blob_sizes(self):
        return self.db.execute("SELECT r.blob, r.blob_size, s.size FROM (SELECT DISTINCT blob, blob_size FROM refs) r "
                               "LEFT JOIN stored s ON s.blob = r.blob ORDER BY r.blob").fetchall()

    def unreferenced(self) -> tuple[int, int]:
        return tuple(self.db.execute("SELECT count(*), coalesce(sum(size),0) FROM stored s "
                                     "WHERE NOT EXISTS (SELECT 1 FROM refs r WHERE r.blob = s.blob)").fetchone())

    def refs_of(self, blob: str) -> list[ChunkRef]:
        rows = self.db.execute("SELECT ref FROM refs WHERE blob=?", (blob,)).fetchall()
        return [ChunkRef.from_json(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        self.db.close()
