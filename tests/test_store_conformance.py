"""One conformance suite for the Store contract (replicator/stores/base.py), run on every vault backend.

Each backend is a real server on 127.0.0.1 (tests/servers.py): moto S3,
fake-gcs-server, Azurite, OpenSSH; plus a local directory. Every test gets a
fresh, empty store under a unique bucket / container / directory.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import servers
from replicator.errors import AlreadyExists, NotFound, StoreError
from replicator.stores import open_store
from replicator.stores.libcloud_store import LibcloudStore
from replicator.stores.local import LocalStore

# libcloud-*: the apache-libcloud adapter (libcloud://PROVIDER/...), S3 driver on moto, Azure Blobs on Azurite.
BACKENDS = ["local", "s3", "gcs", "azure", "sftp", "libcloud-s3", "libcloud-azure"]
# The bandwidth wrapper (stores/throttle.py) is a Store too: run it over a local directory.
STORES = BACKENDS + ["local-throttled"]


def _unique() -> str:
    """A bucket / container / directory name valid everywhere: lowercase, 3-63 chars."""
    return f"conf-{uuid.uuid4().hex}"


def _target(backend: str, request, tmp_path: Path) -> tuple[str, dict]:
    """(url, options) for a fresh, not yet created store on `backend`."""
    if backend in ("local", "local-throttled"):
        return str(tmp_path / "vault"), {}
    if backend.startswith("libcloud-"):
        return _libcloud_target(backend, request)
    server = request.getfixturevalue(f"{backend}_server")
    if backend == "s3":
        return f"s3://{_unique()}/vault", server.fsspec_options()
    if backend == "gcs":
        return f"gs://{_unique()}/vault", server.fsspec_options()
    if backend == "azure":
        return f"az://{_unique()}/vault", {"connection_string": server.connection_string}
    if backend == "sftp":
        # host, port and username come from the URL; keys and known_hosts from the options.
        options = {k: v for k, v in server.fsspec_options().items() if k not in ("host", "port", "username")}
        return f"sftp://{server.username}@{server.host}:{server.port}{server.root}/{_unique()}", options
    raise AssertionError(backend)


def _libcloud_target(backend: str, request) -> tuple[str, dict]:
    """Driver options: host/port/secure point the driver at the local server (TEST-SERVERS.md)."""
    from urllib.parse import urlparse

    if backend == "libcloud-s3":
        endpoint = urlparse(request.getfixturevalue("s3_server").endpoint_url)
        return f"libcloud://s3/{_unique()}/vault", {
            "key": "testing", "secret": "testing", "host": endpoint.hostname, "port": endpoint.port, "secure": False}
    if backend == "libcloud-azure":  # a custom host switches the driver to account-prefixed paths, as Azurite wants
        endpoint = urlparse(request.getfixturevalue("azure_server").endpoint_url)
        return f"libcloud://azure_blobs/{_unique()}/vault", {
            "key": servers.AZURITE_ACCOUNT, "secret": servers.AZURITE_KEY,
            "host": endpoint.hostname, "port": endpoint.port, "secure": False}
    raise AssertionError(backend)


@pytest.fixture(params=STORES)
def target(request, tmp_path):
    url, options = _target(request.param, request, tmp_path)
    return url, options, ("1GiB/s" if request.param == "local-throttled" else None)


@pytest.fixture
def new_store(target):
    """A store whose root has not been created yet."""
    url, options, bandwidth = target
    return open_store(url, options, bandwidth=bandwidth)


@pytest.fixture
def store(new_store):
    """A fresh, created, empty store."""
    new_store.create()
    return new_store


@pytest.fixture
def other_writer(store, target):
    """A second, independent handle on the same store, as another process would have."""
    url, options, _ = target
    if not isinstance(_inner(store), LocalStore):
        options = {**options, "skip_instance_cache": True}  # a new filesystem object, with its own caches
    return open_store(url, options)


def _inner(store):
    """The backend store under every wrapper."""
    while hasattr(store, "inner"):
        store = store.inner
    return store


def _listed(store, prefix: str = "") -> list[tuple[str, int]]:
    return sorted(store.list(prefix))


def _raw_names(store) -> list[str]:
    """Everything physically under the store's root, bypassing list()'s filtering."""
    store = _inner(store)
    if isinstance(store, LocalStore):
        return sorted(
            os.path.relpath(os.path.join(d, f), store.root).replace(os.sep, "/")
            for d, _, files in os.walk(store.root) for f in files
        )
    if isinstance(store, LibcloudStore):  # straight from the driver's listing, past the adapter's list()
        d, root = store.driver, store.prefix + "/"
        return sorted(o.name[len(root):] for o in d.iterate_container_objects(d.get_container(store.container))
                      if o.name.startswith(root))
    root = store.root + "/"
    return sorted(p[len(root):] for p in store.fs.find(store.root, refresh=True) if p.startswith(root))


# -- create / exists -----------------------------------------------------------


def test_create_and_exists(new_store):
    assert new_store.exists() is False
    new_store.create()
    assert new_store.exists() is True
    new_store.create()  # idempotent
    assert new_store.exists() is True
    assert _listed(new_store) == []


# -- put / get -----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 5 * 1024 * 1024], ids=["empty", "1B", "1000B", "5MiB"])
def test_put_get_roundtrip(store, size):
    data = os.urandom(size)
    store.put("data/ab/obj", data)
    got = store.get("data/ab/obj")
    assert type(got) is bytes
    assert got == data
    assert store.stat("data/ab/obj") == size
    assert _listed(store) == [("data/ab/obj", size)]
    if size > 2:  # a range over nearly all of it (SFTP and HTTP split big reads into many requests)
        assert store.get("data/ab/obj", 1, size - 2) == data[1:-1]


def test_read_after_write(store):
    # Warm every cache an adapter might keep (listings, negative lookups) first.
    assert _listed(store, "snapshots/") == []
    with pytest.raises(NotFound):
        store.stat("snapshots/j/0000000001")
    with pytest.raises(NotFound):
        store.get("snapshots/j/0000000001")
    for i in range(1, 4):
        name = f"snapshots/j/{i:010d}"
        store.put(name, b"x" * i)
        assert store.stat(name) == i
        assert store.get(name) == b"x" * i
        assert _listed(store, "snapshots/j/") == [(f"snapshots/j/{k:010d}", k) for k in range(1, i + 1)]
        assert _listed(store) == [(f"snapshots/j/{k:010d}", k) for k in range(1, i + 1)]


def test_read_after_write_by_another_writer(store, other_writer):
    """What one handle writes, another sees at once, even after it listed and looked the name up."""
    assert _listed(store, "data/") == []
    assert _listed(store) == []
    with pytest.raises(NotFound):
        store.stat("data/ab/x")
    with pytest.raises(NotFound):
        store.get("data/ab/x")
    other_writer.put("data/ab/x", b"abc")
    assert store.stat("data/ab/x") == 3
    assert store.get("data/ab/x") == b"abc"
    assert store.get("data/ab/x", 1, 1) == b"b"
    assert _listed(store, "data/") == [("data/ab/x", 3)]
    assert _listed(store) == [("data/ab/x", 3)]
    with pytest.raises(AlreadyExists):
        store.put("data/ab/x", b"other")
    store.put("data/ab/y", b"yy")
    assert _listed(other_writer, "data/ab/") == [("data/ab/x", 3), ("data/ab/y", 2)]
    store.delete("data/ab/x")
    with pytest.raises(NotFound):
        other_writer.stat("data/ab/x")
    assert _listed(other_writer) == [("data/ab/y", 2)]


def test_ranged_reads(store):
    data = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable mod 256
    store.put("blob", data)
    n = len(data)
    assert store.get("blob", 0, 10) == data[:10]  # start
    assert store.get("blob", 1000, 333) == data[1000:1333]  # middle
    assert store.get("blob", n - 7, 7) == data[-7:]  # exactly the end
    assert store.get("blob", n - 7, 100) == data[-7:]  # past the end: shorter
    assert store.get("blob", n, 10) == b""  # offset at the end: empty
    assert store.get("blob", 5000) == data[5000:]  # offset, no length: to the end
    assert store.get("blob", 0) == data
    assert store.get("blob", 17, 0) == b""  # zero length
    assert store.get("blob", n + 100, 5) == b""  # offset past the end
    store.put("empty", b"")
    assert store.get("empty", 0, 10) == b""
    assert store.get("empty", 0) == b""
    with pytest.raises(NotFound):
        store.get("missing", 0, 0)


def test_stat_exact_size(store):
    for name, size in [("a", 0), ("b", 1), ("c", 4097), ("d/e", 65536)]:
        store.put(name, b"\xff" * size)
    for name, size in [("a", 0), ("b", 1), ("c", 4097), ("d/e", 65536)]:
        assert store.stat(name) == size


def test_missing_object_is_not_found(store):
    store.put("data/ab/present", b"here")
    for name in ["data/ab/absent", "data/zz/absent", "absent", "data/ab/presen", "data/ab", "data/ab/present/deeper"]:
        with pytest.raises(NotFound):
            store.get(name)
        with pytest.raises(NotFound):
            store.get(name, 1, 2)
        with pytest.raises(NotFound):
            store.stat(name)


def test_put_existing_name_refused_and_old_content_kept(store):
    store.put("data/ab/x", b"original")
    with pytest.raises(AlreadyExists):
        store.put("data/ab/x", b"replacement, longer than the original")
    with pytest.raises(AlreadyExists):
        store.put("data/ab/x", b"")
    assert store.get("data/ab/x") == b"original"
    assert store.stat("data/ab/x") == len(b"original")
    assert _listed(store) == [("data/ab/x", len(b"original"))]
    assert _raw_names(store) == ["data/ab/x"]  # the refused puts left nothing behind


# -- list ------------------------------------------------------------------------

_TREE = {
    "data/ab/x": b"1",
    "data/ac/y": b"22",
    "data/bc/z": b"333",
    "snapshots/j/0000000001": b"4444",
    "snapshots/j/0000000002": b"55555",
    "snapshots/k/0000000001": b"666666",
    "config": b"7777777",
}


def _expect(prefix: str) -> list[tuple[str, int]]:
    return sorted((n, len(d)) for n, d in _TREE.items() if n.startswith(prefix))


def test_list_prefixes(store):
    for name, data in _TREE.items():
        store.put(name, data)
    assert _listed(store) == _expect("")
    assert len(_expect("")) == len(_TREE)
    cases = {
        "data/": 3, "data/a": 2, "data/ab": 1, "data/ab/": 1, "data/ab/x": 1, "d": 3, "dat": 3,
        "snapshots/j/": 2, "snapshots/j/000000000": 2, "snapshots/j/0000000002": 1,
        "snapshots/": 3, "s": 3, "c": 1, "config": 1,
    }
    for prefix, count in cases.items():
        got = _listed(store, prefix)
        assert got == _expect(prefix), prefix
        assert len(got) == count, prefix


@pytest.mark.parametrize(
    "prefix", ["nothing", "nothing/", "data/zz", "data/zz/", "data/ab/y", "snapshots/q/", "x/y/z/"]
)
def test_list_no_match_is_empty(store, prefix):
    for name, data in _TREE.items():
        store.put(name, data)
    assert _listed(store, prefix) == []


def test_list_empty_store(store):
    assert _listed(store) == []
    assert _listed(store, "data/") == []


# Listings come in pages: S3 returns at most 1000 keys per request, gcsfs asks GCS for 1000, and
# OpenSSH answers a READDIR with at most 100 names. Azure pages at 5000: crossing that would take
# 5001 puts (~12 s on Azurite), so Azure's paging is not exercised here; its listing is by the
# same adlfs code path the other list tests cover.
@pytest.mark.parametrize(
    ("target", "count"),
    [("local", 1100), ("s3", 1100), ("gcs", 1100), ("sftp", 250),
     # libcloud's S3 driver pages at 1000 (marker); its Azure driver asks for 100 per page.
     ("libcloud-s3", 1100), ("libcloud-azure", 250)],
    indirect=["target"],
)
def test_list_paginates(store, count):
    names = [f"data/pp/{i:05d}" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: store.put(n, n[-5:].encode()), names))
    store.put("data/pq/other", b"o")
    got = _listed(store, "data/pp/")
    assert len(got) == count
    assert got == [(n, 5) for n in names]
    assert len(_listed(store, "data/")) == count + 1
    assert len(_listed(store)) == count + 1


# -- names -------------------------------------------------------------------------

_UNUSUAL = [
    "with space/and more spaces ",
    " leading-space",
    "ünïcødé/日本語-ファイル",
    "plus+sign",
    "eq=ual",
    "per%20cent%",
    "hash#tag",
    "q?mark",
    "star*",
    "br[ack]et",
    "tilde~amp&at@comma,semi;",
    "quote'dq\"",
    "dots...x/.hidden/a.b",
    "mixed/a+b=c%d#e ü",
]


def test_unusual_names_roundtrip(store):
    for i, name in enumerate(_UNUSUAL):
        store.put(name, f"payload {i}".encode())
    for i, name in enumerate(_UNUSUAL):
        assert store.get(name) == f"payload {i}".encode(), name
        assert store.stat(name) == len(f"payload {i}".encode()), name
        with pytest.raises(AlreadyExists):
            store.put(name, b"again")
    assert _listed(store) == sorted((n, len(f"payload {i}".encode())) for i, n in enumerate(_UNUSUAL))
    assert _listed(store, "mixed/a+b=") == [("mixed/a+b=c%d#e ü", len(b"payload 13"))]
    assert _listed(store, "ünïcødé/") == [("ünïcødé/日本語-ファイル", len(b"payload 2"))]


_INVALID = [
    "", "../x", "a/../b", "a/..", "..", ".", "./a", "a/./b", "/abs", "a//b", "a/", "data/ab/",
    "a\x00b", "a\nb", "a\x1fb", "tab\tname", "back\\slash",
]


class _Tripwire:
    """Stands in for a store's filesystem: any use at all is a failure."""

    def __getattr__(self, attr):
        raise AssertionError(f"the store was touched ({attr}) before the name was checked")


