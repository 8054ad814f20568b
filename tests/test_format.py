"""replicator.vault.format, .manifest and .keys: framing, records, references, manifests, key files."""

from __future__ import annotations

import base64
import json
import os
import struct

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.errors import IntegrityError, VaultError, WrongKey
from replicator.vault import keys
from replicator.vault.format import (ENC_RAW, ENC_ZSTD, ChunkRef, data_name, decode_record, encode_record, frame,
                                     padded_length, parse_snapshot_name, snapshot_name, unframe)
from replicator.vault.manifest import Entry, SnapshotRoot, decode_page, encode_pages, encode_row_pages

fuzz = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
H1, H2 = "a" * 64, "0123456789abcdef" * 4


def ref(size: int = 10, blob: str = H1, cid: str = H2) -> ChunkRef:
    return ChunkRef(blob, 4200, 0, size + 1, size, cid)


# -- padding and framing -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 8, 100, 4095, 4096, 4097, 10_000, 131_072, 131_073])
def test_padded_length_small_sizes_round_to_4k(n):
    p = padded_length(n)
    assert p >= n and p % 4096 == 0 and p - n < 4096


@given(st.integers(1, 2**40))
@settings(max_examples=500, deadline=None)
def test_padded_length_bounds(n):
    p = padded_length(n)
    assert p >= n
    assert p % 4096 == 0
    assert p - n < max(4096, n / 32 + 1)  # at most 4 KiB or 1/32 (~3.1%) of the size
    if n >= 2**20:
        assert (p - n) / n <= 0.032


def test_padded_length_worst_case_just_past_a_power_of_two():
    for k in range(20, 41):
        n = 2**k + 1
        assert (padded_length(n) - n) / n <= 0.032
        assert padded_length(2**k) == 2**k


def test_padded_length_is_monotonic():
    sizes = sorted(set(range(0, 20_000, 7)) | {2**k + d for k in range(12, 30) for d in (-1, 0, 1)})
    lengths = [padded_length(n) for n in sizes]
    assert lengths == sorted(lengths)


@fuzz
@given(st.binary(max_size=20_000))
def test_frame_round_trip(payload):
    framed = frame(payload)
    assert len(framed) == padded_length(8 + len(payload))
    assert unframe(framed) == payload


def test_unframe_rejects_non_zero_padding():
    framed = bytearray(frame(b"abc"))
    framed[-1] = 1
    with pytest.raises(IntegrityError, match="padding"):
        unframe(bytes(framed))
    framed = bytearray(frame(b"abc"))
    framed[8 + 3] = 0x80  # first padding byte
    with pytest.raises(IntegrityError, match="padding"):
        unframe(bytes(framed))


@pytest.mark.parametrize("data", [b"", b"\0" * 7, struct.pack(">Q", 4089) + bytes(4088),
                                  struct.pack(">Q", 2**64 - 1) + bytes(100), struct.pack(">Q", 9)])
def test_unframe_rejects_bad_lengths(data):
    with pytest.raises(IntegrityError):
        unframe(data)


def test_unframe_exact_and_unpadded():
    assert unframe(struct.pack(">Q", 3) + b"abc") == b"abc"
    assert unframe(struct.pack(">Q", 0)) == b""


# -- records -----------------------------------------------------------------------------


@pytest.mark.parametrize("data,encoding", [
    (b"", ENC_RAW), (b"x" * 63, ENC_RAW), (b"x" * 64, ENC_ZSTD), (b"hello world " * 10_000, ENC_ZSTD),
    (os.urandom(100_000), ENC_RAW), (json.dumps(list(range(5000))).encode(), ENC_ZSTD),
])
def test_record_round_trip(data, encoding):
    rec = encode_record(data)
    assert rec[0] == encoding
    if encoding == ENC_ZSTD:
        assert len(rec) < len(data) * 0.97
    assert decode_record(rec, len(data)) == data


def test_record_without_compression_is_raw():
    data = b"a" * 10_000
    rec = encode_record(data, compress=False)
    assert rec == bytes([ENC_RAW]) + data
    assert decode_record(rec, len(data)) == data


@fuzz
@given(st.one_of(st.binary(max_size=5000), st.text(max_size=2000).map(str.encode)), st.booleans())
def test_record_round_trip_property(data, compress):
    assert decode_record(encode_record(data, compress), len(data)) == data


@pytest.mark.parametrize("data", [b"abc" * 100, os.urandom(300)])
def test_record_wrong_expected_size_is_rejected(data):
    rec = encode_record(data)
    for wrong in (0, len(data) - 1, len(data) + 1, 2 * len(data)):
        with pytest.raises(IntegrityError):
            decode_record(rec, wrong)


