"""A job's history as the vault holds it: its chain of snapshots and the state at any of them.

Read straight from the vault (no catalogue needed), so a new host with only the
config and the key file can list and restore. States are rebuilt in a temporary
SQLite file, so memory does not grow with the number of objects.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from replicator.errors import IntegrityError, NotFound, ReplicatorError, UsageError
from replicator.units import parse_time
from replicator.vault.format import ChunkRef, data_name, decode_record
from replicator.vault.manifest import Entry, SnapshotRoot, decode_blob_list, decode_page
from replicator.vault.vault import Vault


class History:
    def __init__(self, vault: Vault, job_id: str, seqs: list[int]):
        self.vault, self.job_id, self.seqs = vault, job_id, seqs
        self._roots: dict[int, tuple[SnapshotRoot, str]] = {}
        self._forgotten: set[int] | None = None

    @classmethod
    def for_job(cls, vault: Vault, job_name: str) -> "History":
        jid = vault.job_id(job_name)
        return cls(vault, jid, vault.snapshot_seqs(jid).get(jid, []))

    def roots(self) -> list[SnapshotRoot]:
        """Every snapshot root, oldest first (read concurrently; each is one small GET)."""
        missing = [s for s in self.seqs if s not in self._roots]
        with ThreadPoolExecutor(16) as pool:
            for seq, got in zip(missing, pool.map(lambda s: self.vault.read_snapshot(self.job_id, s), missing)):
                self._roots[seq] = got
        return [self._roots[s][0] for s in self.seqs]

    def root(self, seq: int) -> tuple[SnapshotRoot, str]:
        if seq not in self._roots:
            self._roots[seq] = self.vault.read_snapshot(self.job_id, seq)
        return self._roots[seq]

    def referenced_blobs(self, root: SnapshotRoot) -> Iterator[str]:
        """Blob ids the entries (and held entries) of one root reference. Without a write-only vault's
        private key, from the root's blob lists, which name the blobs of its new entries."""
        if self.vault.can_read_content:
            for e in itertools.chain(self.entries(root), self.held_entries(root)):
                for c in e.chunks:
                    yield c.blob
        else:
            for page in root.blobs:
                for blob, _ in decode_blob_list(self.vault.read_meta_page(page)):
                    yield blob

    def forgotten(self) -> set[int]:
        """Snapshots hidden by retention (`replicator prune`): not listed, not selectable."""
        if self._forgotten is None:
            self._forgotten = forgotten_seqs(self.vault, self.job_id, self)
        return self._forgotten

    def visible_roots(self) -> list[SnapshotRoot]:
        hidden = self.forgotten()
        return [r for r in self.roots() if r.seq not in hidden]

    def select(self, at: str | None) -> SnapshotRoot:
        """The newest snapshot whose time is at or before `at` (default: the latest)."""
        if not self.seqs:
            raise ReplicatorError("the vault holds no snapshot of this job")
        if at is None:
            return self.root(self.seqs[-1])[0]  # the latest is never forgotten
        try:
            t = parse_time(at)
        except ValueError as e:
            raise UsageError(f"--at: {e}") from None
        if "." not in at and ":" in at:
            t = t.replace(microsecond=999999)  # `--at 10:51:38` includes a snapshot begun at 10:51:38.7
        best = None
        visible = self.visible_roots()
        for r in visible:
            if parse_time(r.started) <= t:
                best = r
        if best is None:
            first = visible[0]
            raise ReplicatorError(f"no snapshot at or before {at}; the first is from {first.started}")
        # Roots are never deleted: a gap up to the next visible snapshot means one that may cover `at`
        # is gone, and the one before it would be a false answer.
        after = next((r.seq for r in visible if r.seq > best.seq), self.seqs[-1] + 1)
        present = set(self.seqs)
        gone = next((s for s in range(best.seq + 1, after) if s not in present), None)
        if gone is not None:
            raise IntegrityError(f"snapshot {gone} of job {best.job} is missing from the vault: the state at "
                                 f"{at} cannot be known (snapshot {best.seq} is older); run `replicator verify`")
        return best

    def entries(self, root: SnapshotRoot) -> Iterator[Entry]:
        """Every entry recorded by one snapshot's manifest (a delta or a checkpoint)."""
        for page in root.pages:
            yield from self._page(root, page)

    def held_entries(self, root: SnapshotRoot) -> Iterator[Entry]:
        """Versions a tripped breaker held back in this snapshot (stored, not live)."""
        for page in root.held:
            yield from self._page(root, page)

    def _page(self, root: SnapshotRoot, page: ChunkRef) -> Iterator[Entry]:
        """A page's entries; a page that decrypts but does not parse (a writer bug, or a compromised
        writer of a write-only vault) is named with its blob and snapshot."""
        try:
            yield from decode_page(self.vault.read_chunk(page))
        except IntegrityError as e:
            if page.blob in str(e):
                raise
            raise IntegrityError(f"{data_name(page.blob)} (a manifest page of snapshot {root.seq} of job "
                                 f"{root.job}): {e}") from None

    def state(self, seq: int) -> "State":
        """The live objects at snapshot seq: the last checkpoint at or before it plus the deltas after."""
        chain = []
        s = seq
        while True:
            root = self.root(s)[0]
            chain.append(root)
            if root.checkpoint:
                break
            if s == 0:
                raise IntegrityError("snapshot chain has no checkpoint")
            s -= 1
        state = State()
        for root in reversed(chain):
            if root.checkpoint:
                state.clear()
            state.apply(self.entries(root))
        return state