@pytest.mark.parametrize("name", _INVALID, ids=[repr(n) for n in _INVALID])
def test_invalid_names_rejected(store, name, monkeypatch):
    # Any access to the backend now fails (as a StoreError or NotFound, not a ValueError).
    inner = _inner(store)
    if isinstance(inner, LocalStore):
        monkeypatch.setattr(inner, "root", Path("/dev/null/not-a-directory"))
    elif isinstance(inner, LibcloudStore):  # every request goes through the thread's driver
        monkeypatch.setattr(inner, "_driver", lambda: _Tripwire().driver)
    else:
        monkeypatch.setattr(inner, "fs", _Tripwire())
    with pytest.raises(ValueError):
        store.put(name, b"x")
    with pytest.raises(ValueError):
        store.get(name)
    with pytest.raises(ValueError):
        store.get(name, 1, 1)
    with pytest.raises(ValueError):
        store.stat(name)
    with pytest.raises(ValueError):
        store.delete(name)
    monkeypatch.undo()
    assert _raw_names(store) == []


# -- atomicity -------------------------------------------------------------------------


def test_concurrent_puts_one_wins(store):
    writers = 8
    payloads = [bytes([i]) * 8 + os.urandom(256 * 1024) for i in range(writers)]
    barrier = threading.Barrier(writers)

    def put(i: int):
        barrier.wait()
        try:
            store.put("data/cc/contested", payloads[i])
            return i
        except AlreadyExists as e:
            return e

    with ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(put, range(writers)))
    winners = [r for r in results if isinstance(r, int)]
    losers = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(winners) == 1, results
    assert len(losers) == writers - 1, results
    assert store.get("data/cc/contested") == payloads[winners[0]]
    assert _listed(store) == [("data/cc/contested", len(payloads[0]))]
    assert _raw_names(store) == ["data/cc/contested"]


