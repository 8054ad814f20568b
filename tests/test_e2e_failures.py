"""What users and accidents do to a vault: corruption, deletion, kill -9, wrong keys, bad config, a lost host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time

from project import read_dir
from replicator.stores.local import LocalStore
from replicator.vault.keys import load_key_file
from replicator.vault.vault import Vault
from test_e2e_incident import fill, make_project

OBJECTS = {f"obj/{i:04d}.bin": os.urandom(1000 + i) for i in range(60)}
MANY = {f"obj/{i:04d}.bin": os.urandom(1000 + i) for i in range(200)}  # small objects: 4 packs


def ready(tmp_path, s3_server, objects=OBJECTS):
    p, fs, bucket = make_project(tmp_path, s3_server)
    fill(fs, bucket, objects)
    p.cli("init")
    p.cli("run")
    return p, fs, bucket


def data_files(tmp_path):
    """The vault's data blobs that hold object content (packs; not manifest pages), in name order."""
    vault = Vault.open(LocalStore(str(tmp_path / "vault")), load_key_file(tmp_path / "vault.key"))
    pages = {ref.blob for job, seqs in vault.snapshot_seqs().items() for seq in seqs
             for ref in vault.read_snapshot(job, seq)[0].pages}
    return sorted(f for f in (tmp_path / "vault" / "data").rglob("*") if f.is_file() and f.name not in pages)


