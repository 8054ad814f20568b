"""A read-only fsspec filesystem over the vault: `replicator://JOB@TIME/prefix` (issue 10).

    import fsspec
    with fsspec.open("replicator://prod@2026-11-29T10:00:00Z/photos/a.jpg", config="/etc/replicator/config.toml") as f:
        data = f.read()
    fs = fsspec.filesystem("replicator", config="/etc/replicator/config.toml")
    fs.ls("prod@3d/photos")            # as it was three days ago
    pandas.read_csv("replicator://prod/data/part-001.csv", storage_options={"config": "..."})

Paths: `JOB@TIME/key`; TIME is what `--at` takes (ISO 8601, or an age like 3d) and may be left
out (`JOB/key`: the latest snapshot, fixed for the life of the filesystem object until
`invalidate_cache()`). The root lists the jobs. Keys' "/" make directories (no empty ones).
Storage options: `config` (the replicator config file; default REPLICATOR_CONFIG or
/etc/replicator/config.toml) and `key` (a key file instead of [vault].key_file).

Reads are streaming and seekable: a read of bytes [a, b) fetches and decrypts just the chunks
covering them (4 MiB each), keeping the last two. Nothing is ever written: every write raises
PermissionError. A snapshot's listing is rebuilt once per filesystem object in a temporary
SQLite file (like `restore`), so memory does not grow with the number of objects.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from replicator.errors import ReplicatorError
from replicator.vault.format import CHUNK_SIZE
from replicator.vault.manifest import Entry

READ_ONLY = "replicator:// is a read-only view of the vault"


class ReplicatorFileSystem(AbstractFileSystem):
    protocol = "replicator"
    root_marker = ""
    cachable = True

    def __init__(self, config: str | None = None, key: str | None = None, **kwargs):
        super().__init__(**kwargs)
        from replicator import config as configmod
        from replicator.stores import open_store
        from replicator.vault.keys import load_key_file
        from replicator.vault.vault import Vault

        cfg = configmod.load(configmod.config_path(config))
        v = cfg.vault
        store = open_store(v.url, configmod.resolve_secrets(v.options, "vault.options"), v.bandwidth, v.immutability)
        self.vault = Vault.open(store, load_key_file(Path(key) if key else v.key_file))
        self._lock = threading.RLock()
        self._tmp = tempfile.TemporaryDirectory(prefix="replicator-fsspec-")
        self._heads: dict[str, tuple[str, int, str]] = {}  # "job@time" -> (job, seq, snapshot time)
        self._indexes: dict[tuple[str, int], _Index] = {}

    # -- names ----------------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("replicator://"):
            path = path[len("replicator://"):]
        elif path.startswith("replicator::"):
            path = path[len("replicator::"):]
        return path.strip("/")

    def _split(self, path: str) -> tuple[str, str]:
        """'job@time/a/b' -> ('job@time', 'a/b')."""
        path = self._strip_protocol(path)
        head, _, rest = path.partition("/")
        return head, rest

    def _snapshot(self, head: str) -> "_Index":
        """The listing of the snapshot a path's first component names."""
        with self._lock:
            if head not in self._heads:
                from replicator.history import History

                job, _, at = head.partition("@")
                if not job:
                    raise FileNotFoundError(head)
                history = History.for_job(self.vault, job)
                if not history.seqs:
                    raise FileNotFoundError(f"{head}: the vault holds no snapshot of job {job!r}")
                try:
                    root = history.select(at or None)
                except ReplicatorError as e:
                    raise FileNotFoundError(f"{head}: {e}") from None
                if root.kind != "objects":
                    raise FileNotFoundError(f"{head}: a {root.kind} job: use `replicator restore`")
                self._heads[head] = (job, root.seq, root.started)
                if (job, root.seq) not in self._indexes:
                    index = _Index(Path(self._tmp.name) / f"{len(self._indexes)}.db", root.seq, root.started)
                    with history.state(root.seq) as state:
                        index.fill(state)
                    self._indexes[(job, root.seq)] = index
            job, seq, _ = self._heads[head]
            return self._indexes[(job, seq)]

    def invalidate_cache(self, path=None):
        """Forget resolved snapshots: `JOB` (no time) then means the latest again."""
        with self._lock:
            self._heads.clear()
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()
        super().invalidate_cache(path)

    # -- reading ----------------------------------------------------------------------------------

    def _file_info(self, head: str, entry: Entry, index: "_Index") -> dict:
        return {"name": f"{head}/{entry.key}", "size": entry.size, "type": "file", "mtime": entry.mtime,
                "etag": entry.etag, "version": entry.version, "snapshot": index.seq, "snapshot_time": index.time}

    def ls(self, path, detail=True, **kwargs):
        head, rest = self._split(path)
        if not head:
            from replicator.history import job_names

            out = [{"name": name, "size": 0, "type": "directory"} for name in sorted(job_names(self.vault).values())]
        else:
            index = self._snapshot(head)
            out = []
            for kind, name, entry in index.children(rest):
                full = f"{head}/{name}"
                out.append(self._file_info(head, entry, index) if kind == "file" else
                           {"name": full, "size": 0, "type": "directory"})
            if not out:
                entry = index.get(rest) if rest else None
                if entry is None:
                    if rest:
                        raise FileNotFoundError(path)
                else:
                    out = [self._file_info(head, entry, index)]
        return out if detail else [o["name"] for o in out]

    def info(self, path, **kwargs):
        head, rest = self._split(path)
        if not head:
            return {"name": "", "size": 0, "type": "directory"}
        index = self._snapshot(head)
        if not rest:
            return {"name": head, "size": 0, "type": "directory", "snapshot": index.seq, "snapshot_time": index.time}
        entry = index.get(rest)
        if entry is not None:
            return self._file_info(head, entry, index)
        if index.has_prefix(rest + "/"):
            return {"name": f"{head}/{rest}", "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        head, rest = self._split(path)
        if not head or maxdepth is not None or withdirs:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        index = self._snapshot(head)  # one range scan instead of a walk
        out = {}
        entry = index.get(rest) if rest else None
        if entry is not None:
            out[f"{head}/{entry.key}"] = self._file_info(head, entry, index)
        for entry in index.under(rest + "/" if rest else ""):
            out[f"{head}/{entry.key}"] = self._file_info(head, entry, index)
        return out if detail else sorted(out)

    def modified(self, path):
        from replicator.units import parse_time

        info = self.info(path)
        if info["type"] != "file" or not info.get("mtime"):
            raise FileNotFoundError(path)
        return parse_time(info["mtime"])

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise PermissionError(f"{READ_ONLY}: cannot open {path} with mode {mode!r}")
        head, rest = self._split(path)
        if not head or not rest:
            raise IsADirectoryError(path)
        index = self._snapshot(head)
        entry = index.get(rest)
        if entry is None:
            if index.has_prefix(rest + "/"):
                raise IsADirectoryError(path)
            raise FileNotFoundError(path)
        return ReplicatorFile(self, self._strip_protocol(path), entry, block_size=block_size or CHUNK_SIZE,
                              cache_options=cache_options)

    # -- writing: never ------------------------------------------------------------------------------

    def _refuse(self, *args, **kwargs):
        raise PermissionError(READ_ONLY)

    mkdir = makedirs = rmdir = rm_file = _rm = rm = cp_file = mv = pipe_file = put_file = touch = _refuse
    put = copy = pipe = setxattrs = _refuse


class ReplicatorFile(AbstractBufferedFile):
    """A read-only, seekable file over one entry's chunks: reads fetch only the chunks they cover."""

    def __init__(self, fs: ReplicatorFileSystem, path: str, entry: Entry, block_size: int = CHUNK_SIZE,
                 cache_options=None):
        self.entry = entry
        self._starts = []
        pos = 0
        for ref in entry.chunks:
            self._starts.append(pos)
            pos += ref.size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.chunks_read = 0
        super().__init__(fs, path, mode="rb", block_size=block_size, cache_type="none",
                         cache_options=cache_options, size=entry.size)

    def _chunk(self, i: int) -> bytes:
        with self._cache_lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        data = self.fs.vault.read_chunk(self.entry.chunks[i])
        with self._cache_lock:
            self.chunks_read += 1
            self._cache[i] = data
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return data

    def _fetch_range(self, start, end):
        start, end = max(0, start), min(end, self.size)
        if start >= end:
            return b""
        out = []
        i = bisect.bisect_right(self._starts, start) - 1
        while i < len(self._starts) and self._starts[i] < end:
            data = self._chunk(i)
            a = max(start - self._starts[i], 0)
            b = min(end - self._starts[i], len(data))
            out.append(data[a:b])
            i += 1
        return b"".join(out)

    def _upload_chunk(self, final=False):
        raise PermissionError(READ_ONLY)

    def _initiate_upload(self):
        raise PermissionError(READ_ONLY)


class _Index:
    """One snapshot's entries in a temporary SQLite file, with directory listing by skip-scan."""

    def __init__(self, path: Path, seq: int, time: str):
        self.seq, self.time = seq, time
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE e(key TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID")
        self.lock = threading.Lock()

    def fill(self, entries) -> None:
        with self.lock, self.db:
            self.db.executemany("INSERT OR REPLACE INTO e VALUES(?,?)", ((e.key, json.dumps(e.to_json())) for e in entries))

    def close(self) -> None:
        self.db.close()

    def get(self, key: str) -> Entry | None:
        with self.lock:
            row = self.db.execute("SELECT data FROM e WHERE key = ?", (key,)).fetchone()
        return Entry.from_json(json.loads(row[0])) if row else None

    def has_prefix(self, prefix: str) -> bool:
        with self.lock:
            row = self.db.execute("SELECT 1 FROM e WHERE key >= ? AND substr(key, 1, ?) = ? LIMIT 1",
                                  (prefix, len(prefix), prefix)).fetchone()
        return row is not None

    def children(self, rest: str):
        """('file', key, entry) and ('directory', name, None) directly under `rest`, in key order.
        Skips over each subdirectory's contents with one indexed lookup."""
        prefix = rest + "/" if rest else ""
        cursor, inclusive = prefix, True
        while True:
            with self.lock:
                row = self.db.execute(
                    f"SELECT key, data FROM e WHERE key {'>=' if inclusive else '>'} ? AND substr(key, 1, ?) = ? "
                    "ORDER BY key LIMIT 1", (cursor, len(prefix), prefix)).fetchone()
            if row is None:
                return
            key, data = row
            name = key[len(prefix):]
            if "/" in name:
                sub = prefix + name.split("/", 1)[0]
                yield "directory", sub, None
                cursor, inclusive = sub + "/\U0010ffff", False
            else:
                yield "file", key, Entry.from_json(json.loads(data))
                cursor, inclusive = key, False

    def under(self, prefix: str):
        """Every entry whose key starts with prefix, in key order (keyset pages)."""
        after, first = prefix, True
        while True:
            with self.lock:
                rows = self.db.execute(
                    f"SELECT key, data FROM e WHERE key {'>=' if first else '>'} ? AND substr(key, 1, ?) = ? "
                    "ORDER BY key LIMIT 1000", (after, len(prefix), prefix)).fetchall()
            for _, data in rows:
                yield Entry.from_json(json.loads(data))
            if len(rows) < 1000:
                return
            after, first = rows[-1][0], False
