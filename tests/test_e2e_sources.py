"""Any fsspec URL is a source; memory does not grow with object size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from project import Project, read_dir, unique

MAXRSS = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)
"""


def local_project(tmp_path, source_dir) -> Project:
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "files", "source": f"file://{source_dir}"}])
    p.write_config()
    return p


def peak_rss_kib(p: Project, *args: str) -> int:
    cmd = [sys.executable, "-c", MAXRSS, sys.executable, "-m", "replicator", "--config", str(p.config), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "0", f"replicator {args} exited {out[1]}"
    return int(out[0])


def test_a_local_directory_is_a_source_with_include_exclude(tmp_path):
    src = tmp_path / "src"
    for k, v in {"a.txt": b"a", "sub/b.log": b"b", "tmp/c.txt": b"c", "sub/deep/d.txt": b"d"}.items():
        (src / k).parent.mkdir(parents=True, exist_ok=True)
        (src / k).write_bytes(v)
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": "files", "source": str(src), "exclude": ["tmp/**", "**/*.log"]}])
    p.write_config()
    p.cli("init")
    assert p.json("run")["jobs"][0]["copied"] == 2
    p.cli("restore", "files", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == {"a.txt": b"a", "sub/deep/d.txt": b"d"}


def test_a_gcs_bucket_is_a_source(tmp_path, gcs_server):
    import fsspec

    fs = fsspec.filesystem("gcs", **gcs_server.fsspec_options())
    bucket = unique("gsrc")
    fs.mkdir(bucket)
    objects = {"x/1.txt": b"one", "x/2.bin": os.urandom(5 * 2**20)}
    for k, v in objects.items():
        fs.pipe_file(f"{bucket}/{k}", v)
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": "gcs", "source": f"gs://{bucket}", "source_options": gcs_server.fsspec_options()}])
    p.write_config()
    p.cli("init")
    p.cli("run")
    assert p.json("run")["jobs"][0]["copied"] == 0  # unchanged on the second pass
    p.cli("restore", "gcs", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == objects


def test_memory_does_not_grow_with_object_size(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    (small / "one").write_bytes(os.urandom(2**20))
    with open(large / "one", "wb") as f:  # 384 MiB, incompressible
        for _ in range(384):
            f.write(os.urandom(2**20))
    rss = {}
    for name, d in (("small", small), ("large", large)):
        (tmp_path / f"p-{name}").mkdir()
        p = local_project(tmp_path / f"p-{name}", d)
        p.cli("init")
        rss[name] = peak_rss_kib(p, "run")
        rss[name + "-restore"] = peak_rss_kib(p, "restore", "files", "--to", str(tmp_path / f"out-{name}"))
        assert json.loads(p.cli("verify", "--json").stdout)["ok"]
    # A 384x larger object may cost a few chunks in flight, never the object: its parts are copied in
    # parallel, at most workers / 2 = 4 at once (the default 8 workers), each about four 4 MiB buffers
    # (the chunk, its framed plaintext, the sealed segments and the joined blob): 64 MiB, and a margin.
    print(rss)
    assert rss["large"] < rss["small"] + 96 * 1024, rss
    assert rss["large-restore"] < rss["small-restore"] + 48 * 1024, rss
    assert (tmp_path / "out-large" / "one").stat().st_size == 384 * 2**20
