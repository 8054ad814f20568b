"""Faults the replicator rides through: retries, resumed reads, ambiguous writes, a flaky network
between the replicator and real servers (tests/faultproxy.py), storage that fills up or turns
read-only, and a source that changes while it is read. Figures: docs/RELIABILITY.md."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import figures
from faultproxy import FaultProxy, Faults
from project import Project, read_dir, s3_fs, unique
from secrets_scan import DISTINCTIVE
from replicator.backoff import Backoff
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import run_job
from replicator.errors import AlreadyExists, NotFound, SourceChanged, StoreError, VaultError
from replicator.restore import restore
from replicator.sources import s3_listing
from replicator.sources.objects import ObjectSource
from replicator.stores.faulty import After, FaultyStore
from replicator.stores.fsspec_store import FsspecStore
from replicator.stores.local import LocalStore
from replicator.stores.retry import RetryingStore, is_retryable
from replicator.targets import LocalTarget
from replicator.units import KeyFilter
from replicator.vault import keys
from replicator.vault.manifest import SnapshotRoot
from replicator.vault.vault import Vault
from replicator.verify import verify

MiB = 2**20


class FakeTime:
    """An injectable clock whose sleep advances it: retries in tests take no time."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def instant(attempts: int = 6, deadline: float = 60.0, seed: int = 0) -> tuple[Backoff, FakeTime]:
    t = FakeTime()
    return Backoff(attempts=attempts, deadline=deadline, sleep=t.sleep, clock=t.clock, rng=random.Random(seed)), t


def no_space() -> StoreError:
    """What LocalStore raises when the disk is full: the OSError stays its context."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        try:
            raise StoreError("no space left on /vault while writing data/x") from None
        except StoreError as e:
            return e


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_is_full_jitter_exponential_and_capped():
    b, _ = instant()
    b.base, b.cap = 0.5, 4.0
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = [b.delay(retry) for _ in range(2000)]
        assert 0 <= min(delays) < cap * 0.05 and cap * 0.95 < max(delays) <= cap  # uniform over 0..cap


def test_backoff_bounds_attempts_and_total_time():
    b, t = instant(attempts=4)
    calls = []

    def always_503():
        calls.append(t.now)
        raise StoreError("503 SlowDown")

    with pytest.raises(StoreError, match="503"):
        b.call(always_503, is_retryable)
    assert len(calls) == 4 and len(t.sleeps) == 3
    b, t = instant(attempts=100, deadline=5.0)
    b.base = b.cap = 2.0
    calls.clear()
    with pytest.raises(StoreError):
        b.call(always_503, is_retryable)
    assert t.now <= 5.0 and 2 <= len(calls) < 100  # stopped by the deadline, not the attempts


def test_backoff_does_not_retry_what_is_not_retryable():
    b, t = instant()
    for e in (NotFound("x not found"), AlreadyExists("x exists"), no_space(), ValueError("bad name")):
        n = []

        def fail(e=e):
            n.append(1)
            raise e

        with pytest.raises(type(e)):
            b.call(fail, is_retryable)
        assert len(n) == 1, e
    assert t.sleeps == []


def test_what_is_retryable():
    assert is_retryable(StoreError("503 SlowDown")) and is_retryable(StoreError("connection reset"))
    assert not is_retryable(NotFound("n")) and not is_retryable(AlreadyExists("a"))
    assert not is_retryable(no_space())
    for code in (errno.EROFS, errno.EACCES, errno.EDQUOT):
        try:
            raise OSError(code, os.strerror(code))
        except OSError:
            try:
                raise StoreError("local") from None
            except StoreError as e:
                assert not is_retryable(e), code
    try:
        raise PermissionError("AccessDenied")
    except PermissionError:
        try:
            raise StoreError("s3: permission denied") from None
        except StoreError as e:
            assert not is_retryable(e)
    e = StoreError("flagged")
    e.retryable = False
    assert not is_retryable(e)


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def test_real_local_store_errors_for_a_full_or_read_only_disk_are_not_retried(tmp_path):
    """The real LocalStore on a full tmpfs and on a read-only bind mount: one attempt, then the error."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    if not mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)):
        pytest.skip("mounting a tmpfs needs root")
    try:
        assert mount("--bind", str(full), str(ro)) and mount("-o", "remount,ro,bind", str(ro))
        for root, data, message in ((full, os.urandom(200_000), "no space left"), (ro, b"x", "read-only")):
            b, t = instant()
            with pytest.raises(StoreError, match=message):
                RetryingStore(LocalStore(str(root)), b).put("data/ab/x", data)
            assert t.sleeps == [], message
        assert list(LocalStore(str(full)).list()) == []  # nothing half-written left behind
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
        subprocess.run(["umount", str(full)], capture_output=True)


# -- the retrying store ---------------------------------------------------------------------------


