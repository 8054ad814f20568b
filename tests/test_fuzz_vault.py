"""Hostile vault objects through the real readers: mutated and truncated snapshot roots, manifest
pages, blob headers, keyring objects, configs and key files. Always an IntegrityError or a
VaultError naming the object; never another exception, a hang or a large allocation.

tests/test_format.py and tests/test_crypto.py fuzz the parsers with generated garbage; here the
starting point is a real vault's objects, mutated a little (what bit rot, a truncated upload or a
tampering provider produce), and they go through `Vault` as a run, ls, restore or verify would.
"""

from __future__ import annotations

import base64
import json
import os
import tracemalloc

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from replicator.errors import IntegrityError, NotFound, VaultError, WrongKey
from replicator.vault import crypto, keys
from replicator.vault.format import CONFIG_NAME, ChunkRef, key_name
from replicator.vault.manifest import Entry, SnapshotRoot, decode_page, encode_pages
from replicator.vault.vault import Vault

fuzz = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
MEMORY_LIMIT = 8 << 20  # bytes a reader may allocate on a small hostile object


class MemoryStore:
    """A Store in a dict; `overlay` swaps in hostile bytes for one name."""

    url = "memory://fuzz"

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put(self, name, data):
        if name in self.objects:
            from replicator.errors import AlreadyExists

            raise AlreadyExists(name)
        self.objects[name] = bytes(data)

    def get(self, name, offset=0, length=None):
        if name not in self.objects:
            raise NotFound(name)
        data = self.objects[name]
        return data[offset:] if length is None else data[offset:offset + length]

    def stat(self, name):
        return len(self.get(name))

    def list(self, prefix=""):
        return iter([(n, len(d)) for n, d in self.objects.items() if n.startswith(prefix)])

    def delete(self, name):
        self.objects.pop(name)

    def exists(self):
        return True

    def create(self):
        pass

    def overlay(self, name: str, data: bytes) -> "MemoryStore":
        other = MemoryStore()
        other.objects = {**self.objects, name: data}
        return other


MASTER = keys.MasterKey(bytes(range(32)))
STORE = MemoryStore()
VAULT = Vault.create(STORE, MASTER)
JOB_ID = VAULT.job_id("fuzz")
CHUNK = VAULT.write_chunk(b"chunk of content " * 300)
ENTRIES = [Entry(f"dir/key-{i:03d}", CHUNK.size, "2026-01-01T00:00:00Z", f"etag{i}", None, (CHUNK,)) for i in range(40)]
ENTRIES.append(Entry("gone", 0, deleted=True))
PAGE_PLAIN = next(iter(encode_pages(ENTRIES, 1 << 20)))
PAGE = VAULT.write_chunk(PAGE_PLAIN)
ROOT = SnapshotRoot(job="fuzz", kind="objects", seq=0, prev=None, started="2026-01-01T00:00:00.000000Z",
                    finished="2026-01-01T00:00:01.000000Z", checkpoint=True, pages=(PAGE,), stats={"live": 40})
VAULT.write_snapshot(JOB_ID, ROOT)
ROOT_NAME = f"snapshots/{JOB_ID}/0000000000"
KEYRING_NAME = key_name(MASTER.key_id)


@st.composite
def mutated(draw, original: bytes, region: int | None = None):
    """A small change to `original` (within its first `region` bytes, if given): bit flips,
    truncation, extension, a spliced or zeroed range, or a swap of two ranges."""
    data = bytearray(original)
    limit = min(len(data), region) if region else len(data)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "zero", "swap", "replace"]))
    at = draw(st.integers(0, max(limit - 1, 0)))
    if kind == "flip":
        for i in draw(st.lists(st.integers(0, limit - 1), min_size=1, max_size=4)):
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[at:]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif kind == "splice":
        data[at:at] = draw(st.binary(min_size=1, max_size=32))
    elif kind == "zero":
        n = draw(st.integers(1, 64))
        data[at:at + n] = bytes(len(data[at:at + n]))
    elif kind == "swap":
        n = draw(st.integers(1, 32))
        other = draw(st.integers(0, max(limit - n, 0)))
        a, b = bytes(data[at:at + n]), bytes(data[other:other + n])
        data[at:at + len(b)], data[other:other + len(a)] = b, a
    else:
        data = bytearray(draw(st.binary(max_size=len(original) + 16)))
    result = bytes(data)
    assume(result != original)
    return result