@pytest.mark.parametrize("record", [
    b"", b"\x01", b"\x01garbage", bytes([ENC_ZSTD]) + b"\x28\xb5\x2f\xfd" + os.urandom(40),
    bytes([ENC_ZSTD]) + zstandard.ZstdCompressor().compress(b"q" * 1000)[:-3],  # truncated frame
    b"\x02" + b"x" * 10, b"\xff",
])
def test_garbage_records_are_rejected(record):
    with pytest.raises(IntegrityError):
        decode_record(record, 1000)


def test_zstd_frame_declaring_a_huge_size_is_rejected_before_allocating():
    z = zstandard.ZstdCompressor().compress(b"a" * 1000)
    assert z[4] == 0x60  # single segment, 2-byte content size: rewrite as an 8-byte one
    for declared in (2**40, 10**9, 999, 1001):
        forged = z[:4] + bytes([0xE0]) + struct.pack("<Q", declared) + z[7:]
        assert zstandard.frame_content_size(forged) == declared
        with pytest.raises(IntegrityError):
            decode_record(bytes([ENC_ZSTD]) + forged, 1000)


def test_zstd_frame_without_content_size_is_bounded_by_the_expected_size():
    z = zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 1000)
    assert decode_record(bytes([ENC_ZSTD]) + z, 1000) == b"a" * 1000
    with pytest.raises(IntegrityError):
        decode_record(bytes([ENC_ZSTD]) + z, 999)


def test_zstd_record_with_bytes_after_the_frame_is_rejected():
    rec = encode_record(b"hello " * 100)
    assert rec[0] == ENC_ZSTD
    for extra in (b"\0", b"garbage", rec[1:]):  # trailing bytes, a second frame
        with pytest.raises(IntegrityError):
            decode_record(rec + extra, 600)


def test_record_claiming_implausible_size_is_rejected():
    with pytest.raises(IntegrityError, match="implausible"):
        decode_record(encode_record(b"x" * 1000), 65 * 2**20)


@fuzz
@given(st.binary(max_size=300), st.integers(0, 10_000))
def test_decode_record_on_garbage_raises_only_integrity_error(record, size):
    try:
        out = decode_record(record, size)
    except IntegrityError:
        return
    assert len(out) == size


# -- names -------------------------------------------------------------------------------


def test_names():
    assert data_name(H1) == f"data/aa/{H1}"
    assert snapshot_name("job", 7) == "snapshots/job/0000000007"
    assert parse_snapshot_name("snapshots/job/0000000007") == ("job", 7)
    for bad in ("snapshots/job/7", "snapshots/job/000000000x", "data/job/0000000007", "snapshots/0000000007"):
        assert parse_snapshot_name(bad) is None


# -- chunk references ------------------------------------------------------------------------


def test_chunk_ref_round_trip():
    r = ChunkRef(H1, 5000, 12, 300, 1000, H2)
    assert ChunkRef.from_json(json.loads(json.dumps(r.to_json()))) == r


@pytest.mark.parametrize("v", [
    None, "x", {}, [], [H1, 1, 2, 3, 4], [H1, 1, 2, 3, 4, H2, 5],
    [H1, -1, 0, 0, 0, H2], [H1, 0, -5, 0, 0, H2], [H1, 0, 0, 0, -1, H2],
    [H1, 1.0, 0, 0, 0, H2], [H1, "1", 0, 0, 0, H2], [H1, True, 0, 0, 0, H2], [H1, 0, 0, False, 0, H2],
    [H1, None, 0, 0, 0, H2], [1, 0, 0, 0, 0, H2], [H1, 0, 0, 0, 0, None],
    ["A" * 64, 0, 0, 0, 0, H2], [H1[:-1], 0, 0, 0, 0, H2], [H1 + "0", 0, 0, 0, 0, H2], [H1, 0, 0, 0, 0, "g" * 64],
    ["../x", 0, 0, 0, 0, H2], ["../" + H1[3:], 0, 0, 0, 0, H2], [H1[:63] + "/", 0, 0, 0, 0, H2],
    [H1 + "\n", 0, 0, 0, 0, H2], [H1, 0, 0, 0, 0, H2 + "\n"], [("aa/" + H1)[:64], 0, 0, 0, 0, H2],
    (H1, 0, 0, 0, 0, H2),
])
def test_chunk_ref_rejects_malformed(v):
    with pytest.raises(IntegrityError):
        ChunkRef.from_json(v)


