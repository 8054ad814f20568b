"""Packs (issue 7): many small objects share one stored blob. What must hold: a run writes about one
blob per 64 small objects; restore of one object reads only the segments of its record; deep
verify reads each pack once and checks every chunk in it; dedup across and within runs writes
nothing new; a run that dies before its pack is stored records nothing that points at it."""

from __future__ import annotations

import math
import os
import random
import threading
from collections import Counter
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from project import read_dir, s3_fs, unique
from test_faults import upstream
from replicator.backoff import Backoff
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import run_job
from replicator.errors import IntegrityError, StoreError
from replicator.restore import restore
from replicator.sources.objects import ObjectSource
from replicator.stores.faulty import FaultyStore
from replicator.stores.fsspec_store import FsspecStore
from replicator.stores.local import LocalStore
from replicator.targets import LocalTarget
from replicator.units import KeyFilter
from replicator.vault import crypto, keys
from replicator.vault.format import data_name
from replicator.vault.packs import PACK_RECORDS, PACK_THRESHOLD
from replicator.vault.vault import Vault
from replicator.verify import verify

MASTER = keys.MasterKey(os.urandom(32))


class Counting:
    """A real store, with every request it serves counted (method, name prefix) and gets recorded."""

    def __init__(self, inner):
        self.inner, self.url = inner, inner.url
        self.calls: Counter = Counter()
        self.gets: list[tuple[str, int, int | None, int]] = []  # name, offset, length asked, bytes returned
        self.lock = threading.Lock()

    def _note(self, method: str, name: str) -> None:
        with self.lock:
            self.calls[(method, name.split("/", 1)[0])] += 1

    def put(self, name, data):
        self._note("put", name)
        return self.inner.put(name, data)

    def get(self, name, offset=0, length=None):
        self._note("get", name)
        data = self.inner.get(name, offset, length)
        with self.lock:
            self.gets.append((name, offset, length, len(data)))
        return data

    def stat(self, name):
        self._note("stat", name)
        return self.inner.stat(name)

    def list(self, prefix=""):
        self._note("list", prefix)
        return self.inner.list(prefix)

    def delete(self, name):
        return self.inner.delete(name)

    def exists(self):
        return self.inner.exists()

    def create(self):
        return self.inner.create()

    def reset(self) -> None:
        self.calls.clear()
        self.gets.clear()


def small_objects(root: Path, n: int, seed: int = 7, lo: int = 1024, hi: int = 16 * 1024) -> dict[str, bytes]:
    rng = random.Random(seed)
    objects = {f"p{i % 10:02d}/o{i:05d}.bin": rng.randbytes(rng.randint(lo, hi)) for i in range(n)}
    write_dir(root, objects)
    return objects


def write_dir(root: Path, objects: dict[str, bytes]) -> None:
    for k, v in objects.items():
        (root / k).parent.mkdir(parents=True, exist_ok=True)
        (root / k).write_bytes(v)


def run(store, src: Path, state: Path, workers: int = 8, job: str = "j"):
    vault = Vault.open(store, MASTER) if Vault.exists(store) else Vault.create(store, MASTER)
    cat = Catalogue(state / "catalogue.db")
    cat.bind(vault.vault_id)
    cfg = JobConfig(name=job, source=f"file://{src}")
    try:
        stats = run_job(vault, cat, cfg, ObjectSource(cfg.source, {}, KeyFilter(("**",), ()), backoff=Backoff()),
                        workers=workers)
    finally:
        cat.close()
    return vault, stats


def restored(vault: Vault, out: Path, prefix: str = "") -> dict[str, bytes]:
    r = restore(vault, "j", LocalTarget(str(out)), None, prefix)
    assert not r.errors and not r.skipped
    return read_dir(out)


def state_refs(vault: Vault, job: str = "j"):
    from replicator.history import History

    history = History.for_job(vault, job)
    with history.state(history.seqs[-1]) as state:
        return {e.key: e.chunks for e in state.iter("")}


@pytest.fixture
def s3_vault(s3_server):
    fs = s3_fs(s3_server)
    bucket = unique("packs")
    fs.mkdir(bucket)
    return FsspecStore(f"s3://{bucket}/vault", s3_server.fsspec_options())