def test_retrying_store_rides_through_scripted_faults_on_every_method(tmp_path):
    inner = LocalStore(str(tmp_path / "v"))
    inner.create()
    inner.put("data/ab/old", b"old")
    faulty = FaultyStore(inner, {
        "put": [StoreError("503 SlowDown"), None, After(StoreError("reset after the put was done")), None],
        "get": [StoreError("timeout"), After(StoreError("reset mid-body"))],
        "stat": [StoreError("500 InternalError")],
        "list": [StoreError("connection reset")],
        "delete": [After(StoreError("reset after the delete was done"))],
        "exists": [StoreError("timeout")],
    })
    b, t = instant()
    store = RetryingStore(faulty, b)
    store.put("data/ab/one", b"1")  # 503, then done
    with pytest.raises(AlreadyExists):  # the first attempt did it; whose object it is, the vault decides
        store.put("data/ab/two", b"2")
    assert inner.get("data/ab/two") == b"2"
    assert store.get("data/ab/one") == b"1"
    assert store.stat("data/ab/one") == 1
    assert sorted(store.list("data/")) == [("data/ab/old", 3), ("data/ab/one", 1), ("data/ab/two", 1)]
    store.delete("data/ab/old")  # deleted, answer lost, retried: NotFound means done
    assert store.exists()
    faulty.assert_all_hit()
    assert sum(faulty.injected.values()) == len(t.sleeps) == 8  # one retry per fault


def test_faulty_store_reports_faults_never_hit(tmp_path):
    inner = LocalStore(str(tmp_path / "v"))
    faulty = FaultyStore(inner, {"put": [None, StoreError("x")], "put snapshots/": [StoreError("y")]})
    with pytest.raises(AssertionError, match="never hit"):
        faulty.assert_all_hit()
    with pytest.raises(ValueError):
        FaultyStore(inner, {"upload": []})


def test_faulty_store_rate_is_seeded():
    class Null:
        url = "null"

        def stat(self, name):
            return 0

    def played(seed):
        f = FaultyStore(Null(), rate=0.1, seed=seed)
        out = []
        for i in range(500):
            try:
                f.stat(f"n{i}")
                out.append(None)
            except StoreError as e:
                out.append(str(e))
        return out

    a = played(7)
    assert a == played(7) and a != played(8)
    assert 25 <= sum(x is not None for x in a) <= 75


# -- ambiguous writes in the vault ---------------------------------------------------------------------


def new_vault(store) -> Vault:
    return Vault.create(store, keys.MasterKey(os.urandom(32)))


def root(seq: int = 0) -> SnapshotRoot:
    return SnapshotRoot(job="j", kind="objects", seq=seq, prev=None, started="2026-01-01T00:00:00.000000Z",
                        finished="2026-01-01T00:00:01.000000Z", checkpoint=True, pages=(), stats={})


def test_a_retried_put_that_finds_its_own_object_counts_as_done(tmp_path):
    inner = LocalStore(str(tmp_path / "v"))
    faulty = FaultyStore(inner, {"put keys/": [After(StoreError("reset"))], "put config": [After(StoreError("reset"))],
                                 "put snapshots/": [After(StoreError("reset"))],
                                 "put data/": [After(StoreError("reset"))]})
    b, _ = instant()
    vault = new_vault(RetryingStore(faulty, b))  # keyring and config: each written, answer lost, retried
    jid = vault.job_id("j")
    digest = vault.write_snapshot(jid, root())
    assert hashlib.sha256(inner.get(f"snapshots/{jid}/0000000000")).hexdigest() == digest
    ref = vault.write_chunk(b"chunk")
    assert vault.read_chunk(ref) == b"chunk"
    faulty.assert_all_hit()
    assert vault.read_snapshot(jid, 0)[1] == digest


def test_a_root_written_by_someone_else_is_still_refused(tmp_path):
    store = LocalStore(str(tmp_path / "v"))
    vault = new_vault(store)
    vault.write_snapshot("jid", root())
    with pytest.raises(VaultError, match="another replicator"):
        vault.write_snapshot("jid", root())  # same content, fresh nonce: not ours


# -- a whole run against a faulty store, in process ---------------------------------------------------


def make_source_dir(path: Path, n: int = 40, seed: int = 1, mid: int = 0) -> dict[str, bytes]:
    """n small objects (packed, 64 to a blob) and `mid` of 600 KB (a blob each), and one of three chunks."""
    rng = random.Random(seed)
    objects = {f"d{i % 4}/obj-{i:03d}.bin": rng.randbytes(rng.randint(0, 30_000)) for i in range(n)}
    objects.update({f"mid/obj-{i:03d}.bin": rng.randbytes(600_000) for i in range(mid)})
    objects["big/nine-mib.bin"] = rng.randbytes(9 * MiB + 123)  # three chunks
    for k, v in objects.items():
        (path / k).parent.mkdir(parents=True, exist_ok=True)
        (path / k).write_bytes(v)
    return objects


