"""Smoke tests: each server fixture works end to end through fsspec."""

import subprocess

import asyncssh
import fsspec
import pytest

DATA = b"hello replicator\n"


def _roundtrip(fs, base: str) -> None:
    """mkdir ``base``, write one file, read it back, list it."""
    fs.mkdir(base)
    path = f"{base}/dir/hello.txt"
    fs.pipe_file(path, DATA)
    assert fs.cat_file(path) == DATA
    entries = fs.ls(f"{base}/dir", detail=True)
    assert [(e["name"].rstrip("/").split("/")[-1], e["size"]) for e in entries] == [
        ("hello.txt", len(DATA))
    ]
    assert fs.info(path)["size"] == len(DATA)


def test_s3(s3_server):
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3_server.fsspec_options())
    _roundtrip(fs, "bucket")
    assert "bucket" in fs.ls("", refresh=True)
    s3_server.reset()
    assert fs.ls("", refresh=True) == []


def test_gcs(gcs_server):
    fs = fsspec.filesystem("gcs", skip_instance_cache=True, **gcs_server.fsspec_options())
    _roundtrip(fs, "bucket")
    assert "bucket" in [b.rstrip("/") for b in fs.ls("", refresh=True)]


def test_azure(azure_server):
    fs = fsspec.filesystem("abfs", skip_instance_cache=True, **azure_server.fsspec_options())
    _roundtrip(fs, "container")
    assert "container" in [c.rstrip("/") for c in fs.ls("", refresh=True)]


def test_sftp(sftp_server):
    fs = fsspec.filesystem("sftp", skip_instance_cache=True, **sftp_server.fsspec_options())
    base = f"{sftp_server.root}/data"
    _roundtrip(fs, base)
    # The bytes really landed on the server's disk.
    assert (sftp_server.root / "data/dir/hello.txt").read_bytes() == DATA


def test_sftp_rejects_unknown_host_key(sftp_server, tmp_path):
    """known_hosts is a path that asyncssh really checks: a wrong key fails."""
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    wrong = tmp_path / "known_hosts"
    other = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    wrong.write_text(f"[{sftp_server.host}]:{sftp_server.port} {other}\n")
    opts = {**sftp_server.fsspec_options(), "known_hosts": str(wrong)}
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        fsspec.filesystem("sftp", skip_instance_cache=True, **opts)
