"""The vault's layout and plaintext framing: pure, no I/O, no keys.

    config                      plaintext JSON: format, version, vault id, algorithms
    keys/<key_id>               the keyring, wrapped under one master key
    data/<2 hex>/<64 hex>       content blobs (chunks, manifest pages)
    snapshots/<job id>/<seq>    one manifest root per completed run of a job

Inside every blob (after decryption) the plaintext is
    u64 payload_len | payload | zero padding
and the payload is a run of records, each `encoding u8 | body`; a ChunkRef names
a record by (blob, offset, length) within the payload.
"""

from __future__ import annotations

import re
import struct
import threading
from dataclasses import dataclass

import zstandard

from replicator.errors import IntegrityError

FORMAT_NAME = "replicator-vault"
FORMAT_VERSION = 1
CONFIG_NAME = "config"
CHUNK_SIZE = 4 * 2**20  # objects are cut into chunks of this many bytes
PAGE_SIZE = 2 * 2**20  # manifest pages are cut near this many bytes of JSON

ENC_RAW = 0
ENC_ZSTD = 1
_LEN = struct.Struct(">Q")
_ZSTD_LEVEL = 3
_MAX_RECORD = 64 * 2**20
_REUSE_BELOW = 512 * 2**10  # records smaller than this share a per-thread (de)compressor
_zstd = threading.local()
_HEX64 = re.compile(r"[0-9a-f]{64}")


def data_name(blob_id: str) -> str:
    return f"data/{blob_id[:2]}/{blob_id}"


def key_name(key_id: str) -> str:
    return f"keys/{key_id}"


def snapshot_name(job_id: str, seq: int) -> str:
    return f"snapshots/{job_id}/{seq:010d}"


def parse_snapshot_name(name: str) -> tuple[str, int] | None:
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "snapshots" and parts[2].isdigit() and len(parts[2]) == 10:
        return parts[1], int(parts[2])
    return None


def padded_length(n: int) -> int:
    """Pad to 4 KiB, or to 1/32 of the next power of two for large sizes: the provider
    learns sizes only to within a few KiB (small) or about 3% (large)."""
    step = max(4096, (1 << max(0, n.bit_length() - 1)) // 32)  # 1/32 of the largest power of two <= n
    return -(-n // step) * step


def frame(payload: bytes) -> bytes:
    """payload -> plaintext with its length and zero padding."""
    total = padded_length(_LEN.size + len(payload))
    return _LEN.pack(len(payload)) + payload + bytes(total - _LEN.size - len(payload))


def unframe(plaintext: bytes | bytearray) -> bytes:
    if len(plaintext) < _LEN.size:
        raise IntegrityError("blob plaintext too short")
    (n,) = _LEN.unpack_from(plaintext)
    if _LEN.size + n > len(plaintext):
        raise IntegrityError("blob payload length exceeds the blob")
    if any(plaintext[_LEN.size + n:]):
        raise IntegrityError("blob padding is not zero")
    return bytes(memoryview(plaintext)[_LEN.size:_LEN.size + n])


def _compressor(size: int) -> zstandard.ZstdCompressor:
    """Making a compressor costs more than compressing a small record with it (15 us against 5 us
    for 8 KiB), so small records share one per thread; a large one gets its own, so that no thread
    keeps the working memory of a 4 MiB chunk."""
    if size >= _REUSE_BELOW:
        return zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    c = getattr(_zstd, "c", None)
    if c is None:
        c = _zstd.c = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return c


def _decompressor(size: int) -> zstandard.ZstdDecompressor:
    """As _compressor: 9 us to make one, 1 us to decompress 8 KiB with it."""
    if size >= _REUSE_BELOW:
        return zstandard.ZstdDecompressor()
    d = getattr(_zstd, "d", None)
    if d is None:
        d = _zstd.d = zstandard.ZstdDecompressor()
    return d


def encode_record(data: bytes, compress: bool = True) -> bytes:
    """One record: zstd when it saves at least 3%, else raw."""
    if compress and len(data) >= 64:
        z = _compressor(len(data)).compress(data)
        if len(z) < len(data) * 0.97:
            return bytes([ENC_ZSTD]) + z
    return bytes([ENC_RAW]) + data


def framed_record(data: bytes, compress: bool = True) -> tuple[bytearray, int]:
    """frame(encode_record(data)) built in one buffer, without the record as a separate copy (a 4 MiB
    chunk costs one plaintext allocation less); returns (plaintext, record length)."""
    body, enc = data, ENC_RAW
    if compress and len(data) >= 64:
        z = _compressor(len(data)).compress(data)
        if len(z) < len(data) * 0.97:
            body, enc = z, ENC_ZSTD
        del z
    n = 1 + len(body)
    out = bytearray(padded_length(_LEN.size + n))
    _LEN.pack_into(out, 0, n)
    out[_LEN.size] = enc
    out[_LEN.size + 1:_LEN.size + n] = body
    return out, n


def decode_record(record: bytes | memoryview, expected_size: int) -> bytes:
    if not record:
        raise IntegrityError("empty record")
    enc, body = record[0], record[1:]
    if enc == ENC_RAW:
        data = bytes(body)
    elif enc == ENC_ZSTD:
        if expected_size > _MAX_RECORD:
            raise IntegrityError("record claims an implausible size")
        try:
            # A frame header may declare its size; decompress() would allocate whatever it says.
            if zstandard.frame_content_size(body) not in (-1, expected_size):
                raise IntegrityError(f"record declares a size other than the expected {expected_size}")
            data = _decompressor(expected_size).decompress(body, max_output_size=expected_size,
                                                           allow_extra_data=False)  # exactly one frame
        except zstandard.ZstdError as e:
            raise IntegrityError(f"record does not decompress: {e}") from None
    else:
        raise IntegrityError(f"unknown record encoding {enc}")
    if len(data) != expected_size:
        raise IntegrityError(f"record holds {len(data)} bytes, expected {expected_size}")
    return data


@dataclass(frozen=True)
class ChunkRef:
    """Where one chunk of plaintext lives: a record in a blob, plus what it must hash to."""

    blob: str  # blob id (64 hex); stored at data_name(blob)
    blob_size: int  # stored (ciphertext) size of the blob
    offset: int  # record offset within the blob's payload
    length: int  # record length
    size: int  # plaintext size of the chunk
    id: str  # keyed hash of the chunk plaintext (64 hex)

    def to_json(self) -> list:
        return [self.blob, self.blob_size, self.offset, self.length, self.size, self.id]

    def json_text(self) -> str:
        """json.dumps(self.to_json()) in compact form, written out directly (hex ids need no escaping);
        the catalogue stores refs as this text, some 20,000 of them a second."""
        return f'["{self.blob}",{self.blob_size},{self.offset},{self.length},{self.size},"{self.id}"]'

    @classmethod
    def from_json(cls, v: list) -> "ChunkRef":
        if not (isinstance(v, list) and len(v) == 6 and all(isinstance(x, str) for x in (v[0], v[5]))
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v[1:5])
                and _HEX64.fullmatch(v[0]) and _HEX64.fullmatch(v[5])):
            raise IntegrityError(f"malformed chunk reference {str(v)[:80]}")
        return cls(*v)