# -- manifests ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=70)
    | st.sampled_from([H1, H2, "k", "s", "c", "d", 1, 0, -1]),
    lambda children: st.lists(children, max_size=7) | st.dictionaries(
        st.sampled_from(["k", "s", "m", "e", "v", "c", "d", "x"]) | st.text(max_size=5), children, max_size=7),
    max_leaves=30)
chunk_like = st.lists(st.sampled_from([H1, H2, "../x", 0, 1, 5, -1, True, None, 2**64]), min_size=6, max_size=6)
entry_like = st.fixed_dictionaries(
    {"k": st.one_of(st.text(max_size=20), json_values)},
    optional={"s": st.one_of(st.integers(-2, 20), json_values), "c": st.lists(st.one_of(chunk_like, json_values), max_size=3),
              "d": st.sampled_from([0, 1, True, "1", None]), "m": json_values, "e": json_values, "v": json_values})


entries = st.builds(
    lambda key, sizes, m, e, v: Entry(key, sum(sizes), m, e, v, tuple(ref(s) for s in sizes)),
    st.text(max_size=40), st.lists(st.integers(0, 2**40), max_size=4),
    st.none() | st.text(max_size=30), st.none() | st.text(max_size=30), st.none() | st.text(max_size=30))


@fuzz
@given(entries)
def test_entry_round_trip(entry):
    assert Entry.from_json(json.loads(json.dumps(entry.to_json()))) == entry


def test_tombstone_round_trip():
    t = Entry("gone/key", 0, deleted=True)
    assert t.to_json() == {"k": "gone/key", "d": 1}
    assert Entry.from_json({"k": "gone/key", "d": 1}) == t


@pytest.mark.parametrize("d", [
    None, [], "k", {"s": 0, "c": []}, {"k": 1, "s": 0, "c": []}, {"k": "x", "c": []}, {"k": "x", "s": 0},
    {"k": "x", "s": -1, "c": []}, {"k": "x", "s": 1.0, "c": []}, {"k": "x", "s": True, "c": [ref(1).to_json()]},
    {"k": "x", "s": "0", "c": []}, {"k": "x", "s": 0, "c": {}}, {"k": "x", "s": 0, "c": [[1]]},
    {"k": "x", "s": 11, "c": [ref(10).to_json()]}, {"k": "x", "s": 0, "c": [], "m": 5},
    {"k": "x", "s": 0, "c": [], "e": []}, {"k": "x", "s": 0, "c": [], "v": {}},
])
def test_entry_rejects_malformed(d):
    with pytest.raises(IntegrityError):
        Entry.from_json(d)


@fuzz
@given(st.one_of(entry_like, json_values))
def test_entry_from_json_fuzz_raises_only_integrity_error(d):
    try:
        e = Entry.from_json(d)
    except IntegrityError:
        return
    assert isinstance(e.key, str) and e.size >= 0 and (e.deleted or sum(c.size for c in e.chunks) == e.size)


def root(**kw) -> SnapshotRoot:
    base = dict(job="photos", kind="objects", seq=3, prev="ab" * 32, started="2026-01-01T00:00:00.000000Z",
                finished="2026-01-01T00:01:00.000000Z", checkpoint=False, pages=(ref(5), ref(7)),
                stats={"listed": 2})
    base.update(kw)
    return SnapshotRoot(**base)


@pytest.mark.parametrize("r", [root(), root(prev=None, seq=0, checkpoint=True, pages=(), stats={})])
def test_snapshot_root_round_trip(r):
    assert SnapshotRoot.from_json(r.to_json()) == r


def _root_json(**changes) -> bytes:
    d = json.loads(root().to_json())
    for k, v in changes.items():
        if v is ...:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d).encode()


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b"null", b'"snapshot"', b"\xff\xfe", b"[" * 100_000, b'{"a":' * 100_000,
    _root_json(type="other"), _root_json(format=2), _root_json(format="1"), _root_json(job=...),
    _root_json(pages=...), _root_json(seq=-1), _root_json(seq="3"), _root_json(seq=True), _root_json(seq=1.5),
    _root_json(job=5), _root_json(kind=None), _root_json(started=0), _root_json(finished=[]),
    _root_json(checkpoint=1), _root_json(prev=5), _root_json(pages=5), _root_json(pages="ab"),
    _root_json(pages=[[1, 2]]), _root_json(pages={H1: 1}), _root_json(stats="x"), _root_json(stats=[1]),
])
def test_snapshot_root_rejects_malformed(data):
    with pytest.raises(IntegrityError):
        SnapshotRoot.from_json(data)


root_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["snapshot", "x"]), "format": st.sampled_from([1, 1.0, True, "1"])},
    optional={k: json_values for k in ("job", "kind", "seq", "prev", "started", "finished", "checkpoint", "stats")}
    | {"pages": st.lists(st.one_of(chunk_like, json_values), max_size=3)})


