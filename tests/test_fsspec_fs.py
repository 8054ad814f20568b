"""The vault as a read-only fsspec filesystem, `replicator://JOB@TIME/prefix` (issue 10): it lists
and reads the same bytes as a restore at the same time, reads only the chunks a read needs, refuses
every write, and passes the read-side tests of fsspec's own abstract suite."""

from __future__ import annotations

import os
import posixpath
from hashlib import md5

import fsspec
import pytest
from fsspec.tests.abstract import AbstractFixtures, AbstractGetTests
from project import Project, read_dir

from replicator.fsspec_fs import ReplicatorFileSystem

fsspec.register_implementation("replicator", ReplicatorFileSystem, clobber=True)  # until the entry point is installed

BIG = os.urandom(9 * 2**20 + 12345)  # three chunks
MB4 = 4 * 2**20

# fsspec's abstract scenarios (tests/abstract/__init__.py), as files in the source: the vault has
# no empty directories, and these have none.
SCENARIOS = {
    "bulk": ["file1", "file2", "subdir/subfile1", "subdir/subfile2", "subdir/nesteddir/nestedfile"],
    "glob": ["file1", "file2"] + [f"subdir{i}/{f}" for i in range(2)
                                   for f in ("subfile1", "subfile2", "nesteddir/nestedfile")],
    "prefix": ["subdir.txt", "subdir/subfile.txt"],
}


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    """A job with two snapshots: (project, time of the first, time of the second)."""
    tmp = tmp_path_factory.mktemp("fsspec-vault")
    src = tmp / "src"
    files = {"big/blob.bin": BIG, "a.txt": b"first a", "dir/b.txt": b"b" * 5000, "dir/sub/c.txt": b"c",
             "unicodé/名前.txt": "名前".encode(), "empty.dat": b""}
    for scenario, names in SCENARIOS.items():
        files.update({f"abstract/{scenario}/source/{n}": b"" for n in names})
    files.update({f"abstract/hashed/source/{md5(str(i).encode()).hexdigest()}.txt": str(i).encode() for i in range(10)})
    for k, v in files.items():
        (src / k).parent.mkdir(parents=True, exist_ok=True)
        (src / k).write_bytes(v)
    p = Project(tmp, str(tmp / "vault"), {}, jobs=[{"name": "docs", "source": str(src)}])
    p.write_config()
    p.cli("init")
    p.cli("run")
    (src / "a.txt").write_bytes(b"second a, longer")
    (src / "dir" / "b.txt").unlink()
    (src / "new.txt").write_bytes(b"new")
    p.cli("run")
    snaps = p.json("snapshots")["snapshots"]
    return p, snaps[0]["time"], snaps[1]["time"]


def test_lists_and_reads_the_same_bytes_as_a_restore_at_the_same_time(vault, tmp_path):
    p, t0, t1 = vault
    for at in (t0, t1):
        out = tmp_path / f"restore-{at}"
        p.cli("restore", "docs", "--to", str(out), "--at", at)
        restored = read_dir(out)
        fs = fsspec.filesystem("replicator", config=str(p.config))
        root = f"docs@{at}"
        found = fs.find(root)
        assert sorted(k[len(root) + 1:] for k in found) == sorted(restored)
        assert {k[len(root) + 1:]: fs.cat_file(k) for k in found} == restored
        walked = {posixpath.relpath(f, root) for d, _, files in fs.walk(root) for f in (posixpath.join(d, x) for x in files)}
        assert walked == set(restored)
    # fsspec.open with a URL, as pandas or Dask would use it
    with fsspec.open(f"replicator://docs@{t0}/a.txt", "rb", config=str(p.config)) as f:
        assert f.read() == b"first a"
    with fsspec.open("replicator://docs/a.txt", "rt", config=str(p.config)) as f:  # no time: the latest
        assert f.read() == "second a, longer"
    fs = fsspec.filesystem("replicator", config=str(p.config))
    assert fs.ls("", detail=False) == ["docs"]
    assert fs.ls(f"docs@{t0}", detail=False) == [f"docs@{t0}/{n}" for n in
                                                  ("a.txt", "abstract", "big", "dir", "empty.dat", "unicodé")]
    assert fs.ls(f"docs@{t1}/dir", detail=False) == [f"docs@{t1}/dir/sub"]  # b.txt is gone at t1
    info = fs.info(f"docs@{t0}/big/blob.bin")
    assert info["type"] == "file" and info["size"] == len(BIG) and info["snapshot"] == 0
    assert fs.info(f"docs@{t0}/dir")["type"] == "directory"
    assert fs.isdir(f"docs@{t0}/dir") and not fs.exists(f"docs@{t1}/dir/b.txt") and fs.exists(f"docs@{t0}/dir/b.txt")
    with pytest.raises(FileNotFoundError):
        fs.info(f"docs@{t0}/nope")
    with pytest.raises(FileNotFoundError):
        fs.ls("docs@1999-01-01T00:00:00Z")  # before the first snapshot


