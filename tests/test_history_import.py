"""history = "all": a versioned S3 bucket's past (versions and delete markers) becomes restorable
history on the first run; versions written between runs are picked up by the next one (issue 10)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from project import Project, read_dir, unique

from replicator import config as configmod
from replicator.history import History
from replicator.restore import restore
from replicator.stores import open_store
from replicator.targets import open_target
from replicator.vault.keys import load_key_file
from replicator.vault.vault import Vault


def s3_client(s3_server):
    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def project(tmp_path, s3_server, bucket: str, **job) -> Project:
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": "hist", "source": f"s3://{bucket}/", "history": "all", "schedule": "1h",
                       "source_options": {"endpoint_url": s3_server.endpoint_url, "key": "testing",
                                          "secret": "testing"}, **job}])
    p.write_config()
    return p


def open_vault(p: Project) -> Vault:
    cfg = configmod.load(p.config)
    return Vault.open(open_store(cfg.vault.url), load_key_file(cfg.vault.key_file))


def restored_at(p: Project, at: str, out, cli: bool = False) -> dict[str, bytes]:
    """The job's objects at `at`, restored into `out` (by the CLI, or in-process: faster)."""
    if cli:
        p.cli("restore", "hist", "--to", str(out), "--at", at)
    else:
        r = restore(open_vault(p), "hist", open_target(str(out), {}), at, "")
        assert not r.errors and not r.skipped
    return read_dir(out) if out.exists() else {}


class Timeline:
    """Writes steps to a versioned bucket; remembers the state after each and when it was reached."""

    def __init__(self, s3, bucket: str):
        self.s3, self.bucket = s3, bucket
        self.state: dict[str, bytes] = {}
        self.steps: list[tuple[list[str], dict[str, bytes]]] = []  # (version ids written, state after)

    def step(self, changes: dict[str, bytes | None], pause: float = 1.1) -> None:
        ids = []
        for key, data in changes.items():
            if data is None:
                ids.append(self.s3.delete_object(Bucket=self.bucket, Key=key)["VersionId"])
                self.state.pop(key, None)
            else:
                ids.append(self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)["VersionId"])
                self.state[key] = data
        self.steps.append((ids, dict(self.state)))
        time.sleep(pause)  # LastModified has whole seconds: the next step starts in a later second

    def times(self) -> list[str]:
        """For each step, the time (whole seconds, as `--at` takes it) of its last write."""
        when: dict[str, datetime] = {}
        kw: dict = {}
        while True:
            out = self.s3.list_object_versions(Bucket=self.bucket, **kw)
            for v in out.get("Versions", []) + out.get("DeleteMarkers", []):
                when[v["VersionId"]] = v["LastModified"]
            if not out.get("IsTruncated"):
                break
            kw = {"KeyMarker": out["NextKeyMarker"], "VersionIdMarker": out["NextVersionIdMarker"]}
        return [max(when[i] for i in ids).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                for ids, _ in self.steps]


