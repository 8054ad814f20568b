"""Verification that remembers and that needs no download (issue 10): rotating deep-verify samples
that cover every blob once per cycle across separate processes, coverage in `status` and the
metrics, and provider checksums that catch an object altered in place from one listing."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import fsspec
import pytest
from project import Project, unique

from replicator import config as configmod
from replicator.catalogue import Catalogue
from replicator.history import History
from replicator.stores import open_store
from replicator.stores.base import checksums_of
from replicator.vault.format import data_name
from replicator.vault.keys import load_key_file
from replicator.vault.vault import Vault
from replicator.verify import verify


def local_project(tmp_path, files: int) -> Project:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * (80_000 + i))  # > 512 KiB: a blob each, not packed
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "docs", "source": str(src)}])
    p.write_config()
    return p


def coverage_rows(p: Project) -> dict[str, float | None]:
    db = sqlite3.connect(p.dir / "state" / "catalogue.db")
    try:
        return dict(db.execute("SELECT blob, verified FROM coverage"))
    finally:
        db.close()


def test_rotating_sample_reads_every_blob_once_per_cycle_across_restarts(tmp_path):
    p = local_project(tmp_path, files=19)  # 19 content blobs + 1 manifest page = 20 blobs
    p.cli("init")
    p.cli("run")
    assert p.json("status")["verify"]["coverage"] is None  # nothing verified yet

    shallow = p.json("verify", "--no-probe")
    assert shallow["blobs_referenced"] == 20 and shallow["checksums_compared"] is None  # a local vault keeps none
    assert set(coverage_rows(p).values()) == {None}  # tracked, never read

    seen: list[set[str]] = []
    for run in range(4):  # 100 / 25 = 4 runs, each a separate process: the catalogue remembers
        r = p.json("verify", "--deep", "--sample", "25", "--no-probe")
        assert r["ok"] and r["sample_mode"] == "rotating" and r["blobs_read"] == 5
        rows = coverage_rows(p)
        newest = max(v for v in rows.values() if v is not None)
        seen.append({b for b, v in rows.items() if v == newest})
        assert r["coverage"]["read_in_window"] == 5 * (run + 1)
    assert all(len(s) == 5 for s in seen)
    assert set().union(*seen) == set(coverage_rows(p)) and sum(map(len, seen)) == 20  # each exactly once

    status = p.json("status")["verify"]
    assert status["coverage"]["ratio"] == 1.0 and status["coverage"]["never_read"] == 0
    assert status["last"]["deep"] and status["last"]["sample"] == 25
    assert "deep-verify coverage: 100% of 20 referenced blobs" in p.cli("status").stdout

    # The next cycle starts with the blobs read longest ago, but new blobs (never read) come first.
    (tmp_path / "src" / "new.txt").write_bytes(b"new content")
    p.cli("run")  # one new content blob and one new manifest page
    r = p.json("verify", "--deep", "--sample", "25", "--no-probe")
    rows = coverage_rows(p)
    newest = max(rows.values())
    fresh = {b for b, v in rows.items() if v == newest}
    assert len(fresh) == r["blobs_read"] == 6  # ceil(22 * 25%)
    assert len(fresh & seen[0]) == 4 and not fresh & (seen[1] | seen[2] | seen[3])

    # Metrics: coverage ratio and the age of the oldest unverified byte, from the catalogue.
    from prometheus_client import generate_latest

    from replicator import coverage, metrics

    cat = Catalogue(p.dir / "state" / "catalogue.db")
    try:
        coverage.observe(cat)
    finally:
        cat.close()
    assert metrics.VERIFY_COVERAGE.value == 1.0
    text = generate_latest(metrics.REGISTRY).decode()
    assert "replicator_verify_oldest_unverified_age_seconds" in text
    age = next(float(line.split()[1]) for line in text.splitlines()
               if line.startswith("replicator_verify_oldest_unverified_age_seconds "))
    assert 0 <= age < 600

    # A new host (no catalogue): sampling still works, at random, and says so.
    (p.dir / "state" / "catalogue.db").unlink()
    for extra in ("-wal", "-shm"):
        (p.dir / "state" / f"catalogue.db{extra}").unlink(missing_ok=True)
    out = p.cli("verify", "--deep", "--sample", "25", "--no-probe").stdout
    assert "chosen at random" in out and "vault OK" in out


def s3_vault_project(tmp_path, s3_server) -> tuple[Project, object, str]:
    fs = fsspec.filesystem("s3", **s3_server.fsspec_options(), skip_instance_cache=True, use_listings_cache=False)
    bucket = unique("vault")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"obj-{i}.bin").write_bytes(hashlib.sha256(str(i).encode()).digest() * (200 + i))
    p = Project(tmp_path, f"s3://{bucket}/v", s3_server.fsspec_options(), jobs=[{"name": "data", "source": str(src)}])
    p.write_config()
    return p, fs, bucket


class CountingStore:
    """Records every object `get` fetched; everything else (checksums included) goes to `inner`."""

    def __init__(self, inner):
        self.inner, self.url, self.gets = inner, inner.url, []

    def get(self, name, offset=0, length=None):
        self.gets.append(name)
        return self.inner.get(name, offset, length)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_object_altered_in_place_is_caught_from_the_listing_without_a_download(tmp_path, s3_server):
    p, fs, bucket = s3_vault_project(tmp_path, s3_server)
    p.cli("init")
    p.cli("run")
    cfg = configmod.load(p.config)
    store = CountingStore(open_store(cfg.vault.url, cfg.vault.options))
    vault = Vault.open(store, load_key_file(cfg.vault.key_file))
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    cat.bind(vault.vault_id)
    recorded = {n: c for n, c, _, origin in cat.checksums("data/") if origin == "put"}
    assert recorded and all(c.startswith("md5:") for c in recorded.values())  # recorded when written

    history = History.for_job(vault, "data")
    with history.state(history.seqs[-1]) as state:
        victim = next(e for e in state if e.key == "obj-3.bin").chunks[0].blob
    name = data_name(victim)
    assert recorded[name] == "md5:" + hashlib.md5(fs.cat_file(f"{bucket}/v/{name}")).hexdigest()

    # Tamper through the provider's own API: same size, different bytes (the kind of change a
    # size check cannot see).
    blob = bytearray(fs.cat_file(f"{bucket}/v/{name}"))
    blob[200] ^= 0xFF
    fs.pipe_file(f"{bucket}/v/{name}", bytes(blob))

    store.gets.clear()
    report = verify(vault, cat, ["data"])  # shallow
    problems = [x for x in report.problems if name in x]
    assert problems and "altered in place" in problems[0], report.problems
    assert name not in store.gets  # caught from the listing: the blob was never downloaded
    assert report.checksums_compared >= len(recorded) - 1
    cat.close()

    out = p.cli("verify", "--no-probe", check=1).stdout
    assert name in out and "altered in place" in out and "without downloading" in out


def test_checksum_capability_of_the_fsspec_providers(gcs_server, azure_server, tmp_path):
    data = b"provider checksum " * 100
    want = "md5:" + hashlib.md5(data).hexdigest()
    for url, opts in ((f"gs://{unique('ck')}/v", gcs_server.fsspec_options()),
                      (f"abfs://{unique('ck')}/v", azure_server.fsspec_options())):
        store = open_store(url, opts)  # wrapped (retries, ...): the capability is found inside
        store.create()
        store.put("data/ab/abc", data)
        layer = checksums_of(store)
        assert layer is not None, url
        assert store.stat("data/ab/abc") == len(data)
        assert layer.checksum("data/ab/abc") == want, url  # remembered from the stat
        assert layer.checksum("data/ab/abc") == want, url  # asked again: one request
        assert list(layer.list_checksums("data/")) == [("data/ab/abc", len(data), want)], url
    assert checksums_of(open_store(str(tmp_path / "local"))) is None


def test_verify_json_reports_coverage_fields(tmp_path):
    p = local_project(tmp_path, files=3)
    p.cli("init")
    p.cli("run")
    r = p.json("verify", "--deep", "--no-probe")
    assert r["coverage"]["ratio"] == 1.0 and r["sample_mode"] is None
    assert json.loads(json.dumps(r))["blobs_read"] == r["blobs_referenced"]
    assert "use it with --deep" in p.cli("verify", "--sample", "5", check=2).stderr


@pytest.mark.parametrize("provider", ["gcs", "azure"])
def test_gcs_and_azure_alterations_are_caught_from_the_listing(provider, tmp_path, request):
    """The same as on S3, through fake-gcs-server's and Azurite's own APIs: a blob rewritten in
    place with the same size is named by plain `verify` (md5Hash / Content-MD5), no download."""
    server = request.getfixturevalue(f"{provider}_server")
    proto = "gs" if provider == "gcs" else "abfs"
    bucket = unique("tamper")
    p = local_project(tmp_path, files=3)
    p.vault_url, p.vault_options = f"{proto}://{bucket}/v", server.fsspec_options()
    p.write_config()
    p.cli("init")
    p.cli("run")
    assert p.json("verify", "--no-probe")["ok"]
    fs = fsspec.filesystem("gcs" if provider == "gcs" else "abfs", **server.fsspec_options(), skip_instance_cache=True)
    victim = max(fs.find(f"{bucket}/v/data"), key=lambda f: fs.info(f)["size"])
    blob = bytearray(fs.cat_file(victim))
    blob[200] ^= 0xFF
    fs.pipe_file(victim, bytes(blob))
    out = p.cli("verify", "--no-probe", check=1).stdout
    name = victim.split("/v/", 1)[1]
    assert name in out and "altered in place" in out and "without downloading" in out, out