def test_200_small_objects_make_a_pack_per_64_and_read_back_exactly(tmp_path, s3_vault):
    src = tmp_path / "src"
    objects = small_objects(src, 200)
    store = Counting(s3_vault)
    vault, stats = run(store, src, tmp_path / "state")
    assert stats.errors == [] and stats.copied == 200
    root = vault.read_snapshot(vault.job_id("j"), 0)[0]
    data_puts = store.calls[("put", "data")]
    # ceil(200/64) packs + the manifest pages; one root
    assert data_puts <= math.ceil(200 / PACK_RECORDS) + len(root.pages), store.calls
    assert store.calls[("put", "snapshots")] == 1
    assert store.calls[("stat", "data")] <= data_puts  # one size check per pack, not per object
    refs = state_refs(vault)
    blobs = {c.blob for chunks in refs.values() for c in chunks}
    assert len(blobs) == math.ceil(200 / PACK_RECORDS)
    assert all(len(chunks) == 1 for chunks in refs.values())
    # every chunk's reference places it in a pack, under a name that is not its chunk id
    assert all(c.blob != c.id for chunks in refs.values() for c in chunks)
    store.reset()
    assert restored(vault, tmp_path / "out") == objects
    # a whole restore fetches each pack once (and the pages), not one range per object
    assert store.calls[("get", "data")] == len(blobs) + len(root.pages), store.calls
    report = verify(vault, None, ["j"], deep=True)
    assert report.ok, report.problems
    assert report.chunks_checked == 200 + len(root.pages) and report.blobs_read == len(blobs) + len(root.pages)


def test_restore_of_one_object_reads_only_the_segments_of_its_record(tmp_path):
    src = tmp_path / "src"
    objects = small_objects(src, 64, lo=40_000, hi=60_000)  # one pack of about 3 MiB, 48 segments
    store = Counting(LocalStore(str(tmp_path / "vault")))
    vault, _ = run(store, src, tmp_path / "state")
    refs = state_refs(vault)
    key = sorted(refs)[40]
    (ref,) = refs[key]
    assert ref.offset > 0 and ref.blob_size > 2 * 2**20
    fresh = Vault.open(store, MASTER)  # no cached headers
    store.reset()
    assert fresh.read_chunk(ref) == objects[key]
    gets = [g for g in store.gets if g[0] == data_name(ref.blob)]
    assert len(gets) == 2 and gets[0][1] == 0 and gets[0][3] <= 128  # the header,
    header = crypto.parse_header(store.inner.get(data_name(ref.blob), 0, 128))
    step = header.segment_size + crypto.TAG_SIZE
    first, last = (8 + ref.offset) // header.segment_size, (8 + ref.offset + ref.length - 1) // header.segment_size
    lo, hi = header.size + first * step, min(ref.blob_size, header.size + (last + 1) * step)
    assert gets[1][1] == lo and gets[1][3] == hi - lo  # then its segments (asking one byte more at the end)
    assert sum(g[3] for g in gets) < ref.length + 2 * step + 128 < ref.blob_size / 10
    # another object of the same pack: the header is known now, one GET of its segments
    store.reset()
    other = sorted(refs)[10]
    assert fresh.read_chunk(refs[other][0]) == objects[other]
    assert len(store.gets) == 1 and store.gets[0][3] < 3 * step
    # and a whole restore of one object through the CLI path
    store.reset()
    out = tmp_path / "one"
    assert restored(fresh, out, prefix=key) == {key: objects[key]}
    assert sum(g[3] for g in store.gets if g[0].startswith("data/")) < ref.blob_size / 10


