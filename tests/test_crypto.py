"""replicator.vault.crypto: segmented AES-256-GCM blobs, key wrap, keyed hashes.

The golden vectors in tests/vectors/crypto_v1.json guard on-disk format version 1:
they must always decrypt. Regenerate them (only on a deliberate format change) with

    REGENERATE_VECTORS=1 .venv/bin/python -m pytest -q tests/test_crypto.py
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import IntegrityError
from replicator.vault import crypto, keys
from replicator.vault.crypto import SEGMENT_SIZE, TAG_SIZE, open_blob, parse_header, seal

VECTORS = Path(__file__).parent / "vectors" / "crypto_v1.json"
SMALL = 1024  # the smallest segment size parse_header accepts: fast multi-segment blobs
KEK = bytes(range(32))
KEY_ID = b"\x01\x02\x03\x04\x05\x06\x07\x08"

fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def det_rng(seed: bytes):
    """A deterministic stand-in for os.urandom: SHA-256 in counter mode over a seed."""
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    h = parse_header(blob)
    body = blob[h.size:]
    step = h.segment_size + TAG_SIZE
    return blob[:h.size], [body[i:i + step] for i in range(0, len(body), step)]


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("segment_size", [SMALL, SEGMENT_SIZE])
@pytest.mark.parametrize("size_of", [lambda s: 0, lambda s: 1, lambda s: s - 1, lambda s: s,
                                     lambda s: s + 1, lambda s: 3 * s + 17, lambda s: 4 * s],
                         ids=["0", "1", "seg-1", "seg", "seg+1", "3seg+17", "4seg"])
def test_round_trip_sizes(segment_size, size_of):
    n = size_of(segment_size)
    plaintext = os.urandom(n)
    blob = seal(plaintext, KEK, KEY_ID, segment_size=segment_size)
    h = parse_header(blob)
    assert (h.key_id, h.segment_size, h.plaintext_len) == (KEY_ID, segment_size, n)
    assert h.segments() == max(1, -(-n // segment_size))
    assert len(blob) == h.ciphertext_len() == h.size + n + h.segments() * TAG_SIZE
    assert open_blob(blob, KEK) == plaintext


def test_default_segment_size_and_fresh_keys():
    a, b = seal(b"same", KEK, KEY_ID), seal(b"same", KEK, KEY_ID)
    assert parse_header(a).segment_size == SEGMENT_SIZE
    assert a != b  # fresh data key and nonce prefix per blob
    assert parse_header(a).wrapped_dek != parse_header(b).wrapped_dek
    assert open_blob(a, KEK) == open_blob(b, KEK) == b"same"


def test_open_blob_accepts_memoryview():
    blob = seal(b"x" * 3000, KEK, KEY_ID, segment_size=SMALL)
    assert open_blob(memoryview(blob), KEK) == b"x" * 3000


def test_random_access_decrypt_segments():
    plaintext = os.urandom(5 * SMALL + 100)
    blob = seal(plaintext, KEK, KEY_ID, segment_size=SMALL)
    h = parse_header(blob)
    _, segs = segments(blob)
    assert crypto.decrypt_segments(h, KEK, 2, b"".join(segs[2:4])) == plaintext[2 * SMALL:4 * SMALL]
    assert crypto.decrypt_segments(h, KEK, 5, segs[5]) == plaintext[5 * SMALL:]
    with pytest.raises(IntegrityError):  # segment 3 presented as segment 2
        crypto.decrypt_segments(h, KEK, 2, segs[3])
    with pytest.raises(IntegrityError):  # a full segment presented as the last one
        crypto.decrypt_segments(h, KEK, 5, segs[4])
    full = seal(os.urandom(4 * SMALL), KEK, KEY_ID, segment_size=SMALL)
    _, fsegs = segments(full)
    with pytest.raises(IntegrityError, match="more segments"):
        crypto.decrypt_segments(parse_header(full), KEK, 3, fsegs[3] + fsegs[3])
    for cut in range(1, TAG_SIZE + 1):  # whole segments, then a last piece too short for its tag
        with pytest.raises(IntegrityError, match="segment 5 failed"):
            crypto.decrypt_segments(h, KEK, 4, segs[4] + segs[5][:cut])


def test_deterministic_rng_gives_identical_blobs():
    a = seal(b"hello" * 500, KEK, KEY_ID, rng=det_rng(b"seed"), segment_size=SMALL)
    b = seal(b"hello" * 500, KEK, KEY_ID, rng=det_rng(b"seed"), segment_size=SMALL)
    c = seal(b"hello" * 500, KEK, KEY_ID, rng=det_rng(b"other"), segment_size=SMALL)
    assert a == b != c


@fuzz
@given(st.binary(max_size=5 * SMALL))
def test_round_trip_property(plaintext):
    assert open_blob(seal(plaintext, KEK, KEY_ID, segment_size=SMALL), KEK) == plaintext


# -- tampering ---------------------------------------------------------------------

blobs = st.binary(max_size=3 * SMALL + 10).map(lambda p: seal(p, KEK, KEY_ID, segment_size=SMALL))


@fuzz
@given(blobs, st.data())
def test_any_flipped_bit_is_rejected(blob, data):
    bit = data.draw(st.integers(0, len(blob) * 8 - 1), label="bit")
    tampered = bytearray(blob)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        open_blob(bytes(tampered), KEK)


def test_every_header_bit_flip_is_rejected():
    blob = seal(os.urandom(2 * SMALL + 5), KEK, KEY_ID, segment_size=SMALL)
    for bit in range(parse_header(blob).size * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            open_blob(bytes(tampered), KEK)


@fuzz
@given(blobs, st.data())
def test_truncation_is_rejected(blob, data):
    cut = data.draw(st.integers(0, len(blob) - 1), label="cut")
    with pytest.raises(IntegrityError):
        open_blob(blob[:cut], KEK)


@fuzz
@given(blobs, st.binary(min_size=1, max_size=2 * SMALL + 40))
def test_appended_bytes_are_rejected(blob, extra):
    with pytest.raises(IntegrityError):
        open_blob(blob + extra, KEK)


def test_dropping_whole_trailing_segments_is_rejected():
    blob = seal(os.urandom(4 * SMALL), KEK, KEY_ID, segment_size=SMALL)
    header, segs = segments(blob)
    for keep in range(len(segs)):
        with pytest.raises(IntegrityError):
            open_blob(header + b"".join(segs[:keep]), KEK)


@fuzz
@given(st.integers(2, 6), st.data())
def test_swapped_segments_are_rejected(n, data):
    blob = seal(os.urandom(n * SMALL), KEK, KEY_ID, segment_size=SMALL)  # all segments full
    header, segs = segments(blob)
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
    segs[i], segs[j] = segs[j], segs[i]
    with pytest.raises(IntegrityError):
        open_blob(header + b"".join(segs), KEK)


@fuzz
@given(st.integers(1, 5), st.data())
def test_segment_spliced_from_another_blob_is_rejected(n, data):
    size = n * SMALL + data.draw(st.integers(0, SMALL - 1), label="tail")
    a = seal(os.urandom(size), KEK, KEY_ID, segment_size=SMALL)
    b = seal(os.urandom(size), KEK, KEY_ID, segment_size=SMALL)  # same key, same shape
    ha, sa = segments(a)
    hb, sb = segments(b)
    i = data.draw(st.integers(0, len(sa) - 1), label="i")
    spliced = sa[:i] + [sb[i]] + sa[i + 1:]
    with pytest.raises(IntegrityError):
        open_blob(ha + b"".join(spliced), KEK)
    with pytest.raises(IntegrityError):  # b's header (its data key) over a's body
        open_blob(hb + b"".join(sa), KEK)


def test_wrong_kek_is_rejected():
    blob = seal(b"secret", KEK, KEY_ID)
    for kek in (bytes(32), KEK[::-1], os.urandom(32)):
        with pytest.raises(IntegrityError, match="unwrap"):
            open_blob(blob, kek)


def _retail(blob: bytes, **changes) -> bytes:
    """Rewrite header fields (after the wrapped key) in place."""
    h = parse_header(blob)
    fields = {"nonce_prefix": h.nonce_prefix, "segment_size": h.segment_size, "plaintext_len": h.plaintext_len}
    fields.update(changes)
    tail = struct.pack(">7sIQ", fields["nonce_prefix"], fields["segment_size"], fields["plaintext_len"])
    return blob[:h.size - len(tail)] + tail + blob[h.size:]


def test_header_tampering_is_rejected():
    plaintext = os.urandom(2 * SMALL + 100)
    blob = seal(plaintext, KEK, KEY_ID, segment_size=SMALL)
    h = parse_header(blob)
    # plaintext_len one shorter, body shortened to match: lengths agree, the header (AAD) does not
    with pytest.raises(IntegrityError, match="authentication"):
        open_blob(_retail(blob, plaintext_len=h.plaintext_len - 1)[:-1], KEK)
    with pytest.raises(IntegrityError):
        open_blob(_retail(blob, plaintext_len=h.plaintext_len + 1), KEK)
    # a larger segment size that keeps the total length consistent: the one-segment reading
    one = seal(b"", KEK, KEY_ID, segment_size=SMALL)
    with pytest.raises(IntegrityError, match="authentication"):
        open_blob(_retail(one, segment_size=2 * SMALL), KEK)
    with pytest.raises(IntegrityError, match="authentication"):
        open_blob(_retail(blob, nonce_prefix=bytes(7)), KEK)
    # another key id: same wrapped key, different associated data
    other = blob[:6] + b"\xff" * 8 + blob[14:]
    assert parse_header(other).key_id == b"\xff" * 8
    with pytest.raises(IntegrityError, match="authentication"):
        open_blob(other, KEK)


# -- parse_header on hostile input --------------------------------------------------

_FIXED = struct.Struct(">4sBB8sH")


def _plausible_prefix(data: bytes) -> bytes:
    return _FIXED.pack(b"RPLB", 1, 1, data[:8].ljust(8, b"\0"), 40) + data[8:]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(_plausible_prefix),
                 st.binary(max_size=200).map(lambda d: b"RPLB" + d)))
def test_parse_header_on_garbage_raises_only_integrity_error(data):
    try:
        h = parse_header(data)
    except IntegrityError:
        return
    # accepted: then it is a plausible header and nothing more is read
    assert 1024 <= h.segment_size <= 16 * 2**20 and h.plaintext_len <= 2**40
    assert h.raw == data[:h.size]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200).map(_plausible_prefix), st.binary(max_size=200))
def test_open_blob_on_garbage_is_cheap_and_raises_integrity_error(data, body):
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError):
            open_blob(data + body, KEK)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_truncated_headers_raise_integrity_error():
    blob = seal(b"abc", KEK, KEY_ID)
    size = parse_header(blob).size
    for cut in range(size):
        with pytest.raises(IntegrityError):
            parse_header(blob[:cut])
    assert parse_header(blob[:size]).plaintext_len == 3


def test_huge_claimed_plaintext_is_refused_without_allocating():
    blob = seal(b"abc", KEK, KEY_ID)
    for plen in (2**40, 2**40 + 1, 2**64 - 1):
        forged = _retail(blob, plaintext_len=plen)
        tracemalloc.start()
        try:
            with pytest.raises(IntegrityError):
                open_blob(forged, KEK)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20
    for seg in (0, 1023, 16 * 2**20 + 1, 2**32 - 1):
        with pytest.raises(IntegrityError, match="implausible"):
            parse_header(_retail(blob, segment_size=seg))


@pytest.mark.parametrize("field,value,match", [
    (slice(0, 4), b"RPLX", "magic"), (slice(4, 5), b"\x02", "version"),
    (slice(5, 6), b"\x02", "wrapping"), (slice(14, 16), b"\x00\x20", "wrapping"),
])
def test_header_fields_are_checked(field, value, match):
    blob = bytearray(seal(b"abc", KEK, KEY_ID))
    blob[field] = value
    with pytest.raises(IntegrityError, match=match):
        parse_header(bytes(blob))


def test_keyed_hash_is_domain_separated():
    k = bytes(32)
    assert crypto.keyed_hash(k, b"chunk", b"x") != crypto.keyed_hash(k, b"job", b"x")
    assert crypto.keyed_hash(k, b"a", b"bc") != crypto.keyed_hash(k, b"ab", b"c")
    assert len(crypto.keyed_hash(k, b"chunk", b"")) == 32


# -- golden vectors: on-disk format version 1 ------------------------------------------

_VEC_PLAINTEXT = b"replicator golden vector: format version 1\n" * 60  # 2640 bytes, 3 segments of 1024


def _generate_vectors() -> dict:
    """The vectors: everything from a fixed seed. Run only on a deliberate format change."""
    rng = det_rng(b"replicator golden vectors v1")
    master = keys.MasterKey(rng(32))
    keyring = keys.new_keyring(rng)
    vault_id = "00112233445566778899aabbccddeeff"
    config = b'{"format": "replicator-vault", "version": 1}'
    kek_id = crypto.hkdf(keyring.data_kek, b"replicator v1 kek-id", 8)
    return {
        "comment": "Format version 1 golden vectors; hex unless noted. Must always decrypt. See tests/test_crypto.py.",
        "master_key": master.secret.hex(),
        "key_id": master.key_id,
        "keyring": {
            "vault_id": vault_id,
            "config": config.decode(),
            "object": keys.wrap_keyring(keyring, master, vault_id, config, rng).decode(),
            "data_kek": keyring.data_kek.hex(),
            "id_key": keyring.id_key.hex(),
        },
        "kek_id": kek_id.hex(),
        "blob": {
            "rng_seed": "blob-1",
            "segment_size": SMALL,
            "plaintext": _VEC_PLAINTEXT.hex(),
            "sealed": seal(_VEC_PLAINTEXT, keyring.data_kek, kek_id, det_rng(b"blob-1"), SMALL).hex(),
        },
        "empty_blob": {
            "rng_seed": "blob-2",
            "segment_size": SEGMENT_SIZE,
            "sealed": seal(b"", keyring.data_kek, kek_id, det_rng(b"blob-2")).hex(),
        },
        "keyed_hash": {
            "domain": "chunk",
            "data": b"golden chunk".hex(),
            "digest": crypto.keyed_hash(keyring.id_key, b"chunk", b"golden chunk").hex(),
        },
    }


def _write_vectors() -> None:
    VECTORS.parent.mkdir(exist_ok=True)
    VECTORS.write_text(json.dumps(_generate_vectors(), indent=1) + "\n")


if os.environ.get("REGENERATE_VECTORS") == "1":
    _write_vectors()


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


def test_vector_master_key_and_keyring(vectors):
    master = keys.MasterKey(bytes.fromhex(vectors["master_key"]))
    assert master.key_id == vectors["key_id"]
    kr = vectors["keyring"]
    keyring = keys.unwrap_keyring(kr["object"].encode(), master, kr["vault_id"], kr["config"].encode())
    assert keyring.data_kek.hex() == kr["data_kek"] and keyring.id_key.hex() == kr["id_key"]
    assert crypto.hkdf(keyring.data_kek, b"replicator v1 kek-id", 8).hex() == vectors["kek_id"]


@pytest.mark.parametrize("name", ["blob", "empty_blob"])
def test_vector_blobs_decrypt(vectors, name):
    v = vectors[name]
    kek = bytes.fromhex(vectors["keyring"]["data_kek"])
    blob = bytes.fromhex(v["sealed"])
    h = parse_header(blob)
    assert h.key_id.hex() == vectors["kek_id"] and h.segment_size == v["segment_size"]
    plaintext = bytes.fromhex(v.get("plaintext", ""))
    assert open_blob(blob, kek) == plaintext
    # sealing is deterministic given the rng: today's code writes exactly the stored bytes
    assert seal(plaintext, kek, h.key_id, det_rng(v["rng_seed"].encode()), v["segment_size"]) == blob


def test_vector_keyed_hash(vectors):
    v = vectors["keyed_hash"]
    id_key = bytes.fromhex(vectors["keyring"]["id_key"])
    assert crypto.keyed_hash(id_key, v["domain"].encode(), bytes.fromhex(v["data"])).hex() == v["digest"]


def test_vectors_match_generator(vectors):
    assert _generate_vectors() == vectors


if __name__ == "__main__":
    _write_vectors()
    print(f"wrote {VECTORS}")