def test_seekable_reads_fetch_only_the_chunks_they_cover(vault):
    p, t0, _ = vault
    fs = fsspec.filesystem("replicator", config=str(p.config))
    with fs.open(f"docs@{t0}/big/blob.bin") as f:
        f.seek(MB4 - 5)
        assert f.read(10) == BIG[MB4 - 5:MB4 + 5]  # across the first chunk boundary
        assert f.chunks_read == 2
        f.seek(-10, 2)
        assert f.read() == BIG[-10:]
        assert f.chunks_read == 3
        f.seek(MB4 + 100)
        assert f.read(50) == BIG[MB4 + 100:MB4 + 150]
        assert f.chunks_read == 3  # still kept: the last two chunks read
        f.seek(100)
        assert f.read(50) == BIG[100:150]
        assert f.chunks_read == 4  # the first chunk again: it was dropped
        assert f.tell() == 150
    assert fs.cat_file(f"docs@{t0}/big/blob.bin", start=2 * MB4 + 1, end=2 * MB4 + 4) == BIG[2 * MB4 + 1:2 * MB4 + 4]
    assert fs.cat_file(f"docs@{t0}/empty.dat") == b""


def test_every_write_is_refused(vault):
    p, t0, _ = vault
    fs = fsspec.filesystem("replicator", config=str(p.config))
    path = f"docs@{t0}/a.txt"
    for attempt in (lambda: fs.open(f"docs@{t0}/x", "wb"), lambda: fs.open(path, "ab"), lambda: fs.pipe_file(path, b"x"),
                    lambda: fs.rm(path), lambda: fs.mkdir(f"docs@{t0}/new"), lambda: fs.touch(f"docs@{t0}/y"),
                    lambda: fs.mv(path, f"docs@{t0}/z"), lambda: fs.cp_file(path, f"docs@{t0}/z"),
                    lambda: fs.put(__file__, f"docs@{t0}/z")):
        with pytest.raises(PermissionError):
            attempt()
    assert fs.cat_file(path) == b"first a"


class TestFsspecAbstractGet(AbstractFixtures, AbstractGetTests):
    """fsspec's own `get` tests (copying out of the filesystem). The other abstract suites (copy,
    put, pipe, open, mv) write into the filesystem and do not apply to a read-only one; their
    write side is covered by test_every_write_is_refused."""

    @pytest.fixture
    def fs(self, vault):
        return fsspec.filesystem("replicator", config=str(vault[0].config))

    @pytest.fixture
    def fs_path(self, vault):
        return f"docs@{vault[1]}/abstract"

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def supports_empty_directories(self):
        return False

    # The scenarios exist in the snapshot already (they cannot be written at test time).
    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, fs_path):
        return f"{fs_path}/bulk/source"

    @pytest.fixture
    def fs_glob_edge_cases_files(self, fs_path):
        return f"{fs_path}/glob/source"

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, fs_path):
        return f"{fs_path}/prefix/source"

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, fs_path):
        return f"{fs_path}/hashed/source"

    def test_get_directory_recursive(self):
        pytest.skip("creates its source with fs.mkdir/fs.touch: writes, refused by a read-only filesystem")
