"""Key management through the CLI: rotation without re-upload, passphrases, paper backups."""

from __future__ import annotations

import shutil

from project import read_dir
from test_e2e_failures import OBJECTS, data_files, ready


def test_rotate_keeps_everything_readable_and_retires_the_old_key(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    shutil.copy(tmp_path / "vault.key", tmp_path / "stolen.key")
    blobs_before = {f: f.stat().st_mtime_ns for f in data_files(tmp_path)}
    out = p.json("key", "rotate")
    assert out["old_keyring_removed"] and out["old_key_id"] != out["new_key_id"]
    assert (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600
    assert {f: f.stat().st_mtime_ns for f in data_files(tmp_path)} == blobs_before  # no blob re-uploaded
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == OBJECTS
    assert "vault OK" in p.cli("verify", "--deep").stdout
    fs.pipe_file(f"{bucket}/obj/after-rotation", b"new")
    p.cli("run")
    r = p.cli("verify", "--key", str(tmp_path / "stolen.key"), check=2)
    assert "does not open" in r.stderr and r.stderr.count("\n") == 1


def test_passphrase_protected_key_file(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    p.env["REPLICATOR_NEW_PASSPHRASE"] = "correct horse battery"
    p.cli("key", "passphrase")
    assert "scrypt" in (tmp_path / "vault.key").read_text()
    r = p.cli("run", check=2)
    assert "passphrase" in r.stderr and r.stderr.count("\n") == 1
    p.env["REPLICATOR_PASSPHRASE"] = "wrong one"
    assert "wrong passphrase" in p.cli("run", check=2).stderr
    (tmp_path / "pass").write_text("correct horse battery\n")
    del p.env["REPLICATOR_PASSPHRASE"]
    p.env["REPLICATOR_PASSPHRASE_FILE"] = str(tmp_path / "pass")
    p.cli("run")
    assert "correct horse" not in p.cli("--log-level", "debug", "run").stderr


def test_paper_backup_round_trip(tmp_path, s3_server):
    p, fs, bucket = ready(tmp_path, s3_server)
    paper = p.cli("key", "export").stdout
    (tmp_path / "paper.txt").write_text(paper)
    (tmp_path / "vault.key").rename(tmp_path / "lost.key")
    p.cli("key", "import", str(tmp_path / "paper.txt"))
    assert (tmp_path / "vault.key").read_text() == (tmp_path / "lost.key").read_text()
    assert "already exists" in p.cli("key", "import", str(tmp_path / "paper.txt"), check=2).stderr
    typo = paper.replace(paper.splitlines()[1][:4], "AAAA", 1)
    (tmp_path / "typo.txt").write_text(typo)
    (tmp_path / "vault.key").unlink()
    assert "checksum" in p.cli("key", "import", str(tmp_path / "typo.txt"), check=2).stderr
