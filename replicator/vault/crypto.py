"""Authenticated encryption of one blob: AES-256-GCM in fixed segments, STREAM-style nonces.

Pure functions over bytes; nothing here touches storage. Layout (docs/FORMAT.md):

    header = "RPLB" | version u8 | wrap u8 | key_id 8B | wrapped_len u16 | wrapped_dek
             | nonce_prefix 7B | segment_size u32 | plaintext_len u64
    body   = segment_0 .. segment_n-1, each AES-GCM(ciphertext || 16-byte tag)

Segment i uses nonce = nonce_prefix || u32(i) || u8(last) and the whole header as
associated data, so truncation, reordering, splicing between blobs and header
tampering are all detected. Each blob has a fresh 256-bit data key (DEK), wrapped
either (wrap 1) with AES key wrap (RFC 3394) under a key-encryption key of the keyring,
or (wrap 2, write-only vaults) to an X25519 public key: an ephemeral key pair per blob,
the shared secret through HKDF gives the key that AES-key-wraps the DEK, so the writer
can seal blobs it can never open again.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from replicator.errors import IntegrityError, PrivateKeyNeeded

MAGIC = b"RPLB"
VERSION = 1
WRAP_AES_KW = 1  # data key wrapped with AES key wrap (RFC 3394) under a keyring KEK
WRAP_X25519 = 2  # data key wrapped to an X25519 public key (write-only vaults)
_WRAPPED_LEN = {WRAP_AES_KW: 40, WRAP_X25519: 72}  # 72 = ephemeral public key 32 + AES-KW 40
SEGMENT_SIZE = 64 * 1024
TAG_SIZE = 16
_FIXED = struct.Struct(">4sBB8sH")  # magic, version, wrap, key_id, wrapped_len
_TAIL = struct.Struct(">7sIQ")  # nonce_prefix, segment_size, plaintext_len

Random = Callable[[int], bytes]


@dataclass(frozen=True)
class Header:
    key_id: bytes
    wrap: int
    wrapped_dek: bytes
    nonce_prefix: bytes
    segment_size: int
    plaintext_len: int
    raw: bytes

    @property
    def size(self) -> int:
        return len(self.raw)

    def segments(self) -> int:
        return max(1, -(-self.plaintext_len // self.segment_size))

    def ciphertext_len(self) -> int:
        return self.size + self.plaintext_len + self.segments() * TAG_SIZE


def hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=None, info=info).derive(key)


def keyed_hash(key: bytes, domain: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 with a domain prefix: blob names and ids that reveal nothing without the key."""
    h = _keyed_prefix(key, domain).copy()
    h.update(data)
    return h.digest()


@functools.lru_cache(maxsize=16)
def _keyed_prefix(key: bytes, domain: bytes):
    """The HMAC state after the key and the domain prefix, copied for each hash (chunk ids are hashed
    thousands of times a second; setting up the key each time costs as much as hashing 1 KiB)."""
    return hmac.new(key, domain + b"\0", hashlib.sha256)


class KekWrap:
    """Wrap 1: AES key wrap under a symmetric key-encryption key."""

    wrap = WRAP_AES_KW

    def __init__(self, kek: bytes, key_id: bytes):
        self.kek, self.key_id = kek, key_id

    def wrap_dek(self, dek: bytes, rng: Random) -> bytes:
        return aes_key_wrap(self.kek, dek)

    def unwrap_dek(self, header: "Header") -> bytes:
        return _unwrap(self.kek, header.wrapped_dek)


class PublicWrap:
    """Wrap 2: to an X25519 public key; only the holder of the private key can unwrap."""

    wrap = WRAP_X25519

    def __init__(self, public: bytes, private: bytes | None = None):
        self.public, self.private = public, private
        self.key_id = recipient_id(public)

    def wrap_dek(self, dek: bytes, rng: Random) -> bytes:
        ephemeral = X25519PrivateKey.from_private_bytes(rng(32))
        eph_pub = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self.public))
        return eph_pub + aes_key_wrap(_x25519_kek(shared, eph_pub, self.public), dek)

    def unwrap_dek(self, header: "Header") -> bytes:
        if self.private is None:
            raise PrivateKeyNeeded("this blob is sealed to the vault's public key; opening it needs the private key")
        eph_pub = header.wrapped_dek[:32]
        try:
            shared = X25519PrivateKey.from_private_bytes(self.private).exchange(X25519PublicKey.from_public_bytes(eph_pub))
        except ValueError:  # an all-zero shared secret: a forged ephemeral key
            raise IntegrityError("blob data key does not unwrap (altered header)") from None
        return _unwrap(_x25519_kek(shared, eph_pub, self.public), header.wrapped_dek[32:])


def recipient_id(public: bytes) -> bytes:
    """The 8-byte key id of an X25519 recipient (blob header `key_id` for wrap 2)."""
    return hkdf(public, b"replicator v1 recipient-id", 8)


def _x25519_kek(shared: bytes, eph_pub: bytes, public: bytes) -> bytes:
    return hkdf(shared, b"replicator v1 x25519-wrap" + eph_pub + public)