def test_verify_finds_a_corrupted_blob_only_when_deep(tmp_path, s3_server):
    p, _, _ = ready(tmp_path, s3_server, MANY)
    victim = data_files(tmp_path)[2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.chmod(0o600)
    victim.write_bytes(bytes(raw))
    assert "vault OK" in p.cli("verify").stdout  # sizes are intact
    r = p.cli("verify", "--deep", check=1)
    problems = [l for l in r.stdout.splitlines() if l.startswith("problem:")]
    assert len(problems) == 1 and victim.name in problems[0] and "authentication" in problems[0]


def test_verify_finds_truncated_and_missing_blobs(tmp_path, s3_server):
    p, _, _ = ready(tmp_path, s3_server, MANY)
    files = data_files(tmp_path)
    files[0].write_bytes(files[0].read_bytes()[:-10])
    files[1].unlink()
    r = p.cli("verify", check=1)
    problems = [l for l in r.stdout.splitlines() if l.startswith("problem:")]
    assert len(problems) == 2
    assert any(files[0].name in l and "expected" in l for l in problems)
    assert any(files[1].name in l and "missing" in l for l in problems)


def test_verify_finds_a_deleted_or_replaced_manifest(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    fs.pipe_file(f"{bucket}/obj/extra", b"x")
    p.cli("run")
    p.cli("run")
    snaps = sorted(f for f in (tmp_path / "vault" / "snapshots").rglob("0*") if f.is_file())
    assert len(snaps) == 3
    # Replace snapshot 1 by a copy of snapshot 2: authentic bytes, wrong place.
    saved = snaps[1].read_bytes()
    snaps[1].write_bytes(snaps[2].read_bytes())
    r = p.cli("verify", check=1)
    assert "snapshot 1" in r.stdout and "problem:" in r.stdout
    snaps[1].write_bytes(saved)
    assert "vault OK" in p.cli("verify").stdout
    # Delete the middle one: the gap is named.
    snaps[1].unlink()
    r = p.cli("verify", check=1)
    assert "snapshot 1 is missing" in r.stdout
    # ... and a point in time it may have covered is not answered by the snapshot before it.
    at = p.json("snapshots")["snapshots"][-1]["time"]
    for cmd in (("restore", "prod", "--to", str(tmp_path / "gap")), ("ls", "prod")):
        r = p.cli(*cmd, "--at", _before(at), check=1)
        assert "snapshot 1 of job prod is missing" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    # Delete the newest: only the catalogue on this host can tell (rollback).
    shutil.copy(snaps[0], tmp_path / "keep")
    snaps[2].unlink()
    r = p.cli("verify", check=1)
    assert "snapshot 2 recorded by this host is missing" in r.stdout
    assert p.cli("run", check=1).stderr.count("\n") == 1


def _before(t: str) -> str:
    """A moment just before the ISO time t (microseconds)."""
    from datetime import datetime, timedelta

    return (datetime.fromisoformat(t.replace("Z", "+00:00")) - timedelta(microseconds=1)).isoformat()


def test_kill_9_during_a_run_then_resume(tmp_path, s3_server):
    objects = {f"many/{i:04d}.bin": os.urandom(20_000) for i in range(1200)}
    p, fs, bucket = make_project(tmp_path, s3_server)
    fill(fs, bucket, objects)
    p.cli("init")
    proc = p.popen("run", "--workers", "1")  # slow enough to be caught with copies recorded, not finished
    db = tmp_path / "state" / "catalogue.db"
    deadline = time.monotonic() + 60
    pending = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=0.1) as c:
                pending = c.execute("SELECT count(*) FROM pending").fetchone()[0]
        except sqlite3.Error:
            continue
        if pending >= 20:
            break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "vault OK" in p.cli("verify").stdout  # nothing half-written is referenced
    resumed = p.json("run")["jobs"][0]
    assert resumed["copied"] <= len(objects) - pending  # finished work is not redone
    assert resumed["seq"] == 0
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == objects


def test_a_new_host_with_only_config_key_and_vault(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    fs.pipe_file(f"{bucket}/obj/0001.bin", b"v2")
    p.cli("run")
    shutil.rmtree(tmp_path / "state")  # the old host is gone
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == {**OBJECTS, "obj/0001.bin": b"v2"}
    again = p.json("run")["jobs"][0]  # the catalogue is rebuilt from the vault: nothing to copy
    assert again["copied"] == 0 and again["seq"] == 2
    assert "vault OK" in p.cli("verify", "--deep").stdout


def test_expected_errors_are_one_line_with_exit_2(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    # vault missing
    r = p.cli("run", check=2)
    assert r.stderr.count("\n") == 1 and "replicator init" in r.stderr and "Traceback" not in r.stderr
    p.cli("init")
    # wrong key file
    (tmp_path / "vault.key").rename(tmp_path / "good.key")
    other = tmp_path / "other"
    other.mkdir()
    q = make_project(other, s3_server)[0]
    q.cli("init")
    shutil.copy(other / "vault.key", tmp_path / "vault.key")
    r = p.cli("run", check=2)
    assert r.stderr.count("\n") == 1 and "does not open" in r.stderr
    (tmp_path / "vault.key").unlink()
    (tmp_path / "good.key").rename(tmp_path / "vault.key")
    # key file readable by others
    (tmp_path / "vault.key").chmod(0o644)
    r = p.cli("run", check=2)
    assert "chmod 600" in r.stderr
    (tmp_path / "vault.key").chmod(0o600)
    # bad config: key path named
    cfg = p.config.read_text()
    p.config.write_text(cfg.replace('schedule = "15m"', 'schedule = "every tuesday"'))
    r = p.cli("check-config", check=2)
    assert r.stderr.startswith("replicator: error: jobs[0].schedule:") and r.stderr.count("\n") == 1
    p.config.write_text(cfg + "\n[bogus]\nx = 1\n")
    assert "bogus: unknown key" in p.cli("run", check=2).stderr
    # unreachable source endpoint, with a secret in the config that must not leak
    p.config.write_text(cfg.replace(s3_server.endpoint_url, "http://127.0.0.1:9").replace('"env:SRC_SECRET"', '"sUpErSeCrEt-123"'))
    r = p.cli("run", check=2)
    assert r.stderr.count("\n") <= 2 and "sUpErSeCrEt" not in r.stdout + r.stderr and "Traceback" not in r.stderr
    r = p.cli("check-config", check=1)  # the vault is fine, the source is not
    assert "FAIL" in r.stdout and "sUpErSeCrEt" not in r.stdout + r.stderr
    # missing secret
    p.config.write_text(cfg.replace("env:SRC_SECRET", "env:NOT_SET_ANYWHERE"))
    r = p.cli("run", check=2)
    assert "NOT_SET_ANYWHERE" in r.stderr and r.stderr.count("\n") <= 2
    # unknown job, bad time
    p.config.write_text(cfg)
    p.cli("run")
    assert "no job named" in p.cli("run", "--job", "nope", check=2).stderr
    assert "ISO 8601" in p.cli("ls", "prod", "--at", "yesterday-ish", check=2).stderr
    for cmd in (["run"], ["restore", "prod", "--to", str(tmp_path / "out")]):
        r = p.cli(*cmd, "--workers", "0", check=2)
        assert r.stderr == "replicator: error: --workers must be at least 1\n"
    # restore targets that cannot be written: a file in the way, an SFTP server that is not there
    # (its password never shown)
    (tmp_path / "a-file").write_text("x")
    r = p.cli("restore", "prod", "--to", str(tmp_path / "a-file"), check=2)
    assert r.stderr.count("\n") == 1 and "exists and is not a directory" in r.stderr
    r = p.cli("restore", "prod", "--to", "sftp://bob:hunter2pw@127.0.0.1:9/x", check=2)
    assert r.stderr.count("\n") == 1 and "cannot reach" in r.stderr and "Traceback" not in r.stderr
    assert "hunter2pw" not in r.stdout + r.stderr
    r = p.cli("restore", "prod", "--to", "sftp://bob:hunter2pw@127.0.0.1:9/x", "--dry-run")
    assert "hunter2pw" not in r.stdout + r.stderr and "sftp://***@127.0.0.1:9/x" in r.stdout


def test_nothing_in_the_vault_is_ever_overwritten_or_deleted(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    vault = tmp_path / "vault"
    before = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in vault.rglob("*") if f.is_file()}
    for k in list(OBJECTS)[:10]:  # below the breaker threshold: normal life
        fs.rm_file(f"{bucket}/{k}")
    fs.pipe_file(f"{bucket}/{list(OBJECTS)[40]}", b"rewritten")
    p.cli("run")
    after = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in vault.rglob("*") if f.is_file()}
    assert all(after.get(f) == v for f, v in before.items())
    assert len(after) > len(before)


def test_json_outputs_are_parseable(tmp_path, s3_server):
    p, _, _ = ready(tmp_path, s3_server)
    assert p.json("snapshots")["snapshots"][0]["live"] == len(OBJECTS)
    assert p.json("verify")["ok"] is True
    assert p.json("status")["jobs"][0]["snapshot"] == 0
    assert p.json("check-config")["ok"] is True
    assert p.json("restore", "prod", "--to", str(tmp_path / "x"), "--dry-run")["objects"] == len(OBJECTS)
    assert not (tmp_path / "x").exists()
    lines = p.cli("ls", "prod", "--json").stdout.splitlines()
    assert len(lines) == len(OBJECTS) and json.loads(lines[0])["key"] == "obj/0000.bin"


def test_keys_ending_in_a_slash(tmp_path, s3_server):
    """An empty "folder" marker is not an object; a key ending in "/" that holds bytes is one, and a
    restore to S3 writes it back under exactly that key (a directory target reports it)."""
    import boto3

    from project import unique

    p, fs, bucket = ready(tmp_path, s3_server, {"a.txt": b"a"})
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key="folder/", Body=b"")
    s3.put_object(Bucket=bucket, Key="nonempty/", Body=b"a marker with content")
    assert p.json("run")["jobs"][0]["copied"] == 1
    assert sorted(json.loads(line)["key"] for line in p.cli("ls", "prod", "--json").stdout.splitlines()) == \
        ["a.txt", "nonempty/"]
    target = unique("back")
    s3.create_bucket(Bucket=target)
    p.cli("restore", "prod", "--to", f"s3://{target}/r", "--to-option", f"endpoint_url={s3_server.endpoint_url}",
          "--to-option", "key=testing", "--to-option", "secret=testing")
    got = {o["Key"]: s3.get_object(Bucket=target, Key=o["Key"])["Body"].read()
           for o in s3.list_objects_v2(Bucket=target)["Contents"]}
    assert got == {"r/a.txt": b"a", "r/nonempty/": b"a marker with content"}
    r = p.cli("restore", "prod", "--to", str(tmp_path / "dir"), check=1)
    assert "'nonempty/'" in r.stdout and (tmp_path / "dir" / "a.txt").read_bytes() == b"a"
