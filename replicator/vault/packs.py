"""Packs: many small chunks stored as one blob (issue 7; FORMAT.md §6): written by PackWriter,
read for restores by PackReader.

Copy threads hand small chunks to one PackWriter. Their records are concatenated into the
open pack; once it holds PACK_RECORDS records or PACK_BYTES bytes of payload, the thread that
filled it seals and writes it (create-only, size checked) while the others go on filling the
next one. Each chunk's ChunkRef is a Future, resolved only once its pack is verifiably stored:
the engine records an object as pending only when all its chunks' futures are resolved, so a
crash never leaves a reference to a pack that is not there.

A pack's name is the keyed hash of its (chunk id, record length) list (Vault.pack_id): the same
chunks in the same order give the same name and the same layout, so a pack already written
(by a run that died before recording it) is reused like a chunk blob is.

Chunks packed in this run are remembered until the engine has recorded them in the catalogue
(`forget`), so an identical chunk met meanwhile is not written twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future

from replicator.vault.format import ChunkRef, encode_record

PACK_THRESHOLD = 512 * 1024  # chunks smaller than this go into packs; larger ones get a blob each
PACK_RECORDS = 64  # at most this many records in one pack
PACK_BYTES = 8 * 2**20  # a pack is written once its payload reaches this


class PackWriter:
    def __init__(self, vault, max_records: int = PACK_RECORDS, max_bytes: int = PACK_BYTES):
        self.vault, self.max_records, self.max_bytes = vault, max_records, max_bytes
        self._lock = threading.Lock()
        self._records: list[bytes] = []
        self._slots: list[tuple[str, int, int, int, Future]] = []  # (chunk id, offset, length, size, future)
        self._offset = 0
        self._opened = 0.0  # when the open pack got its first record (monotonic)
        self._known: dict[str, Future] = {}  # chunk id -> its ref, for chunks packed by this writer
        self.packs_written = 0

    def pending(self, cid: str) -> Future | None:
        """The future ref of a chunk this writer packed (or is packing) and nobody forgot yet."""
        with self._lock:
            return self._known.get(cid)

    def add(self, data: bytes, cid: str) -> tuple[Future, bool]:
        """Put a chunk into the open pack: (future of its ChunkRef, True). A chunk already packed by
        this writer (and not forgotten) is not added again: (its future, False)."""
        with self._lock:
            f = self._known.get(cid)
        if f is not None:
            return f, False
        record = encode_record(data)  # compression outside the lock
        with self._lock:
            f = self._known.get(cid)
            if f is not None:
                return f, False
            f = Future()
            self._known[cid] = f
            if not self._records:
                self._opened = time.monotonic()
            self._slots.append((cid, self._offset, len(record), len(data), f))
            self._records.append(record)
            self._offset += len(record)
            full = self._take() if len(self._records) >= self.max_records or self._offset >= self.max_bytes else None
        if full:
            self._write(*full)
        return f, True

    def flush(self, older_than: float | None = None) -> None:
        """Write the open pack now (if it has records, and, with older_than, only if it was opened
        at least that many seconds ago): the end of a run, or a slow trickle of small objects."""
        with self._lock:
            if not self._records or (older_than is not None and time.monotonic() - self._opened < older_than):
                return
            batch = self._take()
        self._write(*batch)

    def forget(self, cids) -> None:
        """These chunks are in the catalogue now: it answers for them from here on."""
        with self._lock:
            for cid in cids:
                f = self._known.get(cid)
                if f is not None and f.done():
                    del self._known[cid]

    def _take(self) -> tuple[list[bytes], list]:
        records, slots = self._records, self._slots
        self._records, self._slots, self._offset = [], [], 0
        return records, slots

    def _write(self, records: list[bytes], slots: list) -> None:
        try:
            pack_id = self.vault.pack_id([(cid, length) for cid, _, length, _, _ in slots])
            blob_size = self.vault.write_pack(pack_id, b"".join(records))
        except BaseException as e:
            with self._lock:  # a later add of these chunks tries again
                for cid, *_, f in slots:
                    if self._known.get(cid) is f:
                        del self._known[cid]
            for *_, f in slots:
                f.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        with self._lock:
            self.packs_written += 1
        for cid, offset, length, size, f in slots:
            f.set_result(ChunkRef(pack_id, blob_size, offset, length, size, cid))


class PackReader:
    """Chunks for a restore. A pack from which this restore takes at least MANY chunks is fetched
    once, whole, and its payload kept (a few at a time) until they are all served: one request per
    pack instead of one per small object. Any other chunk is read by itself: only the segments of
    its record (so restoring one object never downloads a whole pack)."""

    MANY = 4
    KEEP = 4  # payloads held at once (packs are at most 8 MiB of payload)
    LARGEST = 16 * 2**20

    def __init__(self, vault, entries):
        self.vault = vault
        wanted: dict[str, int] = {}
        for e in entries:
            for ref in e.chunks:
                if ref.blob != ref.id and ref.blob_size <= self.LARGEST:
                    wanted[ref.blob] = wanted.get(ref.blob, 0) + 1
        self.left = {b: n for b, n in wanted.items() if n >= self.MANY}  # chunks still to serve from each
        self.lock = threading.Lock()
        self.payloads: OrderedDict[str, bytes] = OrderedDict()
        self.loading: dict[str, Future] = {}

    def read(self, ref: ChunkRef) -> bytes:
        if ref.blob not in self.left:
            return self.vault.read_chunk(ref)
        with self.lock:
            payload = self.payloads.get(ref.blob)
            fut = None if payload is not None else self.loading.get(ref.blob)
            mine = payload is None and fut is None
            if mine:
                fut = self.loading[ref.blob] = Future()
        if mine:
            try:
                payload = self.vault.read_payload(ref.blob, ref.blob_size)
                fut.set_result(payload)
            except BaseException as e:
                fut.set_exception(e)
                raise
            finally:
                with self.lock:
                    self.loading.pop(ref.blob, None)
                    if payload is not None:
                        self.payloads[ref.blob] = payload
                        while len(self.payloads) > self.KEEP:
                            self.payloads.popitem(last=False)
        elif payload is None:
            payload = fut.result()
        data = self.vault.chunk_in(payload, ref)
        with self.lock:
            self.left[ref.blob] -= 1
            if self.left[ref.blob] <= 0:  # all served: let it go
                self.payloads.pop(ref.blob, None)
        return data