def run_in_process(store, src: Path, state: Path, workers: int = 4):
    vault = Vault.open(store, MASTER) if Vault.exists(store) else Vault.create(store, MASTER)
    cat = Catalogue(state / "catalogue.db")
    cat.bind(vault.vault_id)
    job = JobConfig(name="j", source=f"file://{src}")
    b, _ = instant()
    stats = run_job(vault, cat, job, ObjectSource(job.source, {}, KeyFilter(("**",), ()), backoff=b), workers=workers)
    cat.close()
    return vault, stats


MASTER = keys.MasterKey(os.urandom(32))


def restored(vault: Vault, out: Path) -> dict[str, bytes]:
    r = restore(vault, "j", LocalTarget(str(out)), None, "")
    assert not r.errors and not r.skipped
    return read_dir(out)


def test_scripted_faults_on_every_vault_method_all_hit_and_the_run_completes(tmp_path):
    src = tmp_path / "src"
    objects = make_source_dir(src, n=200, mid=10)  # 4 packs + 13 chunk blobs + a page: enough data puts for the script
    inner = LocalStore(str(tmp_path / "vault"))
    script = {
        "put data/": [None, StoreError("503 SlowDown"), None, After(StoreError("reset after the put")),
                      StoreError("timeout")] * 3,
        "put snapshots/": [StoreError("503 SlowDown"), After(StoreError("reset after the root was stored"))],
        "stat": [None, StoreError("500 InternalError"), None, StoreError("connection reset")] * 3,
        "list snapshots/": [StoreError("connection reset")],
        "get": [StoreError("timeout")],
    }
    faulty = FaultyStore(inner, script)
    b, t = instant()
    store = RetryingStore(faulty, b)
    vault = Vault.create(store, MASTER)
    vault, stats = run_in_process(store, src, tmp_path / "state")
    assert stats.errors == [] and stats.seq == 0 and stats.copied == len(objects)
    faulty.assert_all_hit()
    injected = sum(faulty.injected.values())
    assert injected == sum(x is not None for v in script.values() for x in v) == 19
    figures.record("store-scripted", injected=injected, by_method=dict(faulty.injected), retries=len(t.sleeps))
    # read back through a clean store: exactly the source, and verify finds nothing wrong
    clean = Vault.open(LocalStore(str(tmp_path / "vault")), MASTER)
    assert restored(clean, tmp_path / "out") == objects
    report = verify(clean, None, ["j"], deep=True)
    assert report.ok, report.problems


def test_a_run_under_10_percent_random_store_faults_equals_a_fault_free_run(tmp_path):
    src = tmp_path / "src"
    objects = make_source_dir(src, n=120, seed=2, mid=60)  # 2 packs, 63 chunk blobs: enough calls for a 10 % rate
    plain, _ = run_in_process(LocalStore(str(tmp_path / "plain")), src, tmp_path / "state-plain")
    faulty = FaultyStore(LocalStore(str(tmp_path / "faulty")), rate=0.10, seed=10)
    b, t = instant(attempts=8)
    vault, stats = run_in_process(RetryingStore(faulty, b), src, tmp_path / "state-faulty")
    assert stats.errors == [] and stats.copied == len(objects)
    assert sum(faulty.injected.values()) >= 0.07 * sum(faulty.calls.values())
    figures.record("store-rate-10pct", injected=sum(faulty.injected.values()), calls=sum(faulty.calls.values()),
                   by_method=dict(faulty.injected))
    # same state at the head: the same entries (blob names differ: each vault has its own keys)
    a = restored(Vault.open(LocalStore(str(tmp_path / "plain")), MASTER), tmp_path / "a")
    b_ = restored(Vault.open(LocalStore(str(tmp_path / "faulty")), MASTER), tmp_path / "b")
    assert a == b_ == objects
    assert verify(Vault.open(LocalStore(str(tmp_path / "faulty")), MASTER), None, ["j"], deep=True).ok



# -- reading the source: resumed reads, objects that change while they are read --------------------


def upstream(s3_server) -> tuple[str, int]:
    host, port = s3_server.endpoint_url.rsplit("//", 1)[1].split(":")
    return host, int(port)


def first(n: int, path: str):
    """Faults.only: the first n GETs of one object."""
    seen = [0]

    def only(method: str, target: str) -> bool:
        if method == "GET" and target.split("?")[0] == path:
            seen[0] += 1
            return seen[0] <= n
        return False

    return only


def s3_source(s3_server, bucket: str, endpoint: str | None = None) -> ObjectSource:
    b, _ = instant()
    opts = {**s3_server.fsspec_options(), "skip_instance_cache": True}
    if endpoint:
        opts["endpoint_url"] = endpoint
    return ObjectSource(f"s3://{bucket}/", opts, KeyFilter(("**",), ()), backoff=b)


@pytest.fixture
def bucket(s3_server):
    fs = s3_fs(s3_server)
    name = unique("src")
    fs.mkdir(name)
    return fs, name