def test_deep_verify_reads_a_pack_once_and_finds_a_damaged_record(tmp_path):
    src = tmp_path / "src"
    small_objects(src, 100)
    store = Counting(LocalStore(str(tmp_path / "vault")))
    vault, _ = run(store, src, tmp_path / "state")
    refs = state_refs(vault)
    packs = Counter(c.blob for chunks in refs.values() for c in chunks)
    store.reset()
    report = verify(vault, None, ["j"], deep=True)
    assert report.ok and report.chunks_checked >= 100
    gets = Counter(g[0] for g in store.gets if g[0].startswith("data/"))
    for pack in packs:
        assert gets[data_name(pack)] == 1  # read once, though it holds many chunks
    # flip one byte deep inside the second pack: deep verify names it
    pack = sorted(packs)[1]
    path = tmp_path / "vault" / data_name(pack)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(blob))
    report = verify(Vault.open(LocalStore(str(tmp_path / "vault")), MASTER), None, ["j"], deep=True)
    assert not report.ok and any(data_name(pack) in p for p in report.problems), report.problems
    assert len(report.problems) == 1


def test_dedup_within_a_run_and_across_runs_writes_nothing_new(tmp_path):
    src = tmp_path / "src"
    rng = random.Random(3)
    same = rng.randbytes(5000)
    objects = {f"a/{i:03d}": rng.randbytes(3000) for i in range(100)}
    objects.update({f"dup/{i:03d}": same for i in range(30)})  # 30 keys, one content, in one run
    write_dir(src, objects)
    store = Counting(LocalStore(str(tmp_path / "vault")))
    vault, stats = run(store, src, tmp_path / "state")
    assert stats.errors == [] and stats.copied == 130 and stats.reused >= 29
    refs = state_refs(vault)
    assert len({refs[f"dup/{i:03d}"][0] for i in range(30)}) == 1  # one record for all 30
    n_records = len({c for chunks in refs.values() for c in chunks})
    assert n_records == 101
    # next run: new keys whose content is already in the vault (one from a pack, one packed many times)
    write_dir(src, {"copy/of-a-7": objects["a/007"], "copy/of-dup": same})
    store.reset()
    vault, stats = run(store, src, tmp_path / "state")
    assert stats.errors == [] and stats.copied == 2 and stats.reused == 2
    root = vault.read_snapshot(vault.job_id("j"), 1)[0]
    assert store.calls[("put", "data")] == len(root.pages)  # the delta's page only: no chunk, no pack
    refs2 = state_refs(vault)
    assert refs2["copy/of-a-7"] == refs["a/007"] and refs2["copy/of-dup"] == refs["dup/000"]
    assert restored(vault, tmp_path / "out") == {**objects, "copy/of-a-7": objects["a/007"], "copy/of-dup": same}


def test_large_chunks_keep_a_blob_each_and_small_tails_are_packed(tmp_path):
    src = tmp_path / "src"
    rng = random.Random(5)
    objects = {"big": rng.randbytes(8 * 2**20 + 100), "mid": rng.randbytes(PACK_THRESHOLD),
               "tiny": rng.randbytes(10)}
    write_dir(src, objects)
    vault, stats = run(LocalStore(str(tmp_path / "vault")), src, tmp_path / "state")
    refs = state_refs(vault)
    big = refs["big"]
    assert [c.blob == c.id for c in big] == [True, True, False]  # 4 MiB, 4 MiB, and a 100-byte tail
    assert refs["mid"][0].blob == refs["mid"][0].id  # at the threshold: its own blob
    assert refs["tiny"][0].blob == big[2].blob  # tail and tiny object share a pack
    assert restored(vault, tmp_path / "out") == objects
    assert verify(vault, None, ["j"], deep=True).ok


def test_a_run_whose_pack_write_fails_records_nothing_that_points_at_it_and_the_rerun_completes(tmp_path):
    src = tmp_path / "src"
    objects = small_objects(src, 300)
    inner = LocalStore(str(tmp_path / "vault"))
    Vault.create(inner, MASTER)
    # the first two packs are stored, the third fails (not retried): the run fails
    faulty = FaultyStore(inner, {"put data/": [None, None, StoreError("injected: 503")]})
    with pytest.raises(StoreError):
        run(faulty, src, tmp_path / "state", workers=4)
    cat = Catalogue(tmp_path / "state" / "catalogue.db")
    pending = cat.db.execute("SELECT chunks FROM pending").fetchall()
    stored = {name.rsplit("/", 1)[-1] for name, _ in inner.list("data/")}
    import json

    referenced = {c[0] for (chunks,) in pending for c in json.loads(chunks)}
    assert 2 * PACK_RECORDS <= len(pending) <= 300 - PACK_RECORDS  # not the objects of the failed pack
    assert referenced <= stored  # recorded only what is there
    indexed = {json.loads(r)[0] for (r,) in cat.db.execute("SELECT ref FROM chunks")}
    assert indexed <= stored
    cat.close()
    vault, stats = run(inner, src, tmp_path / "state")
    assert stats.errors == [] and stats.copied == 300 - len(pending)
    assert restored(vault, tmp_path / "out") == objects
    report = verify(vault, None, ["j"], deep=True)
    assert report.ok, report.problems