def test_first_run_imports_versions_and_delete_markers_then_later_runs_pick_up_intermediate_versions(tmp_path, s3_server):
    s3 = s3_client(s3_server)
    bucket = unique("hist")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    tl = Timeline(s3, bucket)
    # Years of history, compressed into seconds: versions, deletions, re-creations.
    s3.put_object(Bucket=bucket, Key="burst.txt", Body=b"burst-1")  # three versions within one second
    s3.put_object(Bucket=bucket, Key="burst.txt", Body=b"burst-2")
    tl.step({"burst.txt": b"burst-3", "a.txt": b"a1", "b.txt": b"b1", "docs/c.txt": b"c1" * 1000})
    tl.step({"a.txt": b"a2", "b.txt": None})                      # b deleted: a delete marker
    tl.step({"b.txt": b"b2-reborn", "docs/c.txt": b"c2", "d.txt": b"d1"})
    tl.step({"a.txt": None, "docs/c.txt": None})                  # two delete markers
    tl.step({"a.txt": b"a3", "e.txt": b"e1"}, pause=0)            # current state
    times = tl.times()

    p = project(tmp_path, s3_server, bucket)
    p.cli("init")
    first = p.json("run")["jobs"][0]
    assert first["ok"], first
    h = first["history"]
    assert h["versions"] == 12 and h["deletions"] == 3, h
    assert first["copied"] == 0  # every current version came in with the history

    # restore --at reaches back before the replicator existed: each step's state, exactly.
    for i, (at, (_, state)) in enumerate(zip(times, tl.steps)):
        assert restored_at(p, at, tmp_path / f"restore-{i}", cli=i == 0) == state, f"step {i} at {at}"
    before_any = datetime.strptime(times[0], "%Y-%m-%dT%H:%M:%SZ") - timedelta(seconds=2)
    assert "no snapshot at or before" in p.cli("ls", "hist", "--at", before_any.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                check=None).stderr

    # Every version is live in some snapshot, the ones written within one second included.
    vault = open_vault(p)
    history = History.for_job(vault, "hist")
    seen = set()
    for seq in history.seqs:
        with history.state(seq) as state:
            seen |= {(e.key, e.version) for e in state}
    burst = [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket, Prefix="burst.txt")["Versions"]]
    assert len(burst) == 3 and {("burst.txt", v) for v in burst} <= seen
    roots = history.roots()
    assert [r.started for r in roots] == sorted(r.started for r in roots)
    assert len(set(r.started for r in roots)) == len(roots)  # times strictly increase
    assert all(r.stats.get("imported") for r in roots[:-1]) and not roots[-1].stats.get("imported")

    # Between two runs: several versions of one key and a deletion. The next run keeps all of them.
    mid = Timeline(s3, bucket)
    mid.state = dict(tl.state)
    mid.step({"a.txt": b"a4"})
    mid.step({"a.txt": b"a5", "e.txt": None})
    mid.step({"a.txt": b"a6"}, pause=0)
    mid_times = mid.times()
    second = p.json("run")["jobs"][0]
    assert second["ok"] and second["history"]["versions"] == 3 and second["history"]["deletions"] == 1, second
    for i, (at, (_, state)) in enumerate(zip(mid_times, mid.steps)):
        assert restored_at(p, at, tmp_path / f"restore-mid-{i}") == state, f"between runs, step {i}"
    # The old history is untouched, and a run with nothing new imports nothing.
    assert restored_at(p, times[1], tmp_path / "restore-old") == tl.steps[1][1]
    third = p.json("run")["jobs"][0]
    assert third["ok"] and not (third["history"] or {}).get("versions"), third
    assert "vault OK" in p.cli("verify", "--deep", "--no-probe").stdout


def test_history_all_needs_a_versioned_kind_of_source(tmp_path):
    from replicator.errors import ConfigError

    base = '[vault]\nurl = "v"\n[[jobs]]\nname = "j"\nsource = "{src}"\nhistory = "{h}"\n'
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.history"):
        configmod.parse(base.format(src="/data", h="all"), tmp_path)
    with pytest.raises(ConfigError, match=r"jobs\[0\]\.history"):
        configmod.parse(base.format(src="s3://b/", h="everything"), tmp_path)
    assert configmod.parse(base.format(src="s3://b/", h="all"), tmp_path).jobs[0].history == "all"
    assert configmod.parse(base.format(src="gs://b/", h="all"), tmp_path).jobs[0].history == "all"
    assert configmod.parse('[vault]\nurl = "v"\n[[jobs]]\nname = "j"\nsource = "/d"\n', tmp_path).jobs[0].history == "current"