@pytest.mark.parametrize("size", [3_000_000, 9 * MiB + 5], ids=["one-chunk", "three-chunks-one-stream"])
def test_a_body_that_breaks_mid_way_resumes_from_the_byte_it_reached(s3_server, bucket, size):
    fs, b = bucket
    data = os.urandom(size)
    fs.pipe_file(f"{b}/obj", data)
    proxy = FaultProxy(*upstream(s3_server), Faults(reset_mid_body=1.0, only=first(4, f"/{b}/obj")), seed=1).start()
    try:
        src = s3_source(s3_server, b, proxy.url)
        item = next(iter(src.list()))
        assert b"".join(src.read(item, 4 * MiB)) == data
    finally:
        proxy.stop()
    assert proxy.injected["reset_mid_body"] == 4
    gets = [t for t, _ in proxy.ranges if t.startswith(f"/{b}/obj")]
    assert all("X-Amz-Algorithm=AWS4-HMAC-SHA256" in t for t in gets), gets  # read directly, presigned (v4)
    ranges = 1  # one GET of the whole object, however many chunks (a large one is streamed)
    assert proxy.object_gets()[f"/{b}/obj"] == ranges + 4  # one more GET per break
    # each resume asks only for the rest, from the byte it reached: never an earlier offset (the same
    # one again when a break came before any byte of the body was handed over: aiohttp drops what it
    # buffered when the reset arrives)
    starts = [0 if r is None else int(r.split("=")[1].split("-")[0]) for t, r in proxy.ranges if t.startswith(f"/{b}/obj")]
    assert starts == sorted(starts) and len(set(starts)) >= 3 and len(starts) == ranges + 4, starts
    figures.record("resume-mid-body", size=size, breaks=4, gets=ranges + 4)


def test_a_direct_get_the_endpoint_refuses_is_made_again_through_s3fs(s3_server, bucket):
    """A presigned GET answered 403 (a signature the endpoint does not take, a denial explained only
    to the SDK) is asked again through s3fs; once s3fs succeeds, it reads the source from then on."""
    fs, b = bucket
    data = {k: os.urandom(50_000) for k in ("one", "two", "big")}
    data["big"] = os.urandom(9 * MiB)
    for k, v in data.items():
        fs.pipe_file(f"{b}/{k}", v)
    presigned = lambda method, target: (method == "GET" and "X-Amz-Signature=" in target  # noqa: E731
                                        and "list-type" not in target)  # object GETs, not listings
    proxy = FaultProxy(*upstream(s3_server), Faults(http_403=1.0, only=presigned), seed=1).start()
    try:
        src = s3_source(s3_server, b, proxy.url)
        items = {i.key: i for i in src.list()}
        assert src._bodies.direct.pool() is not None  # listed directly
        assert b"".join(src.read(items["one"], 4 * MiB)) == data["one"]
        assert src._bodies.direct.pool() is None  # s3fs reads this source now
        assert b"".join(src.read(items["two"], 4 * MiB)) == data["two"]
        assert b"".join(src.read(items["big"], 4 * MiB)) == data["big"]
    finally:
        proxy.stop()
    assert proxy.injected["http_403"] == 1  # only the first, direct, GET was refused


@pytest.mark.parametrize("fault", ["http_403", "http_503", "reset_mid_body"])
def test_a_listing_page_the_endpoint_refuses_or_breaks_is_asked_again_through_s3fs(s3_server, bucket, monkeypatch, fault):
    """A direct ListObjectsV2 page answered 403, 503 or broken mid-answer is asked again through s3fs
    (its retries, its errors): the listing is whole. After a 403 that s3fs then got past, s3fs
    lists (and reads) this source from then on; a 503 or a break is only this page's."""
    monkeypatch.setattr(s3_listing, "BATCH", 2)  # 5 pages
    fs, b = bucket
    keys = sorted(f"k{i}" for i in range(9))
    for k in keys:
        fs.pipe_file(f"{b}/{k}", k.encode())
    seen = [0]

    def second_page(method: str, target: str) -> bool:  # the second direct page request
        if method == "GET" and "list-type" in target and "X-Amz-Signature=" in target:
            seen[0] += 1
            return seen[0] == 2
        return False

    proxy = FaultProxy(*upstream(s3_server), Faults(**{fault: 1.0}, only=second_page), seed=1).start()
    try:
        src = s3_source(s3_server, b, proxy.url)
        assert [i.key for i in src.list()] == keys
        assert (src._bodies.direct.pool() is None) == (fault == "http_403")
    finally:
        proxy.stop()
    assert proxy.injected[fault] == 1
    lists = [t for t, _ in proxy.ranges if "list-type" in t]
    direct = sum("X-Amz-Signature=" in t for t in lists)
    assert len(lists) == 6 and direct == (2 if fault == "http_403" else 5), lists  # 5 pages, one asked twice