class Watching(ObjectSource):
    """The real source, with a hook called after each chunk it yields."""

    def __init__(self, *a, on_chunk=None, **kw):
        super().__init__(*a, **kw)
        self.on_chunk = on_chunk

    def read(self, item, chunk_size):
        for i, data in enumerate(super().read(item, chunk_size)):
            yield data
            if self.on_chunk:
                self.on_chunk(item, i)


class SlowPuts(Counting):
    """Counting, and each data put takes a while: how many run at the same moment is noted."""

    def __init__(self, inner):
        super().__init__(inner)
        self.now = self.peak = 0

    def put(self, name, data):
        if not name.startswith("data/"):
            return super().put(name, data)
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            import time

            time.sleep(0.05)
            return super().put(name, data)
        finally:
            with self.lock:
                self.now -= 1


def run_watching(store, cfg: JobConfig, state: Path, options: dict, **kw):
    vault = Vault.open(store, MASTER) if Vault.exists(store) else Vault.create(store, MASTER)
    cat = Catalogue(state / "catalogue.db")
    cat.bind(vault.vault_id)
    source = Watching(cfg.source, options, KeyFilter(("**",), ()), backoff=Backoff(), **kw)
    try:
        return vault, run_job(vault, cat, cfg, source, workers=8), source
    finally:
        cat.close()


def test_the_chunks_of_one_large_s3_object_come_from_one_get_and_are_stored_in_parallel(tmp_path, s3_server):
    fs = s3_fs(s3_server)
    bucket = unique("big")
    fs.mkdir(bucket)
    big = os.urandom(40 * 2**20 + 7)
    fs.pipe_file(f"{bucket}/one/big.bin", big)
    cfg = JobConfig(name="j", source=f"s3://{bucket}")
    store = SlowPuts(LocalStore(str(tmp_path / "vault")))
    proxy = FaultProxy(*upstream(s3_server)).start()  # no faults: it counts the source's GETs
    try:
        vault, stats, _ = run_watching(store, cfg, tmp_path / "state",
                                       {**s3_server.fsspec_options(), "endpoint_url": proxy.url})
    finally:
        proxy.stop()
    assert stats.errors == [] and stats.copied == 1
    reads, versions = proxy.object_reads()
    assert reads == versions == 1  # one GET for 11 chunks
    assert 2 <= store.peak <= 4  # chunk blobs written in parallel, at most workers / 2 at once
    (refs,) = state_refs(vault).values()
    assert [c.size for c in refs] == [4 * 2**20] * 10 + [7] and refs[-1].blob != refs[-1].id  # the tail is packed
    assert restored(vault, tmp_path / "out") == {"one/big.bin": big}
    assert verify(vault, None, ["j"], deep=True).ok


def test_a_local_file_rewritten_while_its_chunks_are_stored_is_not_recorded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * 2**20))
    (src / "small.bin").write_bytes(b"small")

    def rewrite(item, i):
        if item.key == "big.bin" and i == 1:
            (src / "big.bin").write_bytes(os.urandom(12 * 2**20))

    cfg = JobConfig(name="j", source=f"file://{src}")
    vault, stats, _ = run_watching(LocalStore(str(tmp_path / "vault")), cfg, tmp_path / "state", {}, on_chunk=rewrite)
    assert len(stats.warnings) == 1 and "changed while it was read" in stats.warnings[0]
    assert set(state_refs(vault)) == {"small.bin"}  # never a mix of two versions
