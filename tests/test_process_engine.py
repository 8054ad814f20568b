"""Local files into a local vault, and back, by worker processes (process_engine.py,
restore_processes.py; issue 7): the same vault and the same files as threads make, dedup against
the catalogue, and kill -9 of the parent mid-run loses nothing and leaves no worker behind."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import psutil

from project import Project, read_dir

KiB, MiB = 2**10, 2**20


def make_tree(root: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(n):
        p = root / f"d{i % 7}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(rng.randint(0, 12 * KiB)))
    (root / "big").mkdir(exist_ok=True)
    (root / "big" / "one.bin").write_bytes(rng.randbytes(9 * MiB + 7))  # three chunks
    (root / "big" / "two.bin").write_bytes(rng.randbytes(700 * KiB))  # one chunk, a blob of its own
    (root / "ünï cöde" / "spa ce.txt").parent.mkdir(exist_ok=True)
    (root / "ünï cöde" / "spa ce.txt").write_bytes(b"odd names")


def project(tmp_path: Path, src: Path, processes: int) -> Project:
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "files", "source": str(src)}])
    p.write_config()
    p.config.write_text(p.config.read_text() + f"\n[engine]\nprocesses = {processes}\n")
    p.cli("init")
    return p


def blobs(vault: Path) -> set[str]:
    return {f.name for f in (vault / "data").rglob("*") if f.is_file()}


def test_worker_processes_store_what_threads_store_and_dedup_against_the_catalogue(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 700)
    p = project(tmp_path, src, 2)
    run = p.cli("--log-level", "info", "run")
    assert "by 2 worker processes" in run.stderr, run.stderr  # asked for: even for a few hundred objects
    first = blobs(tmp_path / "vault")
    # 700 small files in batches of 256 share packs (at most one write per 64 small objects, a
    # partial pack per batch), plus 3 + 1 blobs of the large files, the manifest pages and root
    assert len(first) <= 700 // 64 + 3 + 4 + 3 + 3, len(first)
    p.cli("verify", "--deep")
    back = p.cli("--log-level", "info", "restore", "files", "--to", str(tmp_path / "out"))
    assert "by 2 worker processes" in back.stderr and read_dir(tmp_path / "out") == read_dir(src)
    part = p.cli("--log-level", "info", "restore", "files", "--to", str(tmp_path / "part"), "--prefix", "d3/")
    assert "by 2 worker processes" in part.stderr
    assert read_dir(tmp_path / "part") == {f"d3/{k}": v for k, v in read_dir(src / "d3").items()}
    threads = p.cli("--log-level", "info", "restore", "files", "--to", str(tmp_path / "threads"), "--workers", "3")
    assert "worker processes" not in threads.stderr and read_dir(tmp_path / "threads") == read_dir(src)

    # unchanged: nothing copied; copies of stored content under new keys: no new content blobs
    assert p.json("run")["jobs"][0]["copied"] == 0
    for i in range(300):
        (src / "copies" / f"c{i}").parent.mkdir(exist_ok=True)
        (src / "copies" / f"c{i}").write_bytes((src / f"d{i % 7}" / f"f{i:05d}.bin").read_bytes())
    (src / "copies" / "big").write_bytes((src / "big" / "one.bin").read_bytes())
    assert p.json("run")["jobs"][0]["copied"] == 301
    added = blobs(tmp_path / "vault") - first
    assert len(added) <= 3, added  # a delta page and a root: no pack, no chunk blob
    p.cli("verify", "--deep")
    p.cli("restore", "files", "--to", str(tmp_path / "out2"))
    assert read_dir(tmp_path / "out2") == read_dir(src)


def test_few_objects_are_copied_by_threads_unless_processes_are_asked_for(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 20)
    p = project(tmp_path, src, 2)
    p.config.write_text(p.config.read_text().replace("processes = 2", ""))  # auto: too few to copy
    run = p.cli("--log-level", "info", "run", "--json")
    assert "worker processes" not in run.stderr and json.loads(run.stdout)["jobs"][0]["copied"] == 23


def test_kill_9_of_the_parent_mid_run_loses_nothing_and_leaves_no_worker(tmp_path):
    src = tmp_path / "src"
    make_tree(src, 4000, seed=2)
    p = project(tmp_path, src, 2)
    rng = random.Random(5)
    kills = 0
    for _ in range(4):
        proc = p.popen("run")
        workers: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while not workers and proc.poll() is None and time.monotonic() < deadline:  # copying has begun
            try:
                workers = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is not None:
            break  # it finished first: what it copied is checked below all the same
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers left behind after kill -9 of their parent: {alive}"
    assert kills >= 1
    p.cli("run")
    p.cli("verify", "--deep")
    p.cli("restore", "files", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == read_dir(src)