def test_a_direct_put_the_vault_endpoint_refuses_is_made_again_through_s3fs(s3_server, bucket):
    """As for source GETs: a presigned PUT of a vault blob answered 403 is made again through s3fs,
    which then writes and reads this vault from then on; blobs are whole, create-only still holds."""
    _, b = bucket
    presigned = lambda method, target: method == "PUT" and "X-Amz-Signature=" in target  # noqa: E731
    proxy = FaultProxy(*upstream(s3_server), Faults(http_403=1.0, only=presigned), seed=1).start()
    try:
        opts = {**s3_server.fsspec_options(), "endpoint_url": proxy.url, "skip_instance_cache": True}
        store = FsspecStore(f"s3://{b}/vault", opts)
        one, two = os.urandom(5000), bytearray(os.urandom(6 * MiB))  # sealed blobs are bytearrays
        store.put("data/aa/one", one)
        assert store._direct.pool() is None  # s3fs makes this vault's requests now
        store.put("data/aa/two", two)
        assert store.get("data/aa/one") == one and store.get("data/aa/two", 10, 100) == two[10:110]
        with pytest.raises(AlreadyExists):
            store.put("data/aa/one", b"other")
    finally:
        proxy.stop()
    assert proxy.injected["http_403"] == 1  # only the first, direct, PUT was refused


def test_debug_logs_show_no_presigned_credentials(tmp_path, s3_server, bucket):
    """At --log-level debug urllib3 logs each request line, with the presigned URL of the direct S3
    requests (source GETs, vault PUTs and GETs): their signature and credential are masked."""
    fs, b = bucket
    for i in range(3):
        fs.pipe_file(f"{b}/o{i}", os.urandom(1000 + i))
    p = s3_project(tmp_path / "p", b, s3_server.endpoint_url, s3_server.endpoint_url, unique("vault"))
    p.cli("init")
    err = p.cli("--log-level", "debug", "run").stderr + p.cli("--log-level", "debug", "verify", "--deep").stderr
    assert "X-Amz-Signature=***" in err  # the request lines are there, masked
    assert re.search(r"X-Amz-(Signature|Credential|Security-Token)=(?!\*\*\*)", err, re.IGNORECASE) is None


def test_an_object_rewritten_or_deleted_between_ranges_is_source_changed(s3_server, bucket):
    fs, b = bucket
    old, new = os.urandom(9 * MiB), os.urandom(9 * MiB)  # same size: only the ETag tells
    fs.pipe_file(f"{b}/rewritten", old)
    fs.pipe_file(f"{b}/deleted", old)
    fs.pipe_file(f"{b}/streamed", old)
    src = s3_source(s3_server, b)
    items = {i.key: i for i in src.list()}
    # parts read by ranged GETs (read_part): each GET is conditional on the listed ETag
    assert src.read_part(items["rewritten"], 0, 4 * MiB) == old[:4 * MiB]
    fs.pipe_file(f"{b}/rewritten", new)
    with pytest.raises(SourceChanged, match="rewritten.*changed"):
        src.read_part(items["rewritten"], 4 * MiB, 8 * MiB)
    src.read_part(items["deleted"], 0, 4 * MiB)
    fs.rm_file(f"{b}/deleted")
    with pytest.raises(SourceChanged, match="deleted.*vanished"):
        src.read_part(items["deleted"], 4 * MiB, 8 * MiB)
    # read(): one GET streams the whole object, which is the listed version throughout: a rewrite
    # after the first chunk changes nothing in what it returns (never a mix of two versions)
    reader = src.read(items["streamed"], 4 * MiB)
    first = next(reader)
    fs.pipe_file(f"{b}/streamed", new)
    assert first + b"".join(reader) == old
    # rewritten after listing, before the first byte: refused too (If-Match), not stored as listed
    fs.pipe_file(f"{b}/late", b"v1")
    item = next(i for i in src.list() if i.key == "late")
    fs.pipe_file(f"{b}/late", b"v2")
    with pytest.raises(SourceChanged):
        list(src.read(item, 4 * MiB))


def test_a_local_file_rewritten_while_read_is_source_changed(tmp_path):
    (tmp_path / "f").write_bytes(os.urandom(9 * MiB))
    src = ObjectSource(f"file://{tmp_path}", {}, KeyFilter(("**",), ()))
    item = next(iter(src.list()))
    reader = src.read(item, 4 * MiB)
    next(reader)
    time.sleep(0.01)
    with open(tmp_path / "f", "r+b") as f:
        f.write(b"changed")
    with pytest.raises(SourceChanged):
        list(reader)


# -- end to end: the CLI with a flaky network between it and the servers ------------------------------

KEY_ID = "AKIAFAULTTEST0000001"
SECRET = f"fault-src-{uuid.uuid4().hex}"  # distinctive: the secrets scan looks for them
VAULT_SECRET = f"fault-vault-{uuid.uuid4().hex}"
DISTINCTIVE.update({SECRET, VAULT_SECRET})
# About 10% of requests meet a fault, of five kinds (a mid-body reset needs a body: GETs and listings);
# every answer may also be up to 20 ms late.
TEN_PERCENT = Faults(reset_before_response=0.04, reset_mid_body=0.03, reset_request=0.015, http_503=0.03,
                     http_500=0.01, latency=0.02)


