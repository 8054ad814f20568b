"""The incident this product exists for, end to end through the CLI against a real S3 server."""

from __future__ import annotations

import json
import os

from project import UNUSUAL, Project, read_dir, read_tree, s3_fs, unique


def make_project(tmp_path, s3_server, vault_url=None, vault_options=None) -> tuple[Project, object, str]:
    fs = s3_fs(s3_server)
    bucket = unique("prod")
    fs.mkdir(bucket)
    p = Project(tmp_path, vault_url or str(tmp_path / "vault"), vault_options or {},
                jobs=[{"name": "prod", "source": f"s3://{bucket}/", "schedule": "15m",
                       "source_options": {"endpoint_url": s3_server.endpoint_url, "key": "testing", "secret": "env:SRC_SECRET"}}],
                env={"SRC_SECRET": "testing"})
    p.write_config()
    return p, fs, bucket


def ls_keys(p: Project, *args: str) -> list[str]:
    return sorted(json.loads(line)["key"] for line in p.cli("ls", "prod", "--json", *args).stdout.splitlines())


def fill(fs, bucket: str, objects: dict[str, bytes]) -> None:
    for k, v in objects.items():
        fs.pipe_file(f"{bucket}/{k}", v)


def test_incident_drill_restores_everything_as_before_the_attack(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    original = dict(UNUSUAL)
    original.update({f"data/part-{i:03d}.csv": f"id,value\n{i},{i * i}\n".encode() * (i + 1) for i in range(40)})
    original["big/blob.bin"] = os.urandom(9 * 2**20 + 12345)  # three chunks
    fill(fs, bucket, original)

    init = p.cli("init")
    assert "vault created" in init.stdout
    assert (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600
    first = p.json("run")["jobs"][0]
    assert first["copied"] == len(original) and first["seq"] == 0

    # Normal life: some objects change, one is added, one removed.
    changed = {"data/part-001.csv": b"changed\n", "new/object.txt": b"new"}
    fill(fs, bucket, changed)
    fs.rm_file(f"{bucket}/data/part-002.csv")
    second = p.json("run")["jobs"][0]
    assert (second["copied"], second["tombstones"]) == (2, 1)
    before_attack = {**original, **changed}
    del before_attack["data/part-002.csv"]

    # Unchanged objects cost only a listing entry: nothing is copied.
    third = p.json("run")["jobs"][0]
    assert third["copied"] == 0 and third["unchanged"] == len(before_attack)

    # The attack: overwrite half with garbage, delete the rest.
    keys = sorted(before_attack)
    for k in keys[: len(keys) // 2]:
        fs.pipe_file(f"{bucket}/{k}", b"ENCRYPTED BY RANSOMWARE " + os.urandom(64))
    for k in keys[len(keys) // 2:]:
        fs.rm_file(f"{bucket}/{k}")
    attacked = p.cli("run", check=1)  # the breaker trips: the latest snapshot keeps the old versions
    assert "breaker tripped" in attacked.stderr
    assert ls_keys(p) == keys
    assert "BREAKER TRIPPED" in p.cli("status").stdout

    # Had the operator approved it (or had there been no breaker), the history still has every byte.
    p.cli("approve", "prod")
    p.cli("run")

    snaps = p.json("snapshots")["snapshots"]
    assert [s["seq"] for s in snaps] == [0, 1, 2, 3, 4]
    before = snaps[2]["time"]

    # The latest snapshot shows the attack; the one before it does not.
    assert len(ls_keys(p)) == len(keys) // 2
    assert ls_keys(p, "--at", before) == keys

    out = tmp_path / "restored"
    r = p.cli("restore", "prod", "--to", str(out), "--at", before)
    assert read_dir(out) == before_attack, r.stdout + r.stderr

    # Back into a fresh bucket on S3: every key and byte identical.
    target = unique("recovered")
    p.cli("restore", "prod", "--to", f"s3://{target}/", "--at", before,
          "--to-option", f"endpoint_url={s3_server.endpoint_url}", "--to-option", "key=testing",
          "--to-option", "secret=env:SRC_SECRET")
    assert read_tree(fs, target) == before_attack

    # An older point in time too: the first snapshot.
    out0 = tmp_path / "restored-0"
    p.cli("restore", "prod", "--to", str(out0), "--at", snaps[0]["time"])
    assert read_dir(out0) == original

    assert "vault OK" in p.cli("verify", "--deep").stdout


def test_vault_reveals_no_names_or_content(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    secret_words = {"payroll/ceo-salary.xlsx": b"TOP SECRET SALARY FIGURES " * 100}
    fill(fs, bucket, secret_words)
    p.cli("init")
    p.cli("run")
    for f in (tmp_path / "vault").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"payroll" not in data and b"SALARY" not in data and b"prod" not in data
            assert "payroll" not in str(f) and "prod" not in f.relative_to(tmp_path / "vault").as_posix()