def test_reader_never_sees_a_partial_object(store):
    data = os.urandom(8 * 1024 * 1024)
    seen: list[object] = []
    done = threading.Event()

    def read():
        while not done.is_set():
            try:
                size = store.stat("data/big/obj")
                got = store.get("data/big/obj")
            except NotFound:
                seen.append(None)
                continue
            seen.append((size, got == data))
            return

    reader = threading.Thread(target=read)
    reader.start()
    store.put("data/big/obj", data)
    time.sleep(0.2)
    done.set()
    reader.join()
    assert seen and all(s is None for s in seen[:-1])
    assert seen[-1] == (len(data), True), seen[-1]


def test_no_temporary_files_left(store):
    names = [f"data/{i % 3:02x}/obj{i}" for i in range(12)]
    for name in names:
        store.put(name, name.encode())
    with pytest.raises(AlreadyExists):
        store.put(names[0], b"other")
    assert _listed(store) == sorted((n, len(n)) for n in names)
    raw = _raw_names(store)
    assert not [n for n in raw if ".tmp-" in n], raw
    assert raw == sorted(names)


# -- delete ------------------------------------------------------------------------------


def test_delete(store):
    store.put("data/ab/keep", b"keep")
    store.put("data/ab/gone", b"gone")
    assert _listed(store, "data/ab/") == [("data/ab/gone", 4), ("data/ab/keep", 4)]
    store.delete("data/ab/gone")
    with pytest.raises(NotFound):
        store.get("data/ab/gone")
    with pytest.raises(NotFound):
        store.stat("data/ab/gone")
    assert _listed(store) == [("data/ab/keep", 4)]
    assert store.get("data/ab/keep") == b"keep"