def s3_project(dir: Path, bucket: str, source_endpoint: str, vault_endpoint: str | None = None,
               vault_bucket: str | None = None) -> Project:
    dir.mkdir(parents=True, exist_ok=True)
    if vault_endpoint:
        vault_url = f"s3://{vault_bucket}/vault"
        vault_options = {"endpoint_url": vault_endpoint, "key": KEY_ID, "secret": "env:VAULT_SECRET"}
    else:
        vault_url, vault_options = str(dir / "vault"), {}
    p = Project(dir, vault_url, vault_options,
                jobs=[{"name": "prod", "source": f"s3://{bucket}/", "schedule": "15m",
                       "source_options": {"endpoint_url": source_endpoint, "key": KEY_ID, "secret": "env:SRC_SECRET"}}],
                env={"SRC_SECRET": SECRET, "VAULT_SECRET": VAULT_SECRET})
    p.write_config()
    return p


def listing(p: Project) -> list[dict]:
    return [json.loads(line) for line in p.cli("ls", "prod", "--json").stdout.splitlines()]


def test_a_run_under_10_percent_network_faults_equals_a_fault_free_run(tmp_path, s3_server, bucket):
    fs, b = bucket
    rng = random.Random(5)
    objects = {f"o/{i:03d}.bin": rng.randbytes(rng.randint(0, 40_000)) for i in range(120)}
    objects["big/nine.bin"] = rng.randbytes(9 * MiB + 77)
    for k, v in objects.items():
        fs.pipe_file(f"{b}/{k}", v)
    clean = s3_project(tmp_path / "clean", b, s3_server.endpoint_url)
    clean.cli("init")
    assert clean.json("run")["jobs"][0]["copied"] == len(objects)

    src_proxy = FaultProxy(*upstream(s3_server), TEN_PERCENT, seed=11).start()
    vault_proxy = FaultProxy(*upstream(s3_server), TEN_PERCENT, seed=12).start()
    try:
        flaky = s3_project(tmp_path / "flaky", b, src_proxy.url, vault_proxy.url, unique("vault"))
        t0 = time.monotonic()
        flaky.cli("init")
        out = flaky.cli("--log-level", "info", "run", "--json")
        run = json.loads(out.stdout)["jobs"][0]
        seconds = time.monotonic() - t0
        retried = [line for line in out.stderr.splitlines() if "retrying" in line]
        assert run["ok"] and run["copied"] == len(objects) and run["seq"] == 0 and not run["warnings"], run
        assert listing(flaky) == listing(clean)  # the same snapshot: keys, sizes, ETags, times
        flaky.cli("restore", "prod", "--to", str(tmp_path / "out-flaky"))
        assert "vault OK" in flaky.cli("verify", "--deep").stdout
    finally:
        src_proxy.stop()
        vault_proxy.stop()
    clean.cli("restore", "prod", "--to", str(tmp_path / "out-clean"))
    assert read_dir(tmp_path / "out-flaky") == read_dir(tmp_path / "out-clean") == objects
    requests = sum(src_proxy.requests.values()) + sum(vault_proxy.requests.values())
    injected = src_proxy.injected + vault_proxy.injected
    assert sum(injected.values()) >= 0.08 * requests and len(injected) == 5, (injected, requests)
    figures.record("network-10pct", requests=requests, injected=dict(injected), source=dict(src_proxy.injected),
                   vault=dict(vault_proxy.injected), seconds=round(seconds, 1), our_retries=len(retried),
                   resumed_reads=sum("retrying read" in line for line in retried),
                   root_retries=sum("put snapshots/" in line for line in retried))


def test_stalled_answers_end_in_the_read_timeout_and_are_asked_again(tmp_path, s3_server, bucket):
    """A hung server (the answer never comes) on listing pages, object GETs and vault puts: each
    waits out the client's read timeout (source and vault `config_kwargs`) and is asked again."""
    fs, b = bucket
    objects = {f"s/{i:02d}.bin": os.urandom(3000 + i) for i in range(30)}
    for k, v in objects.items():
        fs.pipe_file(f"{b}/{k}", v)
    stalls = Faults(stall=0.15, stall_seconds=8)
    src_proxy = FaultProxy(*upstream(s3_server), stalls, seed=21).start()
    vault_proxy = FaultProxy(*upstream(s3_server), stalls, seed=22).start()
    try:
        p = s3_project(tmp_path, b, src_proxy.url, vault_proxy.url, unique("vault"))
        timeouts = {"config_kwargs": {"read_timeout": 1, "connect_timeout": 1}}
        p.jobs[0]["source_options"].update(timeouts)
        p.vault_options.update(timeouts)
        p.write_config()
        t0 = time.monotonic()
        p.cli("init")
        run = p.json("run")["jobs"][0]
        seconds = time.monotonic() - t0
        assert run["ok"] and run["copied"] == len(objects), run
        p.cli("restore", "prod", "--to", str(tmp_path / "out"))
        assert read_dir(tmp_path / "out") == objects
    finally:
        src_proxy.stop()
        vault_proxy.stop()
    stalled = src_proxy.injected["stall"] + vault_proxy.injected["stall"]
    assert src_proxy.injected["stall"] >= 1 and vault_proxy.injected["stall"] >= 1, (src_proxy.injected, vault_proxy.injected)
    figures.record("stalls", stalled=stalled, requests=sum(src_proxy.requests.values()) + sum(vault_proxy.requests.values()),
                   seconds=round(seconds, 1))


