"""The daemon as operators run it: scheduled runs, metrics over HTTP, SIGHUP, SIGTERM, systemd notify."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from project import Project, unique
from servers import free_port
from test_e2e_incident import fill


class NotifySocket:
    """Plays systemd's side of sd_notify: a datagram socket collecting messages."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def wait_for(self, prefix: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.drain():
                if m.startswith(prefix):
                    return m
        raise AssertionError(f"no {prefix} notification; got {self.messages}")


def scrape(port: int) -> dict:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def wait_until(fn, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon_project(tmp_path, s3_server):
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server.fsspec_options(), skip_instance_cache=True)
    bucket = unique("live")
    fs.mkdir(bucket)
    fill(fs, bucket, {f"k/{i:03d}": os.urandom(2000) for i in range(30)})
    port = free_port()
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": "live", "source": f"s3://{bucket}/", "schedule": "2s",
                       "source_options": {"endpoint_url": s3_server.endpoint_url, "key": "testing", "secret": "testing"}}])
    p.write_config()
    p.config.write_text(p.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    p.cli("init")
    return p, fs, bucket, port


def test_daemon_runs_on_schedule_serves_metrics_reloads_and_stops(tmp_path, daemon_project):
    p, fs, bucket, port = daemon_project
    notify = NotifySocket(tmp_path / "notify.sock")
    p.env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""})
    proc = p.popen("daemon")
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        notify.wait_for("STATUS=")
        m = wait_until(lambda: (lambda m: m if (metric(m, "replicator_job_runs_total", job="live", result="success") or 0) >= 2 else None)(scrape(port)),
                       what="two successful scheduled runs")
        assert metric(m, "replicator_job_last_run_success", job="live") == 1
        assert metric(m, "replicator_job_objects_copied_total", job="live") == 30
        assert metric(m, "replicator_job_live_objects", job="live") == 30
        assert metric(m, "replicator_job_last_success_timestamp_seconds", job="live") > time.time() - 60
        # /metrics and nothing else
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert e.value.code == 404
        # promtool lints a live scrape
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        lint = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=body, capture_output=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        # changes are picked up by the next scheduled run
        fs.pipe_file(f"{bucket}/k/new", b"new")
        wait_until(lambda: metric(scrape(port), "replicator_job_live_objects", job="live") == 31, what="the new object")
        # a bad config on SIGHUP is rejected; the old one keeps running
        good = p.config.read_text()
        p.config.write_text(good.replace('schedule = "2s"', 'schedule = "sometimes"'))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(scrape(port), "replicator_config_reloads_total", result="failure") == 1, what="rejected reload")
        before = metric(scrape(port), "replicator_job_runs_total", job="live", result="success")
        wait_until(lambda: metric(scrape(port), "replicator_job_runs_total", job="live", result="success") > before,
                   what="runs continuing on the old config")
        p.config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(scrape(port), "replicator_config_reloads_total", result="success") == 1, what="good reload")
        # status shows the next run and the lag
        st = p.json("status")["jobs"][0]
        assert st["next_run"] and st["lag_seconds"] is not None and st["lag_seconds"] < 60
        # a second daemon (or run) on the same state directory is refused, naming the holder
        r = p.cli("run", check=2)
        assert "in use by replicator daemon" in r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        err = p.finish(proc, 30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "vault OK" in p.cli("verify").stdout


def test_sigterm_mid_run_stops_cleanly_and_the_vault_verifies(tmp_path, daemon_project):
    p, fs, bucket, port = daemon_project
    fill(fs, bucket, {f"bulk/{i:04d}": os.urandom(30_000) for i in range(400)})
    proc = p.popen("daemon")
    try:
        wait_until(lambda: metric(scrape(port), "replicator_job_running", job="live") == 1, what="a run in progress")
    finally:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        err = p.finish(proc, 60)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 < 30
    assert "vault OK" in p.cli("verify").stdout
    resumed = p.json("run")["jobs"][0]  # the next run finishes the work; nothing is lost
    assert resumed["ok"] and resumed["listed"] == 430
    assert "vault OK" in p.cli("verify", "--deep").stdout


def test_missed_runs_after_downtime_run_once_at_start(tmp_path, daemon_project):
    p, fs, bucket, port = daemon_project
    p.config.write_text(p.config.read_text().replace('schedule = "2s"', 'schedule = "0 3 * * *"'))
    p.cli("run")  # a success just now: nothing was missed
    proc = p.popen("daemon")
    try:
        m = wait_until(lambda: scrape(port), what="metrics")
        nxt = metric(m, "replicator_job_next_run_timestamp_seconds", job="live")
        assert nxt is not None and nxt > time.time()  # just ran: not overdue, next is the next 03:00 (+jitter)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    # never succeeded before: a daemon starting now runs the job at once
    p2 = tmp_path / "second"
    p2.mkdir()
    q = Project(p2, str(p2 / "vault"), {}, jobs=p.jobs)
    q.write_config()
    port2 = free_port()
    q.config.write_text(p.config.read_text().replace(str(tmp_path / "vault"), str(p2 / "vault")).replace(
        f"listen = \"127.0.0.1:{port}\"", f"listen = \"127.0.0.1:{port2}\""))
    q.cli("init")
    proc = q.popen("daemon")
    try:
        wait_until(lambda: metric(scrape(port2), "replicator_job_runs_total", job="live", result="success") == 1,
                   what="the overdue run at start")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