@fuzz
@given(st.one_of(root_like.map(lambda d: json.dumps(d).encode()), json_values.map(lambda d: json.dumps(d).encode()),
                 st.binary(max_size=200)))
def test_snapshot_root_fuzz_raises_only_integrity_error(data):
    try:
        r = SnapshotRoot.from_json(data)
    except IntegrityError:
        return
    assert isinstance(r.seq, int) and r.seq >= 0 and isinstance(r.stats, dict)


def test_pages_round_trip_and_split():
    es = [Entry(f"key/{i:05d}", 10, "2026-01-01T00:00:00Z", f"etag{i}", None, (ref(10),)) for i in range(300)]
    es.append(Entry("deleted", 0, deleted=True))
    pages = list(encode_pages(es, 4096))
    assert len(pages) > 5 and all(p.endswith(b"\n") for p in pages)
    assert [e for p in pages for e in decode_page(p)] == es
    assert list(encode_pages([], 4096)) == []


@fuzz
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.integers(0, 2**40), st.one_of(st.none(), st.text(max_size=30)),
                          st.one_of(st.none(), st.text(max_size=30)), st.one_of(st.none(), st.text(max_size=30)),
                          st.booleans(), st.integers(0, 3)), max_size=30), st.integers(64, 4096))
def test_pages_from_catalogue_rows_are_the_pages_of_their_entries(rows, page_size):
    """encode_row_pages copies each row's chunk list in as JSON text: the bytes must be exactly those
    encode_pages writes for the same entries (unicode, quotes and control characters in keys)."""
    entries, table = [], []
    for key, size, mtime, etag, version, deleted, n in sorted(rows, key=lambda r: r[0]):
        if deleted:
            entries.append(Entry(key, 0, deleted=True))
            table.append((key, 0, None, None, None, "[]", 1))
            continue
        refs = tuple(ChunkRef(H1, 4200 + i, i, size + 1, size, H2) for i in range(n))
        entries.append(Entry(key, size * n, mtime, etag, version, refs))
        table.append((key, size * n, mtime, etag, version, "[" + ",".join(r.json_text() for r in refs) + "]", 0))
    assert list(encode_row_pages(table, page_size)) == list(encode_pages(entries, page_size))
    assert [json.loads(r.json_text()) for e in entries for r in e.chunks] == [r.to_json() for e in entries for r in e.chunks]


@pytest.mark.parametrize("page", [b"\n", b"{}\n", b"not json\n", b'{"k": "x", "d": 1}\n[1]\n', b"[" * 100_000, b"\xff\n"])
def test_decode_page_rejects_malformed(page):
    with pytest.raises(IntegrityError):
        list(decode_page(page))


@fuzz
@given(st.one_of(
    st.lists(st.one_of(entry_like, json_values), max_size=4).map(lambda ls: b"\n".join(json.dumps(d).encode() for d in ls)),
    st.binary(max_size=300)))
def test_decode_page_fuzz_raises_only_integrity_error(page):
    try:
        out = list(decode_page(page))
    except IntegrityError:
        return
    assert all(isinstance(e, Entry) for e in out)


# -- key files -------------------------------------------------------------------------------


def test_key_file_create_and_load(tmp_path):
    path = tmp_path / "sub" / "vault.key"
    key = keys.create_key_file(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert keys.load_key_file(path) == key
    assert len(key.secret) == 32 and len(key.key_id) == 16
    assert key.secret.hex() not in repr(key) and "secret" not in repr(key)


def test_key_file_is_created_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        keys.create_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600


def test_key_file_refuses_to_overwrite(tmp_path):
    path = tmp_path / "vault.key"
    key = keys.create_key_file(path)
    before = path.read_bytes()
    with pytest.raises(VaultError, match="already exists"):
        keys.create_key_file(path)
    assert path.read_bytes() == before and keys.load_key_file(path) == key
    other = tmp_path / "other"
    other.write_text("precious")
    with pytest.raises(VaultError):
        keys.create_key_file(other)
    assert other.read_text() == "precious"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o610, 0o601])