def test_an_object_rewritten_or_deleted_while_read_is_copied_as_listed_and_the_change_next_run(tmp_path, s3_server, bucket):
    """A large S3 object is read with one GET conditional on the listed ETag (three chunks, 4 + 4 + 2
    MiB): the provider streams the listed version to its end even if the key is rewritten or deleted
    meanwhile. So the run records the listed version, whole, without a warning, and the next run the
    change. (Reads in several requests are checked instead: ranged parts and resumed bodies carry
    If-Match, local files are stat'ed again; see the tests above.)"""
    fs, b = bucket
    v1, v2, v3 = (os.urandom(10 * MiB) for _ in range(3))
    fs.pipe_file(f"{b}/slow/rewritten.bin", v1)
    fs.pipe_file(f"{b}/slow/deleted.bin", v1)
    fs.pipe_file(f"{b}/small.txt", b"small")
    proxy = FaultProxy(*upstream(s3_server), seed=3).start()
    try:
        p = s3_project(tmp_path, b, proxy.url)
        p.cli("init")
        p.cli("run")  # v1 of both, before anything changes
        fs.pipe_file(f"{b}/slow/rewritten.bin", v2)
        fs.pipe_file(f"{b}/slow/deleted.bin", v2)
        before = {k: proxy.served_for(f"/{b}/slow/{k}") for k in ("rewritten.bin", "deleted.bin")}
        proxy.set_faults(Faults(bandwidth=2 * MiB))  # slow reads: 2 MiB/s on each connection
        run = p.popen("run", "--workers", "2")
        deadline = time.monotonic() + 30
        while min(proxy.served_for(f"/{b}/slow/{k}") - before[k] for k in before) < 4.5 * MiB:
            assert run.poll() is None and time.monotonic() < deadline, "the reads finished before the change"
            time.sleep(0.02)
        fs.pipe_file(f"{b}/slow/rewritten.bin", v3)  # while the second of three ranges is read
        fs.rm_file(f"{b}/slow/deleted.bin")
        err = p.finish(run)
        proxy.set_faults(Faults())
        assert run.returncode == 0, err
        warnings = [line for line in err.splitlines() if "warning:" in line]
        assert warnings == [], err
        # never half-old half-new: the snapshot holds the listed version, v2, of both
        p.cli("restore", "prod", "--to", str(tmp_path / "after-2"))
        assert read_dir(tmp_path / "after-2") == {"slow/rewritten.bin": v2, "slow/deleted.bin": v2, "small.txt": b"small"}
        third = p.json("run")["jobs"][0]  # the next run copies what changed, records the deletion
        assert third["ok"] and (third["copied"], third["tombstones"]) == (1, 1) and not third["warnings"]
        p.cli("restore", "prod", "--to", str(tmp_path / "after-3"))
        assert read_dir(tmp_path / "after-3") == {"slow/rewritten.bin": v3, "small.txt": b"small"}
        assert "vault OK" in p.cli("verify", "--deep").stdout
    finally:
        proxy.stop()
    figures.record("source-changed", warnings=len(warnings))


# -- storage that fills up or turns read-only ----------------------------------------------------------


