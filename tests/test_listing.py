"""Huge buckets (issue 9): S3 listings in key ranges, in parallel, resumed after a crash."""

from __future__ import annotations

import os

import pytest

from project import s3_fs, unique
from replicator import listing
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import run_job
from replicator.event_runs import run_events
from replicator.errors import SourceError
from replicator.sources import s3_listing
from replicator.sources.objects import ObjectSource
from replicator.stores.local import LocalStore
from replicator.units import KeyFilter
from replicator.vault.keys import MasterKey
from replicator.vault.vault import Vault

KEYS = sorted([f"p{i:02d}/obj-{j:03d}" for i in range(12) for j in range(25)]
              + ["a-root-object", "p05", "p05-sibling", "zz-last", "p07/deep/er/key", "ünï/código"])


@pytest.fixture
def bucket(s3_server):
    fs = s3_fs(s3_server)
    name = unique("huge")
    fs.mkdir(name)
    for k in KEYS:
        fs.pipe_file(f"{name}/{k}", k.encode())
    fs.pipe_file(f"{name}/p03/", b"")  # a "directory" marker is not an object
    return name


def source(s3_server, bucket, cls=ObjectSource):
    return cls(f"s3://{bucket}/", s3_server.fsspec_options(), KeyFilter(("**",), ()))


def test_key_ranges_cover_every_key_once_in_order(s3_server, bucket):
    src = source(s3_server, bucket)
    assert src.resumable and src.key_ranges(1) == [("", None)]
    ranges = src.key_ranges(5)
    assert len(ranges) == 5 and ranges[0][0] == "" and ranges[-1][1] is None
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous
    listed = [item.key for lo, hi in ranges for item in src.list_range(lo, hi)]
    assert listed == KEYS  # each key once, in key order, markers left out
    assert [i.key for i in src.list()] == KEYS
    # Keys all under one "directory": the ranges are cut a level deeper.
    one = s3_fs(s3_server)
    nested = unique("nested")
    one.mkdir(nested)
    for k in KEYS:
        one.pipe_file(f"{nested}/data/{k}", b"x")
    deep = source(s3_server, nested)
    nested_ranges = deep.key_ranges(4)
    assert len(nested_ranges) == 4 and all(lo.startswith("data/") for lo, _ in nested_ranges[1:])
    assert [i.key for lo, hi in nested_ranges for i in deep.list_range(lo, hi)] == [f"data/{k}" for k in KEYS]
    # Resuming a range after a key lists only what follows it.
    lo, hi = ranges[2]
    part = [i.key for i in src.list_range(lo, hi)]
    assert [i.key for i in src.list_range(lo, hi, after=part[9])] == part[10:]


class CrashingSource(ObjectSource):
    """Lists normally, but dies after `budget` items: a process killed in the middle of a listing."""

    budget = 10**9
    listed = 0

    def list_range(self, lo, hi, after=None):
        for item in super().list_range(lo, hi, after):
            if CrashingSource.listed >= CrashingSource.budget:
                raise SourceError("injected: killed while listing")
            CrashingSource.listed += 1
            yield item


def killed_listing(s3_server, bucket, tmp_path, monkeypatch, partitions: int, budget: int):
    """A vault, a catalogue and a job whose first run was killed after `budget` listed keys."""
    monkeypatch.setattr(listing, "LIST_BATCH", 20)
    vault = Vault.create(LocalStore(str(tmp_path / "vault")), MasterKey(os.urandom(32)))
    cat = Catalogue(tmp_path / "catalogue.db")
    cat.bind(vault.vault_id)
    job = JobConfig(name="huge", source=f"s3://{bucket}/", list_partitions=partitions)
    CrashingSource.budget, CrashingSource.listed = budget, 0
    with pytest.raises(SourceError):
        run_job(vault, cat, job, source(s3_server, bucket, CrashingSource))
    return vault, cat, job


