"""Snapshots: one manifest per completed run of a job, chained by hash.

A manifest is a small root (the `snapshots/<job id>/<seq>` blob) and pages (ordinary
chunks in data/) of JSON lines, one line per entry:

    {"k": key, "s": size, "m": mtime, "e": etag, "v": version, "c": [chunk refs]}
    {"k": key, "d": 1}                                  a tombstone: gone from the source

A delta manifest holds what changed since the previous snapshot; a checkpoint holds
the whole live state. This module is pure: it encodes, decodes and validates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from replicator.errors import IntegrityError
from replicator.vault.format import FORMAT_VERSION, ChunkRef


@dataclass(frozen=True)
class Entry:
    key: str
    size: int
    mtime: str | None = None
    etag: str | None = None
    version: str | None = None
    chunks: tuple[ChunkRef, ...] = ()
    deleted: bool = False  # a tombstone

    def to_json(self) -> dict:
        if self.deleted:
            return {"k": self.key, "d": 1}
        d: dict[str, Any] = {"k": self.key, "s": self.size}
        if self.mtime is not None:
            d["m"] = self.mtime
        if self.etag is not None:
            d["e"] = self.etag
        if self.version is not None:
            d["v"] = self.version
        d["c"] = [c.to_json() for c in self.chunks]
        return d

    @classmethod
    def from_json(cls, d: Any) -> "Entry":
        if not isinstance(d, dict) or not isinstance(d.get("k"), str):
            raise IntegrityError("malformed manifest entry")
        if d.get("d") == 1:
            return cls(key=d["k"], size=0, deleted=True)
        size, chunks = d.get("s"), d.get("c")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(chunks, list):
            raise IntegrityError(f"malformed manifest entry for a key of {len(d['k'])} characters")
        refs = tuple(ChunkRef.from_json(c) for c in chunks)
        if sum(r.size for r in refs) != size:
            raise IntegrityError("manifest entry's chunks do not add up to its size")
        return cls(d["k"], size, _opt_str(d, "m"), _opt_str(d, "e"), _opt_str(d, "v"), refs)


def _opt_str(d: dict, k: str) -> str | None:
    v = d.get(k)
    if v is not None and not isinstance(v, str):
        raise IntegrityError(f"manifest entry field {k!r} is not a string")
    return v


@dataclass(frozen=True)
class SnapshotRoot:
    """The decoded root of one manifest."""

    job: str
    kind: str
    seq: int
    prev: str | None  # sha256 hex of the previous root's stored bytes
    started: str  # ISO time the run began listing the source: the snapshot's time
    finished: str
    checkpoint: bool
    pages: tuple[ChunkRef, ...]
    stats: dict = field(default_factory=dict)
    # Changes a tripped breaker held back: stored and referenced, but not part of the live state.
    held: tuple[ChunkRef, ...] = ()
    # Write-only vaults: pages (sealed like roots) listing the data blobs this run's entries reference,
    # so a host without the private key can still check every blob is there (FORMAT.md §7).
    blobs: tuple[ChunkRef, ...] = ()

    def to_json(self) -> bytes:
        d = {
            "format": FORMAT_VERSION, "type": "snapshot", "job": self.job, "kind": self.kind,
            "seq": self.seq, "prev": self.prev, "started": self.started, "finished": self.finished,
            "checkpoint": self.checkpoint, "pages": [p.to_json() for p in self.pages], "stats": self.stats,
        }
        if self.held:
            d["held"] = [p.to_json() for p in self.held]
        if self.blobs:
            d["blobs"] = [p.to_json() for p in self.blobs]
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "SnapshotRoot":
        try:
            d = json.loads(data)
            if d.get("type") != "snapshot" or d.get("format") != FORMAT_VERSION:
                raise IntegrityError("not a version-1 snapshot manifest")
            root = cls(job=d["job"], kind=d["kind"], seq=d["seq"], prev=d["prev"], started=d["started"],
                       finished=d["finished"], checkpoint=d["checkpoint"],
                       pages=tuple(ChunkRef.from_json(p) for p in d["pages"]), stats=d.get("stats") or {},
                       held=tuple(ChunkRef.from_json(p) for p in d.get("held", [])),
                       blobs=tuple(ChunkRef.from_json(p) for p in d.get("blobs", [])))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise IntegrityError("malformed snapshot manifest") from None
        if not (isinstance(root.seq, int) and not isinstance(root.seq, bool) and root.seq >= 0
                and all(isinstance(x, str) for x in (root.job, root.kind, root.started, root.finished))
                and isinstance(root.checkpoint, bool) and (root.prev is None or isinstance(root.prev, str))
                and isinstance(root.stats, dict)):
            raise IntegrityError("malformed snapshot manifest fields")
        return root


def encode_pages(entries: Iterable[Entry], page_size: int) -> Iterator[bytes]:
    """Entries (in key order) -> page plaintexts of about page_size bytes of JSON lines."""
    return _json_line_pages((e.to_json() for e in entries), page_size)


def encode_row_pages(rows: Iterable[tuple], page_size: int) -> Iterator[bytes]:
    """encode_pages for catalogue rows (key, size, mtime, etag, version, chunks JSON[, deleted]):
    the same bytes, with each row's chunk list (compact JSON text already) copied in as it is,
    not parsed and encoded again."""
    return _line_pages((_row_line(*row) for row in rows), page_size)


def _row_line(key: str, size: int, mtime: str | None, etag: str | None, version: str | None, chunks: str,
              deleted: int = 0) -> bytes:
    """The JSON line of Entry.to_json for one row: keys in the same order, the same escaping."""
    if deleted:
        return b'{"k":%s,"d":1}\n' % json.dumps(key).encode()
    parts = ['{"k":', json.dumps(key), ',"s":', str(size)]
    for name, value in (("m", mtime), ("e", etag), ("v", version)):
        if value is not None:
            parts += [',"', name, '":', json.dumps(value)]
    parts += [',"c":', chunks, "}\n"]
    return "".join(parts).encode()


def encode_blob_lists(blobs: Iterable[tuple[str, int]], page_size: int) -> Iterator[bytes]:
    """(blob id, stored size) pairs -> pages of JSON lines `["<blob>",<size>]`."""
    return _json_line_pages(([blob, size] for blob, size in blobs), page_size)


def _json_line_pages(values: Iterable, page_size: int) -> Iterator[bytes]:
    """Compact JSON lines, cut into a new page after the line that brings a page to page_size."""
    return _line_pages((json.dumps(v, separators=(",", ":")).encode() + b"\n" for v in values), page_size)


def _line_pages(lines: Iterable[bytes], page_size: int) -> Iterator[bytes]:
    buf: list[bytes] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= page_size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def decode_blob_list(data: bytes) -> Iterator[tuple[str, int]]:
    for line in data.splitlines():
        try:
            blob, size = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            raise IntegrityError("blob list line is not a [blob, size] pair") from None
        if not (isinstance(blob, str) and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise IntegrityError("blob list line is not a [blob, size] pair")
        yield blob, size


def decode_page(data: bytes) -> Iterator[Entry]:
    for line in data.splitlines():
        try:
            d = json.loads(line)
        except (ValueError, RecursionError):
            raise IntegrityError("manifest page line is not JSON") from None
        yield Entry.from_json(d)