def bounded(fn):
    """Run fn; return what it raised (or None), and fail if it allocated much."""
    tracemalloc.start()
    try:
        try:
            fn()
            error = None
        except Exception as e:  # judged by the caller
            error = e
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{peak} bytes allocated"
    return error


def assert_named(error, *names: str) -> None:
    assert isinstance(error, (IntegrityError, VaultError)), f"{type(error).__name__}: {error}"
    assert any(n in str(error) for n in names), f"{error!r} does not name {names}"


# -- snapshot roots ------------------------------------------------------------------------------------


@fuzz
@given(mutated(STORE.objects[ROOT_NAME]))
def test_mutated_snapshot_roots(data):
    vault = Vault(STORE.overlay(ROOT_NAME, data), MASTER, VAULT.keyring, VAULT.config)
    assert_named(bounded(lambda: vault.read_snapshot(JOB_ID, 0)), ROOT_NAME)


@fuzz
@given(mutated(STORE.objects[ROOT_NAME], region=crypto._FIXED.size + 40 + crypto._TAIL.size))
def test_mutated_blob_headers_of_roots(data):
    vault = Vault(STORE.overlay(ROOT_NAME, data), MASTER, VAULT.keyring, VAULT.config)
    assert_named(bounded(lambda: vault.read_snapshot(JOB_ID, 0)), ROOT_NAME)


def test_a_root_moved_to_another_position_or_job_is_refused():
    vault = Vault(STORE.overlay(f"snapshots/{JOB_ID}/0000000001", STORE.objects[ROOT_NAME]), MASTER, VAULT.keyring,
                  VAULT.config)
    assert_named(bounded(lambda: vault.read_snapshot(JOB_ID, 1)), f"snapshots/{JOB_ID}/0000000001")
    other = VAULT.job_id("other")
    vault = Vault(STORE.overlay(f"snapshots/{other}/0000000000", STORE.objects[ROOT_NAME]), MASTER, VAULT.keyring,
                  VAULT.config)
    assert_named(bounded(lambda: vault.read_snapshot(other, 0)), f"snapshots/{other}/0000000000")


# -- manifest pages and data blobs -------------------------------------------------------------------


def _data_name(ref: ChunkRef) -> str:
    return f"data/{ref.blob[:2]}/{ref.blob}"


@fuzz
@given(st.sampled_from([PAGE, CHUNK]).flatmap(lambda ref: st.tuples(st.just(ref), mutated(STORE.objects[_data_name(ref)]))))
def test_mutated_pages_and_data_blobs(case):
    ref, data = case
    vault = Vault(STORE.overlay(_data_name(ref), data), MASTER, VAULT.keyring, VAULT.config)
    assert_named(bounded(lambda: vault.read_chunk(ref)), _data_name(ref))


@fuzz
@given(mutated(STORE.objects[_data_name(PAGE)], region=crypto._FIXED.size + 40 + crypto._TAIL.size))
def test_mutated_blob_headers_of_pages(data):
    vault = Vault(STORE.overlay(_data_name(PAGE), data), MASTER, VAULT.keyring, VAULT.config)
    assert_named(bounded(lambda: vault.read_chunk(PAGE)), _data_name(PAGE))


@fuzz
@given(st.builds(lambda r, d: ChunkRef(PAGE.blob, *r, PAGE.id),
                 st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
                 st.none()))
def test_references_that_lie_about_sizes_and_offsets(ref):
    """A reference (from a page) that does not fit its blob: refused before anything big is allocated."""
    assume(ref != PAGE)
    error = bounded(lambda: VAULT.read_chunk(ref))
    assert_named(error, _data_name(PAGE))


