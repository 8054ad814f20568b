"""The Dask engine (issue 9): copies on a distributed.LocalCluster of worker processes, the
coordinator alone writing manifests; a worker killed mid-run; a scheduler that is not there."""

from __future__ import annotations

import os
import signal
import time

import pytest

from project import read_dir
from test_e2e_incident import fill, make_project

distributed = pytest.importorskip("distributed", reason="the Dask engine needs `distributed` (test extra)")

OBJECTS = {f"p{i % 7}/obj-{i:04d}.bin": os.urandom(2000 + 97 * i) for i in range(240)}
OBJECTS["big/nine-mib.bin"] = os.urandom(9 * 2**20 + 5)


@pytest.fixture(scope="module")
def cluster():
    os.environ["SRC_SECRET"] = "testing"  # workers resolve the config's env: secrets themselves
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
                                  worker_class=distributed.Nanny) as c:
        yield c


def dask_project(tmp_path, s3_server, cluster, batch=8):
    tmp_path.mkdir(parents=True, exist_ok=True)
    p, fs, bucket = make_project(tmp_path, s3_server)
    p.write_config()
    text = p.config.read_text()
    p.config.write_text(text.replace("[vault]", f'[engine]\nkind = "dask"\nscheduler = "{cluster.scheduler_address}"\n'
                                                f"batch = {batch}\n\n[vault]", 1))
    fill(fs, bucket, OBJECTS)
    p.cli("init")
    return p, fs, bucket


def test_dask_engine_copies_what_the_local_engine_copies(tmp_path, s3_server, cluster):
    p, fs, bucket = dask_project(tmp_path / "dask", s3_server, cluster)
    with distributed.Client(cluster.scheduler_address) as client:
        before = sum(client.run(_tasks_done).values())
        run = p.json("run")["jobs"][0]
        ran = sum(client.run(_tasks_done).values()) - before
    assert run["copied"] == len(OBJECTS) and not run["errors"]
    assert ran >= len(OBJECTS) // 8  # the copies ran on the workers, a batch per task
    assert p.json("run")["jobs"][0]["copied"] == 0  # the coordinator's catalogue knows it all
    assert p.json("verify", "--deep")["ok"]
    p.cli("restore", "prod", "--to", str(tmp_path / "out-dask"))
    # The same data through the local engine restores to the same bytes.
    (tmp_path / "local").mkdir()
    local, fs2, bucket2 = make_project(tmp_path / "local", s3_server)
    fill(fs2, bucket2, OBJECTS)
    local.cli("init")
    local.cli("run")
    local.cli("restore", "prod", "--to", str(tmp_path / "out-local"))
    assert read_dir(tmp_path / "out-dask") == read_dir(tmp_path / "out-local") == OBJECTS


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, s3_server, cluster):
    p, fs, bucket = dask_project(tmp_path, s3_server, cluster, batch=4)
    with distributed.Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
        proc = p.popen("run", "--json")
        base = sum(client.run(_tasks_done).values())
        deadline = time.monotonic() + 60
        while sum(client.run(_tasks_done).values()) - base < 3:  # copying has begun on the workers
            assert time.monotonic() < deadline and proc.poll() is None, "the run ended before a worker could be killed"
            time.sleep(0.05)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        err = p.finish(proc, timeout=240)
    assert proc.returncode == 0, err
    assert p.json("verify", "--deep")["ok"]
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert read_dir(tmp_path / "out") == OBJECTS
    cluster.wait_for_workers(2, timeout=60)  # the nanny brought it back for the next test


def test_an_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    p.config.write_text(p.config.read_text().replace(
        "[vault]", '[engine]\nkind = "dask"\nscheduler = "tcp://127.0.0.1:9"\nconnect_timeout = "2s"\n\n[vault]', 1))
    fill(fs, bucket, {"a": b"a"})
    p.cli("init")
    r = p.cli("run", check=2, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in lines[0], r.stderr
    checked = p.cli("check-config", "--no-probe", check=1, timeout=120).stdout
    assert "FAIL engine dask tcp://127.0.0.1:9: cannot reach the Dask scheduler" in checked, checked


def test_check_config_reaches_the_scheduler(tmp_path, s3_server, cluster):
    p, fs, bucket = dask_project(tmp_path, s3_server, cluster)
    out = p.cli("check-config", "--no-probe").stdout
    assert f"ok   engine dask {cluster.scheduler_address}: reachable; 2 workers, 4 threads" in out, out


def _tasks_done(dask_worker=None) -> int:
    """On a worker: how many copy tasks it has finished (a counter in the worker's process)."""
    from replicator import batch_copy

    return batch_copy.TASKS_DONE
