"""Retention that cannot be abused: policy by the provider's clock, min_age, a separate credential."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone

from project import read_dir
from replicator.policy import Policy, monotonic, select_kept
from test_e2e_incident import fill, make_project

T0 = datetime(2026, 6, 1, 12, tzinfo=timezone.utc)


def test_policy_keeps_latest_daily_weekly_monthly_and_everything_young():
    times = [(i, T0 + timedelta(hours=12 * i)) for i in range(60)]  # two a day for 30 days
    now = times[-1][1] + timedelta(hours=1)
    assert select_kept(times, Policy(), now) == set(range(60))  # no rule: keep all
    kept = select_kept(times, Policy(keep_daily=3, min_age=timedelta(0)), now)
    assert kept == {59, 58, 56}  # newest of each of the last 3 days (59 is alone on its day)
    kept = select_kept(times, Policy(keep_within=timedelta(days=2), min_age=timedelta(0)), now)
    assert kept == set(range(55, 60))
    kept = select_kept(times, Policy(keep_daily=1, min_age=timedelta(days=5)), now)
    assert kept == {59} | {i for i, t in times if now - t < timedelta(days=5)}
    monthly = select_kept(times, Policy(keep_monthly=2, min_age=timedelta(0)), now)
    assert len(monthly) == 2 and 59 in monthly


def test_times_are_made_monotonic_in_write_order():
    t = [(0, T0), (1, T0 - timedelta(days=9)), (2, T0 + timedelta(days=1))]
    assert [x for _, x in monotonic(t)] == [T0, T0, T0 + timedelta(days=1)]


def _age(path, when: datetime) -> None:
    ts = when.timestamp()
    os.utime(path, (ts, ts))


def test_prune_forgets_by_policy_deletes_only_unneeded_old_blobs(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    p.config.write_text(p.config.read_text() + '\n[jobs.retention]\nkeep_daily = 2\nmin_age = "30d"\n')
    states = []
    fill(fs, bucket, {f"f/{i}": os.urandom(3000) for i in range(10)})
    p.cli("init")
    # Each run rewrites the same two objects: their old versions become unneeded once forgotten. Small
    # objects are packed, a pack per run here: the packs of runs 1 and 2 hold only such versions (deleted),
    # the first run's pack also holds live objects (kept).
    for n in range(5):
        if n:
            fill(fs, bucket, {"f/1": os.urandom(3000), "f/6": os.urandom(3000)})
        p.cli("run")
        states.append({k[len(bucket) + 1:]: fs.cat_file(k) for k in fs.find(bucket)})
    vault = tmp_path / "vault"
    roots = sorted(f for f in (vault / "snapshots").rglob("0*") if f.is_file())
    now = datetime.now(timezone.utc)
    days_ago = [60, 50, 40, 35, 0]
    for f in (vault / "data").rglob("*"):
        if f.is_file():
            _age(f, now - timedelta(days=61))
    for root, d in zip(roots, days_ago):
        _age(root, now - timedelta(days=d))
    young = vault / "data" / "zz"  # a blob a run in progress just wrote: unreferenced, but young
    young.mkdir(exist_ok=True)
    (young / ("zz" + "0" * 62)).write_bytes(b"in flight")

    r = p.cli("prune", check=2)
    assert "--credentials" in r.stderr and r.stderr.count("\n") == 1
    dry = p.json("prune", "--dry-run")
    assert dry["jobs"][0]["forget"] == [0, 1, 2] and dry["blobs_deleted"] > 0
    creds = tmp_path / "prune.toml"
    creds.write_text("options = {}\n")
    creds.chmod(0o644)
    assert "chmod 600" in p.cli("prune", "--credentials", str(creds), check=2).stderr
    creds.chmod(0o600)
    out = p.json("prune", "--credentials", str(creds))
    assert out["jobs"][0]["forget"] == [0, 1, 2] and out["blobs_deleted"] == dry["blobs_deleted"] > 0
    assert (young / ("zz" + "0" * 62)).exists() and out["blobs_too_young"] >= 1

    assert [s["seq"] for s in p.json("snapshots")["snapshots"]] == [3, 4]
    v = p.json("verify", "--deep")
    assert v["ok"], v["problems"]
    p.cli("restore", "prod", "--to", str(tmp_path / "latest"))
    assert read_dir(tmp_path / "latest") == states[4]
    snap3 = p.json("snapshots")["snapshots"][0]["time"]
    p.cli("restore", "prod", "--to", str(tmp_path / "three"), "--at", snap3)
    assert read_dir(tmp_path / "three") == states[3]
    assert "no snapshot at or before" in p.cli("ls", "prod", "--at", "2000-01-01T00:00:00Z", check=2).stderr

    # A second prune finds nothing more to do; runs go on as before.
    again = p.json("prune", "--credentials", str(creds))
    assert again["jobs"][0]["forget"] == [] and again["blobs_deleted"] == 0
    fill(fs, bucket, {"f/new": b"new"})
    p.cli("run")
    assert p.json("verify")["ok"]


def test_the_daemon_config_cannot_prune_without_a_separate_credential(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    p.cli("init")
    r = p.cli("prune", check=2)
    assert "the daemon's should not" in r.stderr
