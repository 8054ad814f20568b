"""Replicate an S3 bucket into a vault on every other provider, verify it, restore it."""

from __future__ import annotations

import os

import pytest

from project import UNUSUAL, read_dir, unique
from test_e2e_incident import fill, make_project


def _vault(kind: str, request, tmp_path) -> tuple[str, dict]:
    if kind == "gcs":
        srv = request.getfixturevalue("gcs_server")
        return f"gs://{unique('vault')}/replicator", srv.fsspec_options()
    if kind == "azure":
        srv = request.getfixturevalue("azure_server")
        return f"az://{unique('vault')}/replicator", {"connection_string": srv.connection_string}
    if kind == "sftp":
        srv = request.getfixturevalue("sftp_server")
        o = srv.fsspec_options()
        return (f"sftp://{o['username']}@{o['host']}:{o['port']}{srv.root}/{unique('vault')}",
                {"client_keys": o["client_keys"], "known_hosts": o["known_hosts"]})
    if kind == "s3":  # another account on another server would be the real setup; a second bucket here
        srv = request.getfixturevalue("s3_server")
        return f"s3://{unique('vault')}/replicator", srv.fsspec_options()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["gcs", "azure", "sftp", "s3"])
def test_replicate_verify_restore_on_each_vault_provider(kind, request, tmp_path, s3_server):
    url, options = _vault(kind, request, tmp_path)
    p, fs, bucket = make_project(tmp_path, s3_server, vault_url=url, vault_options=options)
    objects = {**UNUSUAL, "large/object.bin": os.urandom(5 * 2**20)}
    fill(fs, bucket, objects)

    assert "no vault yet" in p.cli("check-config").stdout
    p.cli("init")
    assert p.cli("init", check=2).stderr.count("\n") == 1  # refuses, one line
    assert "key file opens it" in p.cli("check-config").stdout
    run = p.json("run")["jobs"][0]
    assert run["copied"] == len(objects)
    fs.pipe_file(f"{bucket}/plain.txt", b"second version")
    assert p.json("run")["jobs"][0]["copied"] == 1

    v = p.json("verify", "--deep")
    assert v["ok"] and v["jobs"] == {"prod": 2} and v["chunks_checked"] >= len(objects)

    out = tmp_path / "out"
    p.cli("restore", "prod", "--to", str(out))
    assert read_dir(out) == {**objects, "plain.txt": b"second version"}
    out0 = tmp_path / "out0"
    first = p.json("snapshots")["snapshots"][0]["time"]
    p.cli("restore", "prod", "--to", str(out0), "--at", first)
    assert read_dir(out0) == objects
