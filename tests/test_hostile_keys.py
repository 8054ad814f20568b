"""Hostile source keys: replicated from S3 exactly; a restore to a directory never writes outside
it and reports what the file system cannot hold; a restore to S3 reproduces every key."""

from __future__ import annotations

import json
import os
import unicodedata

import pytest

from project import read_dir, read_tree, s3_fs, unique
from secrets_scan import scan_outputs_for_secrets  # noqa: F401  (session-wide secrets scan)
from test_faults import KEY_ID, SECRET, s3_project
from replicator.targets import LocalTarget, Unrepresentable

NFC, NFD = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")
# key -> why a directory cannot hold it (None: it can, on Linux)
HOSTILE = {
    "../escape.txt": "path", "a/../../up.txt": "path", "/abs/path.txt": "path", "./dot.txt": "path",
    "dbl//slash.txt": "path", "back\\slash.txt": "path",
    "x" * 1024: "long", "long/" + "y" * 300 + "/z": "long",
    "ctl\x01\x1f.txt": None, "cr\rname": None, "tab\tname": None, "del\x7f": None, "esc\x1b[2Jclear": None,
    "case/Readme.md": None, "case/README.md": None, NFC: None, NFD: None,
    "sp ace/ .txt": None, "q?x#y%z.txt": None, "trail.": None, "plain/file.txt": None,
}
ESCAPES = ("escape.txt", "up.txt", "abs")  # names that would appear next to the target if it escaped


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, s3_server):
    tmp_path = tmp_path_factory.mktemp("hostile")
    fs = s3_fs(s3_server)
    bucket = unique("hostile")
    fs.mkdir(bucket)
    objects = {k: f"content of {k!r}".encode() for k in HOSTILE}
    objects["dir"] = b"a key that is also a directory"
    objects["dir/child"] = b"a key under it"
    for k, v in objects.items():
        fs.pipe_file(f"{bucket}/{k}", v)
    p = s3_project(tmp_path / "p", bucket, s3_server.endpoint_url)
    p.cli("init")
    run = p.json("run")["jobs"][0]
    assert run["ok"] and run["copied"] == len(objects), run
    return p, fs, objects


def test_hostile_keys_are_replicated_exactly(replicated):
    p, _, objects = replicated
    listed = [json.loads(line)["key"] for line in p.cli("ls", "prod", "--json").stdout.splitlines()]
    assert sorted(listed) == sorted(objects)
    assert NFC != NFD and NFC in listed and NFD in listed


def test_a_restore_to_a_directory_stays_inside_and_reports_what_it_cannot_hold(tmp_path, replicated):
    p, _, objects = replicated
    out = tmp_path / "box" / "out"
    out.parent.mkdir()
    before = set(os.listdir(tmp_path)) | {"box"}
    r = p.cli("restore", "prod", "--to", str(out), "--json", check=1)
    result = json.loads(r.stdout)
    skipped = result["skipped"]
    # never outside the target: nothing new beside it, nothing at the absolute path
    assert os.listdir(tmp_path / "box") == ["out"] and set(os.listdir(tmp_path)) == before
    assert not os.path.exists("/abs/path.txt")
    got = read_dir(out)
    unrepresentable = [k for k, why in HOSTILE.items() if why]
    for k in unrepresentable:  # each one named, once
        assert sum(repr(k) in s for s in skipped) == 1, (k, skipped)
    assert any("too long" in s for s in skipped)
    # a key that is also another key's directory: one of the two is written, the other reported
    assert ("dir" in got) != ("dir/child" in got)
    assert sum(repr(k) in s and "collides" in s for k in ("dir", "dir/child") for s in skipped) == 1
    assert len(skipped) == len(unrepresentable) + 1
    representable = {k: v for k, v in objects.items() if not HOSTILE.get(k) and k not in ("dir", "dir/child")}
    assert {k: v for k, v in got.items() if k not in ("dir", "dir/child")} == representable
    assert result["objects"] == len(representable) + 1
    human = p.cli("restore", "prod", "--to", str(tmp_path / "again"), check=1).stdout
    assert f"{len(skipped)} keys cannot be represented on the target" in human


def test_a_restore_to_s3_reproduces_every_key(tmp_path, s3_server, replicated):
    p, fs, objects = replicated
    target = unique("restored")
    p.env["TARGET_SECRET"] = SECRET  # --to-option values may be env: references
    r = p.cli("restore", "prod", "--to", f"s3://{target}/copy", "--json",
              "--to-option", f"endpoint_url={s3_server.endpoint_url}", "--to-option", f"key={KEY_ID}",
              "--to-option", "secret=env:TARGET_SECRET")
    result = json.loads(r.stdout)
    assert result["skipped"] == [] and result["errors"] == [] and result["objects"] == len(objects)
    assert read_tree(s3_fs(s3_server), f"{target}/copy") == objects


def test_a_file_system_that_folds_case_or_normalisation_is_reported_not_overwritten(tmp_path):
    """On macOS or Windows `Readme.md` and `README.md` (or NFC and NFD names) are one file: the second
    key must be reported, not silently written over the first. This kernel has no case-folding file
    system (tmpfs/ext4 casefold are not built in), so the folding found by the probe is simulated."""
    target = LocalTarget(str(tmp_path / "out"))
    target.write("probe", iter([b"x"]))
    assert target._fold is False  # Linux here: every key its own name
    target._fold = lambda key: unicodedata.normalize("NFC", key).casefold()
    target.write("case/Readme.md", iter([b"first"]))
    with pytest.raises(Unrepresentable, match="README.md.*Readme.md.*same file name"):
        target.write("case/README.md", iter([b"second"]))
    target.write(NFC, iter([b"nfc"]))
    with pytest.raises(Unrepresentable, match="same file name"):
        target.write(NFD, iter([b"nfd"]))
    assert (tmp_path / "out" / "case" / "Readme.md").read_bytes() == b"first"


def test_a_symbolic_link_in_the_target_is_never_written_through(tmp_path):
    """A directory link leading outside the target refuses the keys under it; a file link is replaced
    by the restored file, and what it pointed to is left alone."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep")
    root = tmp_path / "out"
    root.mkdir()
    (root / "linkdir").symlink_to(outside)
    (root / "linkfile").symlink_to(outside / "victim")
    target = LocalTarget(str(root))
    for key in ("linkdir/victim", "linkdir/new/deeper"):
        with pytest.raises(Unrepresentable, match="leads outside"):
            target.write(key, iter([b"evil"]))
    target.write("linkfile", iter([b"restored"]))
    target.write("plain/file", iter([b"ok"]))
    assert not (root / "linkfile").is_symlink() and (root / "linkfile").read_bytes() == b"restored"
    assert sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_bytes() == b"keep"
    assert (root / "plain" / "file").read_bytes() == b"ok"


def test_human_listing_does_not_pass_control_characters_to_the_terminal(replicated):
    p, _, _ = replicated
    out = p.cli("ls", "prod").stdout
    assert not any(c in out for c in "\x1b\x01\x7f\r")