class State:
    """A set of live entries in a temporary on-disk table, iterated in key order."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="replicator-state-")
        self.db = sqlite3.connect(Path(self._dir.name) / "state.db")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE e(key TEXT PRIMARY KEY, size INTEGER, data TEXT) WITHOUT ROWID")

    def clear(self) -> None:
        self.db.execute("DELETE FROM e")

    def apply(self, entries: Iterator[Entry]) -> None:
        with self.db:
            for e in entries:
                if e.deleted:
                    self.db.execute("DELETE FROM e WHERE key=?", (e.key,))
                else:
                    self.db.execute("INSERT OR REPLACE INTO e VALUES(?,?,?)", (e.key, e.size, json.dumps(e.to_json())))

    def count(self, prefix: str = "") -> tuple[int, int]:
        return tuple(self.db.execute("SELECT count(*), coalesce(sum(size),0) FROM e WHERE substr(key,1,?)=?",
                                     (len(prefix), prefix)).fetchone())

    def __iter__(self) -> Iterator[Entry]:
        return self.iter()

    def iter(self, prefix: str = "") -> Iterator[Entry]:
        after = None
        while True:  # keyset pagination: no cursor held open across callers' work
            if after is None:
                rows = self.db.execute("SELECT key, data FROM e WHERE substr(key,1,?)=? ORDER BY key LIMIT 1000",
                                       (len(prefix), prefix)).fetchall()
            else:
                rows = self.db.execute("SELECT key, data FROM e WHERE substr(key,1,?)=? AND key > ? ORDER BY key LIMIT 1000",
                                       (len(prefix), prefix, after)).fetchall()
            for _, data in rows:
                yield _stored_entry(json.loads(data))
            if len(rows) < 1000:
                return
            after = rows[-1][0]

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stored_entry(d: dict) -> Entry:
    """An entry as State.apply stored it: checked on its way in (decode_page), so rebuilt here without
    checking it again (a restore reads each twice; the checks were most of the cost)."""
    return Entry(d["k"], d["s"], d.get("m"), d.get("e"), d.get("v"), tuple(ChunkRef(*c) for c in d["c"]))


def job_names(vault: Vault) -> dict[str, str]:
    """job id -> job name for every job present in the vault (from each one's latest snapshot)."""
    out = {}
    for jid, seqs in vault.snapshot_seqs().items():
        try:
            out[jid] = vault.read_snapshot(jid, seqs[-1])[0].job
        except (IntegrityError, NotFound):
            out[jid] = f"<unreadable job {jid[:8]}>"
    return out


def forgotten_name(job_id: str, seq: int) -> str:
    return f"forgotten/{job_id}/{seq:010d}"


def forgotten_seqs(vault: Vault, job_id: str, history: "History") -> set[int]:
    """Seqs hidden by authentic forget records; a record that does not authenticate is an error."""
    out = set()
    for name, _ in vault.store.list(f"forgotten/{job_id}/"):
        seq_text = name.rsplit("/", 1)[-1]
        if not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) == 10):
            continue
        payload = vault.open_blob(vault.store.get(name), name)
        try:
            record = json.loads(decode_record(payload, len(payload) - 1))
        except ValueError:
            raise IntegrityError(f"{name}: malformed forget record") from None
        seq = int(seq_text)
        if record.get("seq") != seq or record.get("job_id") != job_id or (
                seq in history.seqs and record.get("root_sha256") != history.root(seq)[1]):
            raise IntegrityError(f"{name}: forget record does not match the snapshot it names")
        out.add(seq)
    return out