@fuzz
@given(mutated(PAGE_PLAIN))
def test_mutated_page_plaintext_through_decode_page(page):
    """decode_page sees only authenticated plaintext; mutated anyway, it never fails but with IntegrityError."""
    error = bounded(lambda: list(decode_page(page)))
    assert error is None or isinstance(error, IntegrityError), repr(error)


@fuzz
@given(mutated(PAGE_PLAIN))
def test_validly_sealed_malformed_pages_are_named(page):
    """A page that authenticates but does not parse (a writer bug; a compromised writer of a
    write-only vault): History names the page blob and its snapshot."""
    import dataclasses

    from replicator.history import History

    vault = Vault.open(STORE.overlay("unused", b""), MASTER)
    ref = vault.write_chunk(page)
    root = dataclasses.replace(ROOT, pages=(ref,))
    error = bounded(lambda: list(History(vault, JOB_ID, [0]).entries(root)))
    if error is not None:
        assert_named(error, _data_name(ref))
        assert "snapshot 0 of job fuzz" in str(error) or _data_name(ref) in str(error)


# -- keyring, config, key files ------------------------------------------------------------------------


@fuzz
@given(mutated(STORE.objects[KEYRING_NAME]))
def test_mutated_keyring_objects(data):
    opened = []
    error = bounded(lambda: opened.append(Vault.open(STORE.overlay(KEYRING_NAME, data), MASTER)))
    if error is None:  # a change outside what is authenticated (JSON layout): the very same keyring
        assert opened[0].keyring == VAULT.keyring
        return
    assert_named(error, KEYRING_NAME)


@fuzz
@given(mutated(STORE.objects[CONFIG_NAME]))
def test_mutated_configs(data):
    error = bounded(lambda: Vault.open(STORE.overlay(CONFIG_NAME, data), MASTER))
    assert_named(error, "config", "vault")


KEY_TEXT = keys.key_file_text(MASTER)


@fuzz
@given(mutated(KEY_TEXT.encode()))
def test_mutated_key_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("k") / "vault.key"
    path.write_bytes(data)
    os.chmod(path, 0o600)
    loaded = []
    error = bounded(lambda: loaded.append(keys.load_key_file(path, passphrase=lambda: "pw")))
    if error is None:  # still a key file, of another key (or the same one, reformatted): the vault says no
        if loaded[0] != MASTER:
            assert isinstance(bounded(lambda: Vault.open(STORE, loaded[0])), WrongKey)
        return
    assert_named(error, str(path))


def test_a_protected_key_file_cannot_demand_a_huge_scrypt(tmp_path, monkeypatch):
    """The scrypt cost in a key file is read from the file: a hostile one must not make us allocate
    gigabytes (N=2^22, r=8 is 4 GiB and half a minute here)."""
    requested = []

    def fake_scrypt(passphrase, salt, log_n):
        requested.append(log_n)
        return bytes(32)

    monkeypatch.setattr(keys, "_scrypt", fake_scrypt)
    text = keys.key_file_text(MASTER, passphrase="pw")
    line = next(l for l in text.splitlines() if l.startswith(keys.SCRYPT_PREFIX))
    fields = line[len(keys.SCRYPT_PREFIX):].split(":")
    path = tmp_path / "vault.key"
    for log_n in (22, 21, 20):
        fields[1] = str(log_n)
        path.write_text(keys.SCRYPT_PREFIX + ":".join(fields) + "\n")
        os.chmod(path, 0o600)
        with pytest.raises(VaultError):
            keys.load_key_file(path, passphrase=lambda: "pw")
    assert all(n <= 18 for n in requested), f"scrypt with log2(N) = {requested} was attempted"


def test_the_unmutated_objects_read_back():
    """The fixtures are sound: without mutation every reader succeeds."""
    assert VAULT.read_snapshot(JOB_ID, 0)[0] == ROOT
    assert list(decode_page(VAULT.read_chunk(PAGE))) == ENTRIES
    assert Vault.open(STORE, MASTER).keyring == VAULT.keyring
    assert base64.b64encode(MASTER.secret).decode() in KEY_TEXT and json.loads(STORE.objects[CONFIG_NAME])
