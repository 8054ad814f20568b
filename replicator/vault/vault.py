"""The vault: a store plus the keys, speaking in chunks and snapshots.

Everything written is new: content-addressed blobs and sequence-numbered
snapshot roots, all with create-only puts that are checked (size read back)
before anyone records them. Nothing here ever overwrites or deletes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from replicator.errors import (AlreadyExists, IntegrityError, NotFound, PrivateKeyNeeded, SnapshotTaken, StoreError,
                               VaultError, WrongKey)
from replicator.stores import Store
from replicator.stores.base import checksums_of
from replicator.stores.immutable import hidden_by_delete_markers
from replicator.vault import crypto, keys
from replicator.vault.crypto import Random
from replicator.vault.format import (CHUNK_SIZE, CONFIG_NAME, FORMAT_NAME, FORMAT_VERSION, ChunkRef,
                                     data_name, decode_record, encode_record, frame, framed_record, key_name,
                                     parse_snapshot_name, snapshot_name, unframe)
from replicator.vault.keys import Keyring, MasterKey
from replicator.vault.manifest import SnapshotRoot


class Vault:
    def __init__(self, store: Store, master: MasterKey, keyring: Keyring, config: dict, rng: Random = os.urandom):
        self.store, self.master, self.keyring, self.config, self.rng = store, master, keyring, config, rng
        self.vault_id: str = config["vault_id"]
        # Roots and records are sealed under data_kek; content too, unless the vault is write-only,
        # where it is sealed to the public key (FORMAT.md §3, §4).
        self.meta_wrap = crypto.KekWrap(keyring.data_kek, crypto.hkdf(keyring.data_kek, b"replicator v1 kek-id", 8))
        self.content_wrap = (crypto.PublicWrap(keyring.recipient_pub, keyring.recipient_priv)
                             if keyring.write_only else self.meta_wrap)
        self._wraps = {(w.wrap, w.key_id): w for w in (self.meta_wrap, self.content_wrap)}
        self._checksums: list[tuple[str, str, float]] = []  # issue 10: (name, provider checksum, time) written
        self._checksums_lock = threading.Lock()
        self._header_cache = _HeaderCache(1024)  # (blob name, size) -> (header, data key): ranged reads of packs

    # -- lifecycle ---------------------------------------------------------------

    @staticmethod
    def exists(store: Store) -> bool:
        try:
            store.stat(CONFIG_NAME)
            return True
        except NotFound:
            return False

    @classmethod
    def create(cls, store: Store, master: MasterKey, rng: Random = os.urandom,
               private_master: MasterKey | None = None) -> "Vault":
        """Write the root objects of a new vault; refuse if one is there already.

        With `private_master` the vault is write-only: `master` (the daemon's key file) opens a keyring
        that seals content to a public key and signs roots; only `private_master` (a key file kept
        offline) opens the keyring that also holds the private key."""
        if not store.exists():
            store.create()
        if cls.exists(store):
            raise VaultError(f"a vault already exists at {store.url}; refusing to touch it")
        if hidden_by_delete_markers(store, CONFIG_NAME):
            raise VaultError(_HIDDEN.format(url=store.url))
        config = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "vault_id": uuid.UUID(bytes=rng(16)).hex,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cipher": "AES-256-GCM-STREAM", "segment_size": crypto.SEGMENT_SIZE, "key_wrap": "AES-KW",
            "hash": "HMAC-SHA256", "compression": "zstd", "chunk_size": CHUNK_SIZE,
            "padding": "4KiB-or-1/32", "master_key_ids": [master.key_id],
        }
        keyring = keys.new_keyring(rng, write_only=private_master is not None)
        wrapped = [(master, keyring.without_private_key())]
        if private_master is not None:
            if private_master.key_id == master.key_id:
                raise VaultError("the private key file must differ from the daemon's key file")
            config["write_only"] = {"recipient": keyring.recipient_pub.hex(), "signing_key": _signing_public(keyring).hex(),
                                    "key_wrap": "X25519-HKDF-AES-KW", "signature": "Ed25519"}
            config["master_key_ids"].append(private_master.key_id)
            wrapped.append((private_master, keyring))
        config_bytes = json.dumps(config, indent=1, sort_keys=True).encode()
        # Keyrings first: a vault whose config exists is complete.
        for key, ring in wrapped:
            _put_idempotent(store, key_name(key.key_id), keys.wrap_keyring(ring, key, config["vault_id"], config_bytes, rng))
        try:
            _put_idempotent(store, CONFIG_NAME, config_bytes)
        except AlreadyExists:
            raise VaultError(f"a vault already exists at {store.url}; refusing to touch it") from None
        return cls(store, master, keyring, config, rng)

    @classmethod
    def open(cls, store: Store, master: MasterKey) -> "Vault":
        try:
            config_bytes = store.get(CONFIG_NAME)
        except NotFound:
            if hidden_by_delete_markers(store, CONFIG_NAME):
                raise VaultError(_HIDDEN.format(url=store.url)) from None
            raise VaultError(f"no vault at {store.url} (run `replicator init` first)") from None
        try:
            config = json.loads(config_bytes)
        except ValueError:
            raise IntegrityError(f"{store.url}/config is not valid JSON") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise VaultError(f"{store.url} does not hold a replicator vault")
        if not isinstance(config.get("vault_id"), str):
            raise IntegrityError(f"{store.url}/config has no vault id (altered)")
        if config.get("version") != FORMAT_VERSION:
            raise VaultError(f"vault format version {config.get('version')} is not supported by this replicator")
        try:
            wrapped = store.get(key_name(master.key_id))
        except NotFound:
            raise WrongKey(f"the key file does not open the vault at {store.url} (no keyring for key {master.key_id})") from None
        keyring = keys.unwrap_keyring(wrapped, master, config["vault_id"], config_bytes)
        write_only = config.get("write_only")
        if write_only is not None and not (
                isinstance(write_only, dict) and keyring.write_only
                and write_only.get("recipient") == keyring.recipient_pub.hex()
                and write_only.get("signing_key") == _signing_public(keyring).hex()):
            raise IntegrityError(f"{store.url}: the keyring does not match the vault's write-only keys (altered)")
        if write_only is None and keyring.write_only:
            raise IntegrityError(f"{store.url}: a write-only keyring in a vault whose config is not write-only (altered)")
        return cls(store, master, keyring, config)

    def add_master_key(self, new: MasterKey) -> None:
        """Wrap this vault's keyring under another master key (`keys/<new id>`); no blob changes."""
        config_bytes = self.store.get(CONFIG_NAME)
        _put_idempotent(self.store, key_name(new.key_id),
                     keys.wrap_keyring(self.keyring, new, self.vault_id, config_bytes, self.rng))

    def remove_master_key(self, old: MasterKey) -> None:
        """Delete the keyring wrapped under `old`: after this, a copy of the old key file opens nothing.
        The one deletion outside retention; it needs credentials the daemon should not hold."""
        if old.key_id == self.master.key_id:
            raise VaultError("refusing to remove the keyring of the key in use")
        self.store.delete(key_name(old.key_id))

    # -- names -------------------------------------------------------------------

    def chunk_id(self, data: bytes) -> str:
        return crypto.keyed_hash(self.keyring.id_key, b"chunk", data).hex()

    def job_id(self, job_name: str) -> str:
        return crypto.keyed_hash(self.keyring.id_key, b"job", job_name.encode()).hex()[:32]

    # -- blobs ----------------------------------------------------------------------

    @property
    def can_read_content(self) -> bool:
        """False on a write-only vault opened without its private key."""
        return not self.keyring.write_only or self.keyring.recipient_priv is not None

    def seal(self, payload: bytes) -> bytes:
        """A blob for roots and records: readable with the daemon's key, even in a write-only vault."""
        return crypto.seal_with(frame(payload), self.meta_wrap, self.rng)

    def seal_record(self, data: bytes) -> bytes:
        """A small object of the vault's own (a lease): sealed like a root; see `open_record`."""
        return self.seal(encode_record(data, False))

    def open_record(self, blob: bytes, name: str) -> bytes:
        payload = self.open_blob(blob, name)
        try:
            return decode_record(payload, _plain_size(payload))
        except IntegrityError as e:
            raise IntegrityError(f"{name}: {e}") from None

    def seal_content(self, payload: bytes) -> bytes:
        """A blob for chunks and manifest pages: in a write-only vault only the private key opens it."""
        return crypto.seal_with(frame(payload), self.content_wrap, self.rng)

    def data_key(self, header: crypto.Header) -> bytes:
        """The unwrapped data key of a blob; PrivateKeyNeeded for content of a write-only vault."""
        wrapper = self._wraps.get((header.wrap, header.key_id))
        if wrapper is None:
            raise IntegrityError("blob is sealed under a key this keyring does not hold")
        try:
            return wrapper.unwrap_dek(header)
        except PrivateKeyNeeded:
            raise PrivateKeyNeeded("this vault is write-only: reading its content needs the private key "
                                   "(--key PATH)") from None

    def open_blob(self, blob: bytes, name: str) -> bytes:
        try:
            header = crypto.parse_header(blob)
            return unframe(crypto.open_with_dek(blob, header, self.data_key(header)))
        except IntegrityError as e:
            raise IntegrityError(f"{name}: {e}") from None

    def write_chunk(self, data: bytes, compress: bool = True, cid: str | None = None) -> ChunkRef:
        """Store one chunk (deduplicated by its keyed hash) in its own blob and return its reference."""
        cid = cid or self.chunk_id(data)
        plaintext, length = framed_record(data, compress)
        blob = crypto.seal_with(plaintext, self.content_wrap, self.rng)
        del plaintext  # during the put only the sealed copy is held
        return ChunkRef(cid, self._put_blob(data_name(cid), blob), 0, length, len(data), cid)

    def pack_id(self, records: list[tuple[str, int]]) -> str:
        """The name of a pack holding these (chunk id, record length) in this order (FORMAT.md §6):
        H(`pack`, id_0 ‖ u64 length_0 ‖ id_1 ‖ ...). Same name, same records at the same offsets."""
        return crypto.keyed_hash(self.keyring.id_key, b"pack",
                                 b"".join(bytes.fromhex(c) + n.to_bytes(8, "big") for c, n in records)).hex()

    def write_pack(self, pack_id: str, payload: bytes) -> int:
        """Store a pack (records of several chunks, concatenated) as one blob; its stored size."""
        return self._put_blob(data_name(pack_id), self.seal_content(payload))

    def _put_blob(self, name: str, blob: bytes) -> int:
        """Store a sealed content blob under its keyed name: its stored size."""
        try:
            size = _put_checked(self.store, name, blob)
        except AlreadyExists:
            size = self.store.stat(name)  # same content (the name is its keyed hash), written before
        self._note_checksum(name)
        return size

    def read_chunk(self, ref: ChunkRef) -> bytes:
        """One chunk, fetching only the blob's header and the segments its record lies in (a pack
        is never downloaded whole for one of its chunks)."""
        name = data_name(ref.blob)
        try:
            return self._read_chunk(name, ref)
        except IntegrityError as e:
            raise IntegrityError(f"{name}: {e}") from None

    def _read_chunk(self, name: str, ref: ChunkRef) -> bytes:
        start, end = _PLAIN_OFFSET + ref.offset, _PLAIN_OFFSET + ref.offset + ref.length
        cached = self._header_cache.get((name, ref.blob_size))
        if cached is not None:
            header, dek = cached
            first, data = self._segments(name, header, ref, start, end)
        else:
            # Guess the header's largest size and the writers' segment size: one GET when the record
            # starts near the front (one-chunk blobs always do), else the header, then the segments.
            guess = _MAX_HEADER + ((end - 1) // crypto.SEGMENT_SIZE + 1) * (crypto.SEGMENT_SIZE + crypto.TAG_SIZE)
            want = guess if guess <= _ONE_GET or ref.offset == 0 else _MAX_HEADER
            # Up to the end: one byte more, so a blob that grew is noticed like one that shrank.
            head = self.store.get(name, 0, ref.blob_size + 1 if want >= ref.blob_size else want)
            if len(head) > ref.blob_size:
                raise IntegrityError(f"stored size differs from the recorded {ref.blob_size} (extended)")
            header = crypto.parse_header(head)
            _check_size(header, ref)
            dek = self.data_key(header)
            step = header.segment_size + crypto.TAG_SIZE
            last = min(ref.blob_size, header.size + ((max(end, 1) - 1) // header.segment_size + 1) * step)
            if len(head) >= last:
                first, data = 0, memoryview(head)[header.size:last]
            else:
                first, data = self._segments(name, header, ref, start, end)
        if end > header.plaintext_len:
            raise IntegrityError(f"record at {ref.offset} runs past the blob")
        plain = crypto.decrypt_with_dek(header, dek, first, data)
        if cached is None:
            self._header_cache.put((name, ref.blob_size), (header, dek))
        if first == 0:
            (payload_len,) = struct.unpack_from(">Q", plain)
            if ref.offset + ref.length > payload_len:
                raise IntegrityError(f"record at {ref.offset} runs past the blob")
        base = first * header.segment_size
        return self._decoded(memoryview(plain)[start - base:end - base], ref)

    def _segments(self, name: str, header: crypto.Header, ref: ChunkRef, start: int, end: int) -> tuple[int, bytes]:
        """(index of the first, ciphertext) of the segments holding plaintext bytes start..end."""
        seg, step = header.segment_size, header.segment_size + crypto.TAG_SIZE
        first = start // seg
        last = (max(end, start + 1) - 1) // seg
        if last >= header.segments():
            raise IntegrityError(f"record at {ref.offset} runs past the blob")
        lo = header.size + first * step
        hi = min(ref.blob_size, header.size + (last + 1) * step)
        data = self.store.get(name, lo, hi - lo + (hi == ref.blob_size))  # to the end: one more, as above
        if len(data) != hi - lo:
            raise IntegrityError(f"stored size differs from the recorded {ref.blob_size} (truncated)")
        return first, data

    def _decoded(self, record: bytes | memoryview, ref: ChunkRef) -> bytes:
        if len(record) != ref.length:
            raise IntegrityError(f"record at {ref.offset} runs past the blob")
        data = decode_record(record, ref.size)
        if self.chunk_id(data) != ref.id:
            raise IntegrityError("content does not match its hash")
        return data

    def read_payload(self, blob_id: str, blob_size: int) -> bytes:
        """A whole blob's payload, opened and checked (size, every segment, padding): for readers that
        want many chunks of one pack (restore), which then take them with chunk_in()."""
        name = data_name(blob_id)
        blob = self.store.get(name)
        if len(blob) != blob_size:
            raise IntegrityError(f"{name}: stored size {len(blob)} differs from the recorded {blob_size}")
        return self.open_blob(blob, name)

    def chunk_in(self, payload: bytes, ref: ChunkRef) -> bytes:
        """The chunk `ref` places in `payload` (read_payload of ref.blob), decoded and hash-checked."""
        try:
            return self._decoded(memoryview(payload)[ref.offset:ref.offset + ref.length], ref)
        except IntegrityError as e:
            raise IntegrityError(f"{data_name(ref.blob)}: {e}") from None

    def check_blob(self, blob_id: str, refs: list[ChunkRef]) -> int:
        """Deep check of one blob: download it once, open it whole (every segment tag, padding,
        payload length), and decode and hash every chunk the refs place in it. Returns how many
        chunks passed; IntegrityError (naming the blob) at the first that does not."""
        name = data_name(blob_id)
        blob = self.store.get(name)
        n = 0
        try:
            for ref in refs:
                if len(blob) != ref.blob_size:
                    raise IntegrityError(f"stored size {len(blob)} differs from the recorded {ref.blob_size}")
            payload = self.open_blob(blob, name) if refs else b""
            for ref in refs:
                self._decoded(payload[ref.offset:ref.offset + ref.length], ref)
                n += 1
        except IntegrityError as e:
            msg = str(e)
            raise IntegrityError(msg if msg.startswith(name) else f"{name}: {msg}") from None
        return n

    # -- snapshots --------------------------------------------------------------

    def write_snapshot(self, job_id: str, root: SnapshotRoot) -> str:
        """Write a snapshot root; returns the sha256 of its stored bytes (the next one's `prev`)."""
        blob = self.seal_snapshot(job_id, root)
        self.put_snapshot(job_id, root.seq, blob)
        return hashlib.sha256(blob).hexdigest()

    def seal_snapshot(self, job_id: str, root: SnapshotRoot) -> bytes:
        """The stored bytes of a root (signed in a write-only vault), ready for `put_snapshot`."""
        plain = root.to_json()
        if self.keyring.sign_seed is not None:
            signature = Ed25519PrivateKey.from_private_bytes(self.keyring.sign_seed).sign(
                _signed_message(self.vault_id, job_id, plain))
            plain = json.dumps({"type": "signed-snapshot", "format": FORMAT_VERSION, "root": plain.decode(),
                                "sig": base64.b64encode(signature).decode()}, sort_keys=True).encode()
        return self.seal(encode_record(plain))

    def put_snapshot(self, job_id: str, seq: int, blob: bytes) -> None:
        """Store a sealed root under its sequence number; a retry of the very same bytes is fine."""
        name = snapshot_name(job_id, seq)
        try:
            _put_idempotent(self.store, name, blob)
        except AlreadyExists:
            raise SnapshotTaken(f"snapshot {seq} of job id {job_id[:8]} already exists with other content: another "
                                "replicator writes to this vault") from None
        self._note_checksum(name)

    # -- provider checksums (issue 10) ---------------------------------------------

    def _note_checksum(self, name: str) -> None:
        """Remember the checksum the provider reports for what was just written. The stat of the
        checked put brought it along, so this costs no request; the engine moves the notes into the
        catalogue (`take_checksums`) in the same transaction that records the blobs."""
        layer = checksums_of(self.store)
        if layer is None:
            return
        try:
            checksum = layer.checksum(name)
        except StoreError:
            return  # only a cheaper check is lost; deep verify remains the proof
        if checksum:
            with self._checksums_lock:
                if len(self._checksums) >= 100_000:  # nobody collects them (not an engine run): bounded
                    del self._checksums[:50_000]
                self._checksums.append((name, checksum, time.time()))

    def take_checksums(self) -> list[tuple[str, str, float]]:
        """The (name, checksum, time) noted since the last call."""
        with self._checksums_lock:
            out, self._checksums = self._checksums, []
        return out

    def read_snapshot(self, job_id: str, seq: int) -> tuple[SnapshotRoot, str]:
        """(root, sha256 of its stored bytes); IntegrityError if it is not authentic."""
        name = snapshot_name(job_id, seq)
        blob = self.store.get(name)
        payload = self.open_blob(blob, name)
        try:
            root = SnapshotRoot.from_json(self._check_signature(job_id, decode_record(payload, _plain_size(payload))))
        except IntegrityError as e:
            raise IntegrityError(f"{name}: {e}") from None
        if root.seq != seq or self.job_id(root.job) != job_id:
            raise IntegrityError(f"{name}: holds snapshot {root.seq} of another job or position (moved or replaced)")
        return root, hashlib.sha256(blob).hexdigest()

    def _check_signature(self, job_id: str, plain: bytes) -> bytes:
        """A write-only vault's root JSON, once its Ed25519 signature checks; other vaults' as they are."""
        signing = (self.config.get("write_only") or {}).get("signing_key")
        if signing is None:
            return plain
        try:
            outer = json.loads(plain)
            inner = outer["root"].encode()
            signature = base64.b64decode(outer["sig"], validate=True)
            if outer.get("type") != "signed-snapshot":
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError("unsigned or malformed root in a write-only vault") from None
        try:
            Ed25519PublicKey.from_public_bytes(bytes.fromhex(signing)).verify(
                signature, _signed_message(self.vault_id, job_id, inner))
        except (InvalidSignature, ValueError):
            raise IntegrityError("root signature does not verify") from None
        return inner

    # -- auxiliary pages: readable with the daemon's key --------------------------

    def write_meta_page(self, data: bytes) -> ChunkRef:
        """Store a page of the vault's own bookkeeping (lists of blob names and sizes), sealed like roots
        so the daemon can read it back in a write-only vault, and named in a domain of its own."""
        pid = crypto.keyed_hash(self.keyring.id_key, b"meta", data).hex()
        record = encode_record(data, True)
        name = data_name(pid)
        try:
            size = _put_checked(self.store, name, self.seal(record))
        except AlreadyExists:
            size = self.store.stat(name)
        self._note_checksum(name)
        return ChunkRef(pid, size, 0, len(record), len(data), pid)

    def read_meta_page(self, ref: ChunkRef) -> bytes:
        name = data_name(ref.blob)
        blob = self.store.get(name)
        if len(blob) != ref.blob_size:
            raise IntegrityError(f"{name}: stored size {len(blob)} differs from the recorded {ref.blob_size}")
        try:
            data = decode_record(self.open_blob(blob, name)[ref.offset:ref.offset + ref.length], ref.size)
        except IntegrityError as e:
            raise IntegrityError(f"{name}: {e}") from None
        if crypto.keyed_hash(self.keyring.id_key, b"meta", data).hex() != ref.id:
            raise IntegrityError(f"{name}: content does not match its hash")
        return data

    def snapshot_seqs(self, job_id: str | None = None) -> dict[str, list[int]]:
        """job id -> sorted snapshot sequence numbers present in the vault (one job's: one prefix listed)."""
        out: dict[str, list[int]] = {}
        for name, _ in self.store.list(f"snapshots/{job_id}/" if job_id else "snapshots/"):
            parsed = parse_snapshot_name(name)
            if parsed:
                out.setdefault(parsed[0], []).append(parsed[1])
        return {j: sorted(s) for j, s in out.items()}

    def blobs(self) -> Iterator[tuple[str, int]]:
        """(blob id, stored size) of every blob in data/, where its name says it is."""
        for name, size in self.store.list("data/"):
            blob_id = name.rsplit("/", 1)[-1]
            if name == data_name(blob_id):
                yield blob_id, size


def _signing_public(keyring: Keyring) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(keyring.sign_seed).public_key().public_bytes_raw()


def _signed_message(vault_id: str, job_id: str, root_json: bytes) -> bytes:
    return f"replicator root v1|{vault_id}|{job_id}|".encode() + root_json


_HIDDEN = ("the vault at {url} is hidden behind delete markers: somebody deleted its objects with credentials "
           "that can delete, and their versions are intact underneath. Do not `init` over it: remove the delete "
           "markers (docs/OPERATIONS.md, \"A vault hidden behind delete markers\")")
_PLAIN_OFFSET = 8  # the u64 payload length in front of the payload (FORMAT.md §5)
_MAX_HEADER = 128  # more than any blob header (75 for wrap 1, 107 for wrap 2)
_ONE_GET = 1 << 20  # read header and segments in one GET when they end within this many bytes


def _check_size(header: crypto.Header, ref: ChunkRef) -> None:
    if header.ciphertext_len() != ref.blob_size:
        raise IntegrityError(f"stored size {header.ciphertext_len()} differs from the recorded {ref.blob_size}")


class _HeaderCache:
    """A few authenticated blob headers with their unwrapped data keys, least recently used out."""

    def __init__(self, size: int):
        self.size, self.lock, self.items = size, threading.Lock(), OrderedDict()

    def get(self, key):
        with self.lock:
            v = self.items.get(key)
            if v is not None:
                self.items.move_to_end(key)
            return v

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def _plain_size(record: bytes) -> int:
    """Size of a manifest root's JSON, bounded so a forged record cannot make us allocate much."""
    if record[:1] == b"\x00":
        return len(record) - 1
    import zstandard

    try:
        size = zstandard.frame_content_size(record[1:])
    except zstandard.ZstdError:
        raise IntegrityError("manifest record is not zstd") from None
    if size < 0 or size > 256 * 2**20:
        raise IntegrityError("manifest record has no plausible size")
    return size


def _put_idempotent(store: Store, name: str, data: bytes) -> None:
    """_put_checked, where a name taken by the very same bytes counts as done: a put retried after an
    ambiguous failure (the store took it, the answer was lost) finds its own first attempt. Roots,
    keyrings and configs are unique (fresh nonce, vault id), so nobody else's can be byte-identical."""
    try:
        _put_checked(store, name, data)
    except AlreadyExists:
        if store.get(name) != data:
            raise


def _put_checked(store: Store, name: str, data: bytes) -> int:
    """Create-only put, then read the size back: a write counts only once it is verifiably there."""
    store.put(name, data)
    size = store.stat(name)
    if size != len(data):
        raise StoreError(f"{name}: wrote {len(data)} bytes but the store holds {size}")
    return size
