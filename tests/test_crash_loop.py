"""Processes that die: kill -9 at random moments, many times in a row, of `run` and of the daemon
(restarted as systemd would); and two processes that want the same state directory."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import time
import urllib.request

import pytest

import figures
import secrets_scan
from faultproxy import FaultProxy, Faults
from project import read_dir, s3_fs, unique
from servers import free_port
from test_daemon import metric, scrape, wait_until
from test_faults import s3_project, upstream
from replicator.vault.packs import PACK_RECORDS

WORKERS = 4


@pytest.fixture
def source(s3_server):
    fs = s3_fs(s3_server)
    bucket = unique("crash")
    fs.mkdir(bucket)
    return fs, bucket


class Source:
    """The source bucket and what it holds now; seeded changes between runs."""

    def __init__(self, fs, bucket: str, rng: random.Random):
        self.fs, self.bucket, self.rng = fs, bucket, rng
        self.objects: dict[str, bytes] = {}
        self.versions = 0

    def put(self, key: str) -> None:
        data = self.rng.randbytes(self.rng.randint(1, 12_000))
        self.fs.pipe_file(f"{self.bucket}/{key}", data)
        self.objects[key] = data
        self.versions += 1

    def change(self, n: int) -> None:
        """Rewrite n objects, add n//2, delete n//4: normal life, well below the breaker's thresholds."""
        keys = sorted(self.objects)
        for k in self.rng.sample(keys, n):
            self.put(k)
        for _ in range(n // 2):
            self.put(f"new/{self.versions:05d}.bin")
        for k in self.rng.sample(sorted(self.objects), n // 4):
            self.fs.rm_file(f"{self.bucket}/{k}")
            del self.objects[k]


def test_kill_9_twenty_times_in_a_row_and_every_resumed_run_loses_nothing(tmp_path, s3_server, source):
    rng = random.Random(20261129)
    src = Source(*source, rng)
    for i in range(300):
        src.put(f"obj/{i:04d}.bin")
    proxy = FaultProxy(*upstream(s3_server)).start()  # no faults: it counts every read of every version
    try:
        p = s3_project(tmp_path, src.bucket, proxy.url)
        p.cli("init")
        kills, rounds, finished = 0, 0, 0
        durations = [2.0]  # of runs left to finish: kill moments are drawn across a typical run
        t0 = time.monotonic()
        while kills < 20:
            rounds += 1
            assert rounds <= 40, "runs keep finishing before they can be killed"
            if rounds > 1:
                src.change(rng.randint(8, 24))  # every run has work to do
            started = time.monotonic()
            run = p.popen("run", "--workers", str(WORKERS))
            if rounds % 6 == 0:  # now and then a run may finish: snapshots, deltas, a head to sync
                p.finish(run)
                assert run.returncode == 0
                durations.append(time.monotonic() - started)
                finished += 1
                continue
            typical = sorted(durations)[len(durations) // 2]
            time.sleep(rng.uniform(0.05, 1.0) * typical)  # startup, listing, copying, snapshot: anywhere
            if run.poll() is None:
                run.send_signal(signal.SIGKILL)
                kills += 1
            else:
                finished += 1
            run.wait()
            assert run.returncode in (0, -signal.SIGKILL), p.finish(run)
        final = p.json("run", "--workers", str(WORKERS))["jobs"][0]
        seconds = time.monotonic() - t0
    finally:
        proxy.stop()
    assert final["ok"] and not final["warnings"]
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == src.objects
    reads, versions = proxy.object_reads()
    recopied = reads - versions  # reads of a version that had been read before
    # Small objects share packs (64 to a blob): the kills hit runs that were filling and writing packs.
    blobs = [f for f in (tmp_path / "vault" / "data").rglob("*") if f.is_file()]
    assert len(blobs) < src.versions / 4, (len(blobs), src.versions)
    # What a kill can cost: the objects in flight (at most 2 x workers are handed to the pool), those
    # waiting in the open pack (an object is recorded only once its pack is stored: at most
    # PACK_RECORDS) and those finished since the engine last recorded its copies as pending (every second).
    per_second = proxy.peak_reads_per_second()
    figures.record("crash-loop", kills=kills, runs_that_finished=finished, rounds=rounds, versions=src.versions,
                   reads=reads, distinct_versions_read=versions, recopied=recopied, per_kill=round(recopied / kills, 1),
                   workers=WORKERS, peak_reads_per_second=per_second, seconds=round(seconds, 1))
    assert recopied <= kills * (2 * WORKERS + PACK_RECORDS + per_second), (recopied, kills, per_second)


def test_the_daemon_killed_and_restarted_again_and_again_converges(tmp_path, s3_server, source):
    rng = random.Random(7)
    src = Source(*source, rng)
    for i in range(150):
        src.put(f"obj/{i:04d}.bin")
    port = free_port()
    p = s3_project(tmp_path, src.bucket, s3_server.endpoint_url)
    p.jobs[0]["schedule"] = "1s"
    p.write_config()
    p.config.write_text(p.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    p.cli("init")
    kills = 0
    for _ in range(20):  # Restart=always: a new daemon right after each kill -9
        daemon = p.popen("daemon")
        # Killed once it is up: at start-up, in its first run (due a second after start), or after it.
        wait_until(lambda: "daemon started" in daemon.stderr_path.read_text(), timeout=60, what="the daemon's start")
        time.sleep(rng.uniform(0.2, 1.6))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        kills += 1
        src.change(rng.randint(4, 10))
    daemon = p.popen("daemon")
    try:
        wait_until(lambda: (metric(scrape(port), "replicator_job_runs_total", job="prod", result="success") or 0) >= 1
                   and metric(scrape(port), "replicator_job_live_objects", job="prod") == len(src.objects),
                   timeout=60, what="a successful run with every change")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert secrets_scan.problems([(tmp_path, body, (tmp_path / "vault.key").read_text(), p.env)]) == []
    finally:
        daemon.send_signal(signal.SIGTERM)
        err = p.finish(daemon, 60)
    assert daemon.returncode == 0 and "Traceback" not in err, err
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == src.objects
    figures.record("daemon-crash-loop", kills=kills, objects=len(src.objects))


# -- one writer per state directory -------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path, s3_server, source):
    src = Source(*source, random.Random(3))
    for i in range(40):
        src.put(f"obj/{i:04d}.bin")
    proxy = FaultProxy(*upstream(s3_server), Faults(latency=0.3)).start()  # a run that takes a while
    try:
        p = s3_project(tmp_path, src.bucket, proxy.url)
        p.cli("init")
        first = p.popen("run", "--workers", "1")
        lock = tmp_path / "state" / "lock"
        wait_until(lambda: lock.exists() and f"pid {first.pid}" in lock.read_text(), timeout=30, what="the lock")
        for command in ("run", "daemon"):
            r = p.cli(command, check=2)
            assert re.fullmatch(rf"replicator: error: the state directory \S+ is in use by replicator run "
                                rf"\(pid {first.pid} on \S+\)\n", r.stderr), r.stderr
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        proxy.stop()
    # The holder is gone; its name is still in the file, but the kernel released the flock with it.
    assert f"pid {first.pid}" in lock.read_text()
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    p.config.write_text(p.config.read_text().replace(proxy.url, s3_server.endpoint_url))
    again = p.json("run")["jobs"][0]
    assert again["ok"] and again["seq"] == 0
    assert f"pid {first.pid}" not in lock.read_text()
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == src.objects