def _unwrap(kek: bytes, wrapped: bytes) -> bytes:
    try:
        return aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap:
        raise IntegrityError("blob data key does not unwrap (wrong key or altered header)") from None


def seal(plaintext: bytes, kek: bytes, key_id: bytes, rng: Random = os.urandom,
         segment_size: int = SEGMENT_SIZE) -> bytearray:
    """Encrypt plaintext into one self-contained blob, its data key wrapped under `kek`."""
    return seal_with(plaintext, KekWrap(kek, key_id), rng, segment_size)


def seal_with(plaintext: bytes, wrapper: "KekWrap | PublicWrap", rng: Random = os.urandom,
              segment_size: int = SEGMENT_SIZE) -> bytearray:
    """Encrypt plaintext into one self-contained blob, its data key wrapped by `wrapper`."""
    dek = rng(32)
    wrapped = wrapper.wrap_dek(dek, rng)
    raw = _FIXED.pack(MAGIC, VERSION, wrapper.wrap, wrapper.key_id, len(wrapped)) + wrapped + _TAIL.pack(
        rng(7), segment_size, len(plaintext))
    header = parse_header(raw)
    aead = AESGCM(dek)
    out = bytearray(header.ciphertext_len())  # sealed in place: no copy per segment, no join
    out[:len(raw)] = raw
    src, dst, pos = memoryview(plaintext), memoryview(out), len(raw)
    n = header.segments()
    for i in range(n):
        seg = src[i * segment_size:(i + 1) * segment_size]
        pos += aead.encrypt_into(_nonce(header.nonce_prefix, i, i == n - 1), seg, raw, dst[pos:pos + len(seg) + TAG_SIZE])
    return out


def parse_header(data: bytes) -> Header:
    """Parse a blob header from the first bytes of a blob (at least the whole header)."""
    if len(data) < _FIXED.size:
        raise IntegrityError("blob too short for a header")
    magic, version, wrap, key_id, wrapped_len = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise IntegrityError("not a replicator blob (bad magic)")
    if version != VERSION:
        raise IntegrityError(f"unsupported blob version {version}")
    if _WRAPPED_LEN.get(wrap) != wrapped_len:
        raise IntegrityError(f"unsupported key wrapping {wrap}/{wrapped_len}")
    end = _FIXED.size + wrapped_len + _TAIL.size
    if len(data) < end:
        raise IntegrityError("blob header truncated")
    wrapped = bytes(data[_FIXED.size:_FIXED.size + wrapped_len])
    prefix, seg, plen = _TAIL.unpack_from(data, _FIXED.size + wrapped_len)
    if not 1024 <= seg <= 16 * 2**20 or plen > 2**40:
        raise IntegrityError("implausible blob header")
    return Header(key_id, wrap, wrapped, prefix, seg, plen, bytes(data[:end]))


def open_blob(blob: bytes, kek: bytes) -> bytearray:
    """Decrypt a whole blob sealed under `kek`; IntegrityError if anything was altered, truncated or extended."""
    header = parse_header(blob)
    if header.wrap != WRAP_AES_KW:
        raise IntegrityError(f"blob key wrapping {header.wrap} needs a key pair, not a key-encryption key")
    return open_with_dek(blob, header, _unwrap(kek, header.wrapped_dek))


def open_with_dek(blob: bytes | memoryview, header: Header, dek: bytes) -> bytearray:
    """Decrypt a whole blob whose data key is already unwrapped."""
    if len(blob) != header.ciphertext_len():
        raise IntegrityError(f"blob is {len(blob)} bytes, its header says {header.ciphertext_len()}")
    return decrypt_with_dek(header, dek, 0, memoryview(blob)[header.size:])


def decrypt_segments(header: Header, kek: bytes, first: int, data: bytes | memoryview) -> bytearray:
    """Decrypt consecutive segments starting at index `first` (random access into a blob)."""
    return decrypt_with_dek(header, _unwrap(kek, header.wrapped_dek), first, data)


def decrypt_with_dek(header: Header, dek: bytes, first: int, data: bytes | memoryview) -> bytearray:
    """Decrypt consecutive segments from index `first`, given the blob's unwrapped data key."""
    aead = AESGCM(dek)
    n = header.segments()
    step = header.segment_size + TAG_SIZE
    src = memoryview(data)
    pieces = range(0, len(src), step)
    if first + len(pieces) > n:
        raise IntegrityError("blob has more segments than its header says")
    if 0 < len(src) % step < TAG_SIZE:  # a last piece too short to hold a tag
        raise IntegrityError(f"segment {first + len(pieces) - 1} failed authentication")
    out = bytearray(len(src) - len(pieces) * TAG_SIZE)  # opened in place, as sealed
    dst, pos = memoryview(out), 0
    for j, at in enumerate(pieces):
        i, piece = first + j, src[at:at + step]
        try:
            pos += aead.decrypt_into(_nonce(header.nonce_prefix, i, i == n - 1), piece, header.raw,
                                     dst[pos:pos + len(piece) - TAG_SIZE])
        except InvalidTag:
            raise IntegrityError(f"segment {i} failed authentication") from None
    return out


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)