def test_gcs_generations_are_imported_too(tmp_path, gcs_server):
    import fsspec

    fs = fsspec.filesystem("gcs", **gcs_server.fsspec_options(), skip_instance_cache=True)
    bucket = unique("gen")
    fs.mkdir(bucket, enable_versioning=True)
    steps: list[tuple[str, dict[str, bytes]]] = []
    state: dict[str, bytes] = {}

    def step(changes: dict[str, bytes | None], pause: float = 1.05) -> None:
        for k, v in changes.items():
            if v is None:
                fs.rm_file(f"{bucket}/{k}")
                state.pop(k)
            else:
                fs.pipe_file(f"{bucket}/{k}", v)
                state[k] = v
        steps.append((datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), dict(state)))
        time.sleep(pause)  # imported snapshots group up to a second of events

    step({"k.txt": b"k1", "d.txt": b"d1"})
    step({"k.txt": b"k2!", "d.txt": None})      # a new generation, and a deletion
    step({"d.txt": b"d2", "e.txt": b"e" * 70000}, pause=0)
    p = project(tmp_path, gcs_server, bucket)
    p.jobs[0].update(source=f"gs://{bucket}/", source_options=gcs_server.fsspec_options())
    p.write_config()
    p.cli("init")
    r = p.cli("run", "--json")
    assert "versioning is" not in r.stderr, r.stderr
    first = json.loads(r.stdout)["jobs"][0]
    assert first["ok"] and first["copied"] == 0, first
    assert (first["history"]["versions"], first["history"]["deletions"]) == (5, 1), first["history"]
    for i, (at, want) in enumerate(steps):
        assert restored_at(p, at, tmp_path / f"gcs-{i}") == want, f"step {i} at {at}"


def test_the_breaker_sees_imported_history_first(tmp_path, s3_server):
    """Versions between runs must not slip past the mass-change breaker: while it would trip, nothing
    is imported and the run holds the change; once approved, the next run imports the versions."""
    s3 = s3_client(s3_server)
    bucket = unique("brk")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(12):
        s3.put_object(Bucket=bucket, Key=f"doc-{i:02d}.txt", Body=f"document {i}\n".encode() * 20)
    p = project(tmp_path, s3_server, bucket)
    p.cli("init")
    assert p.json("run")["jobs"][0]["ok"]

    time.sleep(1.1)
    s3.put_object(Bucket=bucket, Key="doc-00.txt", Body=b"rewritten once")
    s3.put_object(Bucket=bucket, Key="doc-00.txt", Body=b"rewritten twice")
    for i in range(2, 12):
        s3.delete_object(Bucket=bucket, Key=f"doc-{i:02d}.txt")
    held = p.json("run", check=1)["jobs"][0]
    assert held["breaker"] and not held["history"], held
    assert any("were not imported" in w for w in held["warnings"]), held["warnings"]
    assert len(p.cli("ls", "hist").stdout.splitlines()) == 12  # the previous versions stay current

    p.cli("approve", "hist")
    approved = p.json("run")["jobs"][0]
    assert approved["ok"] and approved["history"]["versions"] == 2 and approved["history"]["deletions"] == 10, approved
    assert sorted(p.cli("ls", "hist").stdout.split()[2::3]) == ["doc-00.txt", "doc-01.txt"]
    vault = open_vault(p)
    history = History.for_job(vault, "hist")
    versions = set()
    for seq in history.seqs:
        with history.state(seq) as state:
            versions |= {vault.read_chunk(e.chunks[0]) for e in state if e.key == "doc-00.txt"}
    assert {b"rewritten once", b"rewritten twice"} <= versions


def test_a_bucket_without_versioning_is_warned_about(tmp_path, s3_server):
    """Without versioning a bucket keeps one version per key: imported snapshots would miss keys
    before their only kept version, so the run says so."""
    s3 = s3_client(s3_server)
    bucket = unique("plain")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="x.txt", Body=b"x1")
    p = project(tmp_path, s3_server, bucket)
    p.cli("init")
    r = p.cli("run")
    assert 'history = "all", but versioning is off on the source bucket' in r.stderr, r.stderr
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert "versioning is suspended" in p.cli("run").stderr