# -- failures ---------------------------------------------------------------------------

SECRET = "Zq7-DISTINCTIVE-s3cr3t-9f1e"  # must never show up in an error message
# Azure account keys must be base64; this one decodes fine and is just as distinctive.
AZ_SECRET = "RElTVElOQ1RJVkVzZWNyZXRLZXlGb3JUZXN0aW5nT25seQ=="


def _unreachable(backend: str, tmp_path: Path) -> tuple[str, dict, str | None]:
    """(url, options, secret in the options) for a store whose endpoint is down or root unusable."""
    port = servers.free_port()  # nothing listens there once the probe socket is closed
    if backend == "local":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        return str(blocker / "vault"), {}, None
    if backend == "s3":
        return f"s3://{_unique()}/vault", {
            "endpoint_url": f"http://127.0.0.1:{port}", "key": "AKIDDISTINCTIVE", "secret": SECRET}, SECRET
    if backend == "gcs":
        from google.oauth2.credentials import Credentials

        return f"gs://{_unique()}/vault", {
            "endpoint_url": f"http://127.0.0.1:{port}", "token": Credentials(token=SECRET), "project": "test"}, SECRET
    if backend == "azure":
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZ_SECRET};"
            f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
        return f"az://{_unique()}/vault", {"connection_string": conn}, AZ_SECRET
    if backend == "sftp":
        return f"sftp://nobody@127.0.0.1:{port}/tmp/{_unique()}", {"password": SECRET, "known_hosts": None}, SECRET
    if backend == "libcloud-s3":
        return f"libcloud://s3/{_unique()}/vault", {
            "key": "AKIDDISTINCTIVE", "secret": SECRET, "host": "127.0.0.1", "port": port, "secure": False}, SECRET
    if backend == "libcloud-azure":
        return f"libcloud://azure_blobs/{_unique()}/vault", {
            "key": "devstoreaccount1", "secret": AZ_SECRET, "host": "127.0.0.1", "port": port, "secure": False}, AZ_SECRET
    raise AssertionError(backend)