def test_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "vault.key"
    keys.create_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(VaultError) as e:
        keys.load_key_file(path)
    assert "chmod 600" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("text", [
    "", "hello\n", "replicator-key-v1:\n", "replicator-key-v1:not base64!\n",
    "replicator-key-v1:" + base64.b64encode(bytes(31)).decode() + "\n",
    "replicator-key-v1:" + base64.b64encode(bytes(33)).decode() + "\n",
    "# replicator-key-v1:" + base64.b64encode(bytes(32)).decode() + "\n",
    # only the first key line counts (docs/FORMAT.md §3), even if a later one is good
    "replicator-key-v1:" + base64.b64encode(bytes(16)).decode() + "\nreplicator-key-v1:"
    + base64.b64encode(bytes(32)).decode() + "\n",
])
def test_non_key_files_are_refused(tmp_path, text):
    path = tmp_path / "not.key"
    path.write_text(text)
    os.chmod(path, 0o600)
    with pytest.raises(VaultError, match="not a replicator key file"):
        keys.load_key_file(path)


def test_binary_missing_and_directory_key_files_are_refused(tmp_path):
    binary = tmp_path / "bin.key"
    binary.write_bytes(b"\xff\xfe\x00" * 10)
    os.chmod(binary, 0o600)
    with pytest.raises(VaultError):
        keys.load_key_file(binary)
    with pytest.raises(VaultError, match="not found"):
        keys.load_key_file(tmp_path / "missing.key")
    with pytest.raises(VaultError):
        keys.load_key_file(tmp_path)


def test_key_file_format_is_stable(tmp_path):
    path = tmp_path / "vault.key"
    path.write_text("# comment\nreplicator-key-v1:" + base64.b64encode(bytes(range(32))).decode() + "\n")
    os.chmod(path, 0o600)
    assert keys.load_key_file(path).secret == bytes(range(32))


# -- keyring ---------------------------------------------------------------------------------


CONFIG = b'{"format": "replicator-vault", "version": 1}'


def test_keyring_round_trip():
    master, keyring = keys.MasterKey(os.urandom(32)), keys.new_keyring()
    obj = keys.wrap_keyring(keyring, master, "vault-1", CONFIG)
    assert keyring.data_kek.hex() not in obj.decode() and base64.b64encode(keyring.data_kek).decode() not in obj.decode()
    assert keys.unwrap_keyring(obj, master, "vault-1", CONFIG) == keyring
    assert json.loads(obj)["key_id"] == master.key_id
    assert "kek" not in repr(keyring)


def test_keyring_wrong_master_key_or_vault():
    master, keyring = keys.MasterKey(os.urandom(32)), keys.new_keyring()
    obj = keys.wrap_keyring(keyring, master, "vault-1", CONFIG)
    with pytest.raises(WrongKey):
        keys.unwrap_keyring(obj, keys.MasterKey(os.urandom(32)), "vault-1", CONFIG)
    with pytest.raises(WrongKey):  # the keyring of another vault
        keys.unwrap_keyring(obj, master, "vault-2", CONFIG)


def test_keyring_altered_config_is_integrity_error():
    master, keyring = keys.MasterKey(os.urandom(32)), keys.new_keyring()
    obj = keys.wrap_keyring(keyring, master, "vault-1", CONFIG)
    for altered in (CONFIG + b" ", CONFIG.replace(b"1", b"2"), b""):
        with pytest.raises(IntegrityError):
            keys.unwrap_keyring(obj, master, "vault-1", altered)


@pytest.mark.parametrize("obj", [b"", b"not json", b"[]", b"{}", b'{"nonce": 5, "keyring": "x"}',
                                 b'{"nonce": "!!", "keyring": "AAAA"}', b"\xff"])
def test_keyring_malformed_object(obj):
    with pytest.raises((IntegrityError, WrongKey)):
        keys.unwrap_keyring(obj, keys.MasterKey(bytes(32)), "v", CONFIG)


@pytest.mark.parametrize("version", [2, 0, "1", True, 1.0, None])
def test_keyring_other_version_is_refused(version):
    master, keyring = keys.MasterKey(os.urandom(32)), keys.new_keyring()
    d = json.loads(keys.wrap_keyring(keyring, master, "v", CONFIG))
    assert d["version"] == 1
    d["version"] = version
    with pytest.raises(WrongKey, match="version"):
        keys.unwrap_keyring(json.dumps(d).encode(), master, "v", CONFIG)
    del d["version"]
    with pytest.raises(IntegrityError):
        keys.unwrap_keyring(json.dumps(d).encode(), master, "v", CONFIG)


def test_keyring_tampered_ciphertext():
    master, keyring = keys.MasterKey(os.urandom(32)), keys.new_keyring()
    d = json.loads(keys.wrap_keyring(keyring, master, "v", CONFIG))
    ct = bytearray(base64.b64decode(d["keyring"]))
    ct[0] ^= 1
    d["keyring"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(WrongKey):
        keys.unwrap_keyring(json.dumps(d).encode(), master, "v", CONFIG)
