"""Prove the vault complete, intact and authentic.

Shallow: every snapshot of every job present is there, authentic, and chained;
every blob any snapshot references exists with its recorded size (one listing,
no per-blob request); the catalogue's heads are not ahead of the vault (rollback).
Deep: also download and decrypt every referenced blob and check each chunk's hash.

Issue 10. Where the vault provider keeps checksums, the same listing also brings each blob's
checksum, compared with the one the provider reported when it was written (catalogue): an object
altered in place is caught without downloading it. `--sample PCT` (deep) reads the blobs least
recently verified on this host first and records what it read (coverage.py); without a catalogue
the sample is random.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from replicator import coverage
from replicator.catalogue import Catalogue
from replicator.engine import unwritten_seq
from replicator.errors import NotFound, ReplicatorError
from replicator.history import History
from replicator.references import VersionTable
from replicator.stores.base import checksums_of
from replicator.vault.format import ChunkRef, data_name
from replicator.vault.manifest import decode_blob_list
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
    # issue 10: provider checksums compared without downloading (None: the store offers none)
    checksums_compared: int | None = None
    checksums_adopted: int = 0  # first seen by this verify (written before checksums were recorded)
    sample_mode: str | None = None  # "rotating" (least recently verified first) or "random" (no catalogue)
    coverage: dict | None = None  # coverage.summary() after this verify

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
                if unwritten_seq(catalogue, name) == head[0] and head[0] not in have:
                    report.warnings.append(f"job {name!r}: snapshot {head[0]} is committed on this host but its "
                                           "root is not in the vault yet (a put failed); the next run puts it")
                    continue
                if not have or have[-1] < head[0]:
                    report.problems.append(f"job {name!r}: snapshot {head[0]} recorded by this host is missing from the vault (deleted or rolled back)")
                elif head[0] in have:
                    try:
                        if History(vault, vault.job_id(name), have).root(head[0])[1] != head[1]:
                            report.problems.append(f"job {name!r}: snapshot {head[0]} differs from the one this host recorded (replaced)")
                    except ReplicatorError:
                        pass  # already reported by the chain check
        _check_blobs(vault, refs, report, deep, sample, workers, only_job is None, catalogue)
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
        for page in root.blobs:
            refs.add(page, meta=True)
        if not vault.can_read_content:  # write-only vault, no private key: the blob lists stand in for entries
            if seq not in forgotten:
                _add_listed_blobs(vault, root, refs, report, f"{label}: snapshot {seq}")
            continue
        if forgotten:
            continue  # references are worked out below, over versions
        try:
            for entry in itertools.chain(history.entries(root), history.held_entries(root)):
                for ref in entry.chunks:
                    refs.add(ref)
        except ReplicatorError as e:
            report.problems.append(f"{label}: snapshot {seq}: manifest page unreadable: {e}")
    if forgotten and vault.can_read_content:
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


def _add_listed_blobs(vault: Vault, root, refs: "_RefTable", report: VerifyReport, label: str) -> None:
    """A write-only vault's blob lists: the blobs a snapshot's entries reference, readable without the
    private key. Checked for presence and size only (content needs the private key)."""
    try:
        for page in root.blobs:
            for blob, size in decode_blob_list(vault.read_meta_page(page)):
                refs.add(ChunkRef(blob, size, 0, 0, 0, ""))
    except ReplicatorError as e:
        report.problems.append(f"{label}: blob list unreadable: {e}")


def _check_blobs(vault: Vault, refs: "_RefTable", report: VerifyReport, deep: bool, sample: float | None,
                 workers: int, count_unreferenced: bool, catalogue: Catalogue | None = None) -> None:
    now = time.time()
    layer = checksums_of(vault.store)
    if layer is None:
        refs.stored(vault.blobs())
    else:  # one listing: sizes and the provider's checksums
        refs.stored((name.rsplit("/", 1)[-1], size, checksum) for name, size, checksum in layer.list_checksums("data/")
                    if name == data_name(name.rsplit("/", 1)[-1]))
    report.blobs_referenced = refs.blob_count()
    for blob, want, have in refs.blob_sizes():
        if have is None:
            report.problems.append(f"blob {data_name(blob)} is missing (referenced by a snapshot)")
        elif have != want:
            report.problems.append(f"blob {data_name(blob)} is {have} bytes, expected {want} (truncated or altered)")
    if count_unreferenced:
        report.unreferenced_blobs, report.unreferenced_bytes = refs.unreferenced()
    if layer is not None and catalogue is not None:
        _check_checksums(refs, catalogue, report, now)
    elif layer is not None:
        report.checksums_compared = 0  # nothing recorded to compare with on this host
    if catalogue is not None:
        catalogue.sync_coverage(refs.referenced_blobs(), now, forget_others=count_unreferenced)
    if not deep:
        if catalogue is not None:
            report.coverage = coverage.summary(catalogue, now)
        return
    if sample is not None and sample < 100:
        eligible = refs.eligible_count()
        k = coverage.sample_size(eligible, sample)
        if catalogue is not None:
            report.sample_mode = "rotating"
            refs.coverage(catalogue.coverage_rows())
            blobs = refs.least_recently_verified(k)
        else:
            report.sample_mode = "random"
            blobs = random.sample([b for b, want, have in refs.blob_sizes() if have == want], k)
    else:
        blobs = [b for b, want, have in refs.blob_sizes() if have == want]

    def check(blob: str) -> tuple[int, list[str]]:
        """Read the blob once and check every chunk referenced in it (a pack holds many)."""
        try:
            if refs.is_meta(blob):  # a write-only vault's blob list: sealed like roots, its own hash domain
                pages = refs.refs_of(blob)
                for ref in pages:
                    vault.read_meta_page(ref)
                return len(pages), []
            return vault.check_blob(blob, refs.refs_of(blob)), []
        except NotFound:
            return 0, [f"blob {data_name(blob)} is missing"]
        except ReplicatorError as e:
            return 0, [str(e)]

    proven: list[str] = []
    with ThreadPoolExecutor(workers) as pool:
        for blob, (n, problems) in zip(blobs, pool.map(check, blobs)):
            report.blobs_read += 1
            report.chunks_checked += n
            report.problems.extend(problems)
            if not problems:
                proven.append(blob)
            if catalogue is not None and len(proven) >= 1000:  # progress survives an interrupted verify
                catalogue.mark_verified(proven, now)
                proven = []
    if catalogue is not None:
        catalogue.mark_verified(proven, now)
        report.coverage = coverage.summary(catalogue, now)


def _check_checksums(refs: "_RefTable", catalogue: Catalogue, report: VerifyReport, now: float) -> None:
    """Compare what the provider reports now with what it reported when each blob was written."""
    refs.recorded((name.rsplit("/", 1)[-1], checksum, origin) for name, checksum, _, origin in catalogue.checksums("data/"))
    report.checksums_compared = 0
    for blob, then, now_sum, origin in refs.checksum_pairs():
        report.checksums_compared += 1
        if then != now_sum:
            # Another kind of checksum (an MD5 ETag become a multipart one) also means a new object.
            when = "when it was written" if origin == "put" else "when verify first listed it"
            report.problems.append(f"blob {data_name(blob)}: the provider now reports checksum {now_sum}, but {then} "
                                   f"{when} (altered in place)")
    adopted = refs.unrecorded_referenced()
    with catalogue.transaction():
        catalogue.record_checksums(((data_name(b), c, now) for b, c in adopted), origin="listing")
    report.checksums_adopted = len(adopted)



class _RefTable:
    """Referenced chunks on disk, so verifying a huge vault needs little memory."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("CREATE TABLE refs(blob TEXT, blob_size INTEGER, ref TEXT, PRIMARY KEY(blob, ref)) WITHOUT ROWID")
        self.db.execute("CREATE TABLE stored(blob TEXT PRIMARY KEY, size INTEGER, checksum TEXT) WITHOUT ROWID")
        self.db.execute("CREATE TABLE recorded(blob TEXT PRIMARY KEY, checksum TEXT, origin TEXT) WITHOUT ROWID")
        self.db.execute("CREATE TABLE cov(blob TEXT PRIMARY KEY, first_seen REAL, verified REAL) WITHOUT ROWID")
        self.db.execute("CREATE TABLE meta(blob TEXT PRIMARY KEY) WITHOUT ROWID")

    def add(self, ref: ChunkRef, meta: bool = False) -> None:
        """A referenced chunk; `meta` for the vault's own pages (blob lists), read by `read_meta_page`."""
        self.db.execute("INSERT OR IGNORE INTO refs VALUES(?,?,?)", (ref.blob, ref.blob_size, json.dumps(ref.to_json())))
        if meta:
            self.db.execute("INSERT OR IGNORE INTO meta VALUES(?)", (ref.blob,))

    def is_meta(self, blob: str) -> bool:
        return self.db.execute("SELECT 1 FROM meta WHERE blob=?", (blob,)).fetchone() is not None

    def stored(self, blobs) -> None:
        """(blob, size) or (blob, size, provider checksum) of every stored blob."""
        self.db.executemany("INSERT OR REPLACE INTO stored VALUES(?,?,?)", (tuple(b) + (None,) * (3 - len(b)) for b in blobs))

    # -- issue 10: checksums and coverage ------------------------------------------------------

    def recorded(self, rows) -> None:
        self.db.executemany("INSERT OR REPLACE INTO recorded VALUES(?,?,?)", rows)

    def checksum_pairs(self):
        """(blob, recorded checksum, checksum the provider lists now, origin) where both exist."""
        return self.db.execute("SELECT s.blob, r.checksum, s.checksum, r.origin FROM stored s JOIN recorded r "
                               "ON r.blob = s.blob WHERE s.checksum IS NOT NULL ORDER BY s.blob")

    def unrecorded_referenced(self) -> list[tuple[str, str]]:
        """(blob, checksum now) of referenced blobs of the right size that have no recorded checksum."""
        return self.db.execute(
            "SELECT s.blob, s.checksum FROM stored s JOIN (SELECT DISTINCT blob, blob_size FROM refs) r "
            "ON r.blob = s.blob AND r.blob_size = s.size WHERE s.checksum IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM recorded c WHERE c.blob = s.blob)").fetchall()

    def referenced_blobs(self):
        return (row[0] for row in self.db.execute("SELECT DISTINCT blob FROM refs"))

    def eligible_count(self) -> int:
        """Referenced blobs present with their recorded size (the ones deep verify reads)."""
        return self.db.execute("SELECT count(*) FROM (SELECT DISTINCT blob, blob_size FROM refs) r "
                               "JOIN stored s ON s.blob = r.blob AND s.size = r.blob_size").fetchone()[0]

    def coverage(self, rows) -> None:
        self.db.executemany("INSERT OR REPLACE INTO cov VALUES(?,?,?)", rows)

    def least_recently_verified(self, k: int) -> list[str]:
        """k eligible blobs: never verified first (oldest first seen first), then least recently verified."""
        return [row[0] for row in self.db.execute(
            "SELECT r.blob FROM (SELECT DISTINCT blob, blob_size FROM refs) r JOIN stored s ON s.blob = r.blob "
            "AND s.size = r.blob_size LEFT JOIN cov c ON c.blob = r.blob "
            "ORDER BY c.verified IS NOT NULL, c.verified, c.first_seen, r.blob LIMIT ?", (k,))]

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