class Tmpfs:
    """A small tmpfs at `path` (root only): it fills up for real, and can be resized or made read-only."""

    def __init__(self, path: Path, size: str):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        if not mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)):
            pytest.skip("mounting a tmpfs needs root")

    def remount(self, options: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not mount("-o", f"remount,{options}", str(self.path)):  # EBUSY while a file is open for writing
            assert time.monotonic() < deadline, f"cannot remount {self.path} {options}"
            time.sleep(0.005)

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs():
    mounted = []

    def make(path: Path, size: str) -> Tmpfs:
        mounted.append(Tmpfs(path, size))
        return mounted[-1]

    yield make
    for m in reversed(mounted):
        m.umount()


def fatal_one_line(err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(w in lines[0] for w in words), err


def filled(s3_server, bucket, n: int, size: int) -> dict[str, bytes]:
    fs, b = bucket
    objects = {f"obj/{i:04d}.bin": os.urandom(size) for i in range(n)}
    for k, v in objects.items():
        fs.pipe_file(f"{b}/{k}", v)
    return objects


def test_a_vault_that_fills_up_mid_run_fails_cleanly_and_the_next_run_completes(tmp_path, s3_server, bucket, tmpfs):
    objects = filled(s3_server, bucket, 300, 40_000)  # 12 MB that does not compress, packs of 2.6 MB
    vault = tmpfs(tmp_path / "vault", "4m")  # the first pack fits, the second does not
    p = s3_project(tmp_path, bucket[1], s3_server.endpoint_url)
    p.cli("init")
    r = p.cli("run", check=2)
    fatal_one_line(r.stderr, "prod", "no space left")
    assert not [f for f in vault.path.rglob(".tmp-*")]  # nothing half-written
    assert "vault OK" in p.cli("verify").stdout  # nothing half-recorded
    vault.remount("size=64m")  # space returns
    again = p.json("run")["jobs"][0]
    assert again["ok"] and again["seq"] == 0 and again["copied"] < len(objects)  # what was stored is kept
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == objects
    figures.record("vault-full", objects=len(objects), copied_before=len(objects) - again["copied"])


def test_a_vault_that_turns_read_only_mid_run_fails_cleanly_and_the_next_run_completes(tmp_path, s3_server, bucket, tmpfs):
    objects = filled(s3_server, bucket, 1000, 20_000)  # 16 packs
    vault = tmpfs(tmp_path / "vault", "64m")
    p = s3_project(tmp_path, bucket[1], s3_server.endpoint_url)
    p.cli("init")
    run = p.popen("run", "--workers", "2")
    deadline = time.monotonic() + 30
    while len([f for f in (vault.path / "data").rglob("*") if f.is_file()]) < 3:
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before the vault turned read-only"
        time.sleep(0.01)
    vault.remount("ro")
    err = p.finish(run)
    assert run.returncode == 2, err
    fatal_one_line(err, "prod", "read-only")
    assert "vault OK" in p.cli("verify").stdout
    vault.remount("rw")
    again = p.json("run")["jobs"][0]
    assert again["ok"] and again["seq"] == 0 and again["copied"] < len(objects)
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == objects


def test_a_state_directory_that_fills_up_mid_run_fails_cleanly_and_the_next_run_completes(tmp_path, s3_server, bucket, tmpfs):
    """Recovery is asserted first (it works); the clean one-line error at the end is what fails today."""
    objects = filled(s3_server, bucket, 1200, 2_000)  # 19 packs
    state = tmpfs(tmp_path / "state", "4m")
    p = s3_project(tmp_path, bucket[1], s3_server.endpoint_url)
    p.cli("init")
    run = p.popen("run", "--workers", "2")
    deadline = time.monotonic() + 30
    while len([f for f in (tmp_path / "vault" / "data").rglob("*") if f.is_file()]) < 3:
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before the disk filled"
        time.sleep(0.01)
    with open(state.path / "ballast", "wb") as f:  # everything that is left
        try:
            while True:
                f.write(bytes(65536))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    err = p.finish(run)
    (state.path / "ballast").unlink()  # space returns
    assert "vault OK" in p.cli("verify").stdout  # nothing half-recorded
    again = p.json("run")["jobs"][0]
    assert again["ok"] and again["seq"] == 0
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == objects
    assert run.returncode == 2, err
    fatal_one_line(err, "full")


def test_a_read_only_state_directory_is_a_clear_error(tmp_path, s3_server, bucket, tmpfs):
    filled(s3_server, bucket, 3, 100)
    p = s3_project(tmp_path, bucket[1], s3_server.endpoint_url)
    p.cli("init")
    p.cli("run")
    state = tmpfs(tmp_path / "ro-state", "1m")
    for f in (tmp_path / "state").iterdir():
        (state.path / f.name).write_bytes(f.read_bytes())
    state.remount("ro")
    p.config.write_text(p.config.read_text().replace('dir = "state"', 'dir = "ro-state"'))
    r = p.cli("run", check=2)
    fatal_one_line(r.stderr, "ro-state", "Read-only")


# -- the secrets scan itself ------------------------------------------------------------------------


def test_the_secrets_scan_finds_keys_and_credentials_in_any_encoding(tmp_path):
    import base64

    from secrets_scan import problems

    master = keys.MasterKey(os.urandom(32))
    store = LocalStore(str(tmp_path / "vault"))
    vault = Vault.create(store, master)
    key_text = keys.key_file_text(master)
    env = {"SRC_SECRET": SECRET, "NOTIFY_SOCKET": "/run/x"}
    clean = [(tmp_path, "prod: snapshot 0: 3 listed, /run/x", key_text, env)]
    assert problems(clean) == []
    for leak in (base64.b64encode(master.secret).decode(), master.secret.hex(), SECRET, VAULT_SECRET,
                 base64.b64encode(vault.keyring.data_kek).decode(), vault.keyring.id_key.hex()):
        assert problems([(tmp_path, f"error: something {leak} here", key_text, env)]), leak