@pytest.fixture
def fast_retries(monkeypatch):
    """The provider libraries back off for 4-80 s per call before giving up on a dead endpoint;
    keep their retry logic (and so their real error paths) but not the waiting."""
    import asyncio

    real_sleep = asyncio.sleep

    async def no_wait(delay, result=None):
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", no_wait)


def _check_error(what: str, err: StoreError, secret: str | None) -> None:
    text = str(err)
    assert text.strip(), f"{what}: empty message"
    assert "\n" not in text, f"{what}: {text}"
    if secret:
        assert secret not in text, f"{what}: {text}"
        assert secret not in repr(err), f"{what}: {err!r}"
    # Raised `from None`: no provider exception chained on, to be printed as a traceback.
    assert err.__cause__ is None and err.__suppress_context__, what


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreachable_gives_store_error(backend, tmp_path, fast_retries):
    url, options, secret = _unreachable(backend, tmp_path)
    t0 = time.monotonic()
    try:
        store = open_store(url, options)  # SFTP connects here
    except StoreError as e:
        assert backend == "sftp", f"{backend} should not connect before the first call"
        _check_error("open_store", e, secret)
        return
    except Exception as e:  # noqa: BLE001  -- the point: nothing but StoreError may escape
        pytest.fail(f"open_store: raw {type(e).__module__}.{type(e).__name__} escaped: {e}")
    calls = {"create": lambda: store.create(), "put": lambda: store.put("data/ab/x", b"x")}
    if backend != "local":  # below a file, a local root is simply missing: reads find nothing
        calls.update({
            "exists": lambda: store.exists(),
            "get": lambda: store.get("data/ab/x"),
            "get-range": lambda: store.get("data/ab/x", 1, 2),
            "stat": lambda: store.stat("data/ab/x"),
            "list": lambda: list(store.list("data/")),
            "delete": lambda: store.delete("data/ab/x"),
        })
    for what, call in calls.items():
        try:
            result = call()
        except StoreError as e:
            assert not isinstance(e, (NotFound, AlreadyExists)), f"{what}: {type(e).__name__}: {e}"
            _check_error(what, e, secret)
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{what}: raw {type(e).__module__}.{type(e).__name__} escaped: {e}")
        else:
            pytest.fail(f"{what}: returned {result!r} from an unreachable store")
    assert time.monotonic() - t0 < 20