def test_a_listing_killed_midway_resumes_where_each_range_stopped(s3_server, bucket, tmp_path, monkeypatch):
    vault, cat, job = killed_listing(s3_server, bucket, tmp_path, monkeypatch, partitions=4, budget=170)
    progress = cat.listing_progress("huge")
    assert progress is not None and len(progress["ranges"]) == 4
    kept = cat.listing_count("huge")
    assert 0 < kept <= 170

    CrashingSource.budget, CrashingSource.listed = 10**9, 0
    stats = run_job(vault, cat, job, source(s3_server, bucket, CrashingSource))
    assert CrashingSource.listed <= len(KEYS) - kept + 4 * 20  # at most one uncommitted batch per range again
    assert CrashingSource.listed < len(KEYS)
    assert stats.listed == len(KEYS) and stats.copied == len(KEYS) and not stats.errors
    assert stats.started == progress["started"]  # the snapshot's time is when the listing began
    assert cat.listing_progress("huge") is None
    assert sorted(e.key for e in cat.entries("huge")) == KEYS

    # The next run lists afresh and finds nothing to copy.
    again = run_job(vault, cat, job, source(s3_server, bucket))
    assert again.copied == 0 and again.unchanged == len(KEYS)


def test_an_event_run_after_a_killed_listing_makes_the_next_full_run_list_afresh(tmp_path):
    """A partial (event) listing replaces the rows a killed full listing kept, so that listing's
    progress must go too: resuming it would miss the keys listed before and tombstone them."""
    cat = Catalogue(tmp_path / "catalogue.db")
    cat.bind("v")
    cat.start_listing("j", {"started": "2026-01-01T00:00:00.000000Z", "ranges": [["", None, "k5", False]]})
    assert cat.listing_progress("j") is not None
    cat.start_partial_listing("j", ["k9"])
    assert cat.listing_progress("j") is None


def test_events_wait_for_an_interrupted_full_listing_and_changed_settings_list_afresh(
        s3_server, bucket, tmp_path, monkeypatch):
    vault, cat, job = killed_listing(s3_server, bucket, tmp_path, monkeypatch, partitions=3, budget=60)
    kept = cat.listing_count("huge")
    # An event run now would replace the kept rows: it waits (its messages come back later).
    ev = run_events(vault, cat, job, source(s3_server, bucket), ["p01/obj-001"])
    assert ev.errors and "interrupted" in ev.errors[0] and ev.seq is None
    assert cat.listing_count("huge") == kept and cat.listing_progress("huge") is not None
    # The job's filters changed meanwhile: the kept progress does not apply, the listing starts afresh.
    before = cat.listing_progress("huge")["started"]
    narrower = JobConfig(name="huge", source=f"s3://{bucket}/", list_partitions=3, exclude=("zz-*",))
    CrashingSource.budget, CrashingSource.listed = 10**9, 0
    stats = run_job(vault, cat, narrower, source(s3_server, bucket, CrashingSource))
    assert CrashingSource.listed == len(KEYS) and stats.started != before  # everything listed again, from now
    assert not stats.errors and sorted(e.key for e in cat.entries("huge")) == KEYS


def test_a_direct_listing_gives_what_botocore_gives_page_by_page(s3_server, monkeypatch):
    """ListObjectsV2 pages asked for directly (sources/s3_listing.py) give each object exactly as
    botocore's parse through s3fs does (key, size, time, ETag), over several pages, for keys XML
    cannot carry as they are (EncodingType url) and for a source under a prefix."""
    monkeypatch.setattr(s3_listing, "BATCH", 3)
    fs = s3_fs(s3_server)
    name = unique("odd")
    fs.mkdir(name)
    odd = ["a+b", "a%2Bb", "sp ace/x", "amp&lt;<>\"'", "ünï/código", "tab\there", "ctl\x01key", "deep/" * 20 + "k",
           "under/one", "under/two+", "under/th ree", "under/ünï"]
    for k in odd:
        fs.pipe_file(f"{name}/{k}", os.urandom(len(k)))
    for url in (f"s3://{name}/", f"s3://{name}/under"):
        direct = ObjectSource(url, s3_server.fsspec_options(), KeyFilter(("**",), ()))
        botocore = ObjectSource(url, s3_server.fsspec_options(), KeyFilter(("**",), ()))
        botocore._bodies.direct.give_up()
        got = list(direct.list())
        assert got == list(botocore.list()) and direct._bodies.direct.pool() is not None
        want = sorted(odd) if url.endswith("/") else sorted(k[len("under/"):] for k in odd if k.startswith("under/"))
        assert [i.key for i in got] == want
        assert all(i.mtime and i.mtime.endswith("Z") and i.etag and '"' not in i.etag for i in got)
