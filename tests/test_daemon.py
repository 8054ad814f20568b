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

import project
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
    project.SCRAPED.append(body)  # for the session's secrets scan
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


# ---------------------------------------------------------------------------------------------
# Vault metrics, reloads, stops, overlaps and JSON logs
# ---------------------------------------------------------------------------------------------

MiB = 2**20


def s3_project(tmp_path, s3_server, jobs: dict[str, str], bandwidth: str | None = None, objects: dict | None = None):
    """A project whose jobs (name -> schedule) all copy one S3 bucket; metrics on a free port."""
    import fsspec

    fs = fsspec.filesystem("s3", **s3_server.fsspec_options(), skip_instance_cache=True)
    bucket = unique("live")
    fs.mkdir(bucket)
    fill(fs, bucket, objects or {f"k/{i:03d}": os.urandom(2000) for i in range(30)})
    port = free_port()
    options = {"endpoint_url": s3_server.endpoint_url, "key": "testing", "secret": "testing"}
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": n, "source": f"s3://{bucket}/", "schedule": s, "source_options": options} for n, s in jobs.items()])
    p.write_config()
    text = p.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    if bandwidth:
        text = text.replace('key_file = "vault.key"', f'key_file = "vault.key"\nbandwidth = "{bandwidth}"')
    p.config.write_text(text)
    p.cli("init")
    return p, fs, bucket, port


def stop_daemon(p: Project, proc, timeout: float = 60) -> str:
    """SIGTERM and wait; its stderr. A daemon that does not stop in time is killed (no leftover) and fails the test."""
    proc.send_signal(signal.SIGTERM)
    try:
        return p.finish(proc, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the daemon did not stop within {timeout}s of SIGTERM") from None


def runs(port: int, job: str, result: str = "success") -> float:
    return metric(scrape(port), "replicator_job_runs_total", job=job, result=result) or 0


def content_blobs(p: Project, job: str) -> dict[str, int]:
    """blob -> stored size, read from the vault: every blob the objects of the job's snapshots use."""
    from replicator.history import History
    from replicator.stores.local import LocalStore
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    vault = Vault.open(LocalStore(p.vault_url), load_key_file(p.dir / "vault.key"))
    history = History.for_job(vault, job)
    return {ref.blob: ref.blob_size for root in history.roots() for e in history.entries(root) for ref in e.chunks}


def test_vault_size_is_exported_and_a_verify_by_the_timer_shows_without_a_run(tmp_path, s3_server):
    from replicator.vault.format import data_name

    p, fs, bucket, port = s3_project(tmp_path, s3_server, {"live": "1h"},
                                     objects={**{f"k/{i:03d}": os.urandom(2000) for i in range(30)},
                                              "big/one": os.urandom(9 * MiB)})
    proc = p.popen("daemon")
    try:
        wait_until(lambda: runs(port, "live") == 1, what="the overdue run at start")
        blobs = content_blobs(p, "live")
        on_disk = {b: (tmp_path / "vault" / data_name(b)).stat().st_size for b in blobs}
        assert on_disk == blobs and len(blobs) == 4  # three chunks of the big object, one pack of the small ones
        m = wait_until(lambda: (lambda m: m if metric(m, "replicator_vault_blobs") == len(blobs) else None)(scrape(port)),
                       what="the blobs counted after the run")
        assert metric(m, "replicator_vault_stored_bytes") == sum(on_disk.values())
        assert metric(m, "replicator_verify_last_timestamp_seconds") is None  # never verified yet
        # the weekly verify of the systemd timer (another process, no job run after it): the daemon shows it
        p.cli("verify", "--deep")
        m = wait_until(lambda: (lambda m: m if metric(m, "replicator_verify_coverage_ratio") == 1.0 else None)(scrape(port)),
                       timeout=90, what="the verify's result and coverage in the metrics")
        assert metric(m, "replicator_verify_last_success") == 1
        assert metric(m, "replicator_verify_oldest_unverified_age_seconds") < 3600
        assert runs(port, "live") == 1
    finally:
        err = stop_daemon(p, proc)
    assert proc.returncode == 0, err


def test_reload_keeps_unchanged_schedules_reschedules_changed_ones_and_forgets_removed_jobs(tmp_path, s3_server):
    p, fs, bucket, port = s3_project(tmp_path, s3_server, {"a": "1h", "b": "1h", "c": "1h"})
    proc = p.popen("daemon")
    try:
        wait_until(lambda: all(runs(port, j) == 1 for j in "abc"), what="the overdue runs at start")
        before = wait_until(lambda: (lambda m: m if all(metric(m, "replicator_job_next_run_timestamp_seconds", job=j)
                                                        for j in "abc") else None)(scrape(port)), what="next runs")
        assert metric(before, "replicator_job_last_success_timestamp_seconds", job="c")
        text = p.config.read_text()
        jobs = text.split("[[jobs]]")
        assert 'name = "b"' in jobs[2] and 'name = "c"' in jobs[3]
        jobs[2] = jobs[2].replace('schedule = "1h"', 'schedule = "2h"')
        jobs[3] = jobs[3].replace('name = "c"', 'name = "d"')  # c removed, d added (never ran: overdue)
        p.config.write_text("[[jobs]]".join(jobs))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(scrape(port), "replicator_config_reloads_total", result="success") == 1, what="reload")
        wait_until(lambda: runs(port, "d") == 1, what="the new job's overdue run")
        after = scrape(port)
        nxt = lambda m, j: metric(m, "replicator_job_next_run_timestamp_seconds", job=j)  # noqa: E731
        assert nxt(after, "a") == nxt(before, "a")  # unchanged schedule: the same next run
        assert nxt(after, "b") != nxt(before, "b") and nxt(after, "b") > nxt(after, "a") + 1800  # now 2h
        assert [k for k in after if ("job", "c") in k[1]] == []  # no series left for the removed job
        assert runs(port, "a") == runs(port, "b") == 1  # nothing rerun by the reload
    finally:
        err = stop_daemon(p, proc)
    assert proc.returncode == 0, err


def test_sigterm_drops_queued_objects_gives_up_a_large_one_and_status_shows_a_stop(tmp_path, s3_server):
    """A slow (bandwidth-limited) run of a 48 MiB object and small ones: SIGTERM once its first chunk
    is stored ends the run within a few chunks' time, not the 90 s the limit would take for the rest;
    status then shows a stop, not an error, and no next run of a daemon that is gone."""
    objects = {"big/one": os.urandom(48 * MiB), **{f"k/{i:03d}": os.urandom(2000) for i in range(30)}}
    p, fs, bucket, port = s3_project(tmp_path, s3_server, {"live": "1h"}, bandwidth="512KiB/s", objects=objects)
    data = tmp_path / "vault" / "data"
    first_chunk = lambda: any(f.stat().st_size >= 4 * MiB for f in data.rglob("*") if f.is_file() and f.name[0] != ".")  # noqa: E731
    proc = p.popen("daemon")
    try:
        wait_until(first_chunk, timeout=90, what="the first chunk of the large object in the vault")
    finally:
        err = stop_daemon(p, proc)
    assert proc.returncode == 0, err
    assert "stopped before its snapshot" in err and "run failed" not in err and "errors" not in err
    st = p.json("status")
    job = st["jobs"][0]
    assert job["stopped"] and job["last_error"] is None and job["last_success"] is None
    assert st["daemon_running"] is False and job["next_run"] is None and job["next_run_past"]
    text = p.cli("status").stdout
    assert "daemon not running" in text and "a graceful stop, not an error" in text
    assert "vault OK" in p.cli("verify").stdout
    p.config.write_text(p.config.read_text().replace('bandwidth = "512KiB/s"\n', ""))
    assert "bandwidth" not in p.config.read_text()
    resumed = p.json("run")["jobs"][0]
    assert resumed["ok"] and resumed["listed"] == 31 and resumed["copied"] >= 1  # the big one, at least
    assert "vault OK" in p.cli("verify", "--deep").stdout
    p.cli("restore", "live", "--to", str(tmp_path / "out"))
    assert (tmp_path / "out" / "big" / "one").read_bytes() == objects["big/one"]
    assert p.json("status")["jobs"][0]["stopped"] is None  # a success since


def test_overlapping_runs_are_skipped_and_counted_and_json_logs_parse(tmp_path, s3_server):
    """A run that outlasts its 1s interval (a 400 kB object at 64 KiB/s): the scheduled runs meanwhile
    are skipped and counted; with --log-format json every log line is one JSON object."""
    objects = {"big/one": os.urandom(400_000), "small": b"x"}
    p, fs, bucket, port = s3_project(tmp_path, s3_server, {"live": "1s"}, bandwidth="64KiB/s", objects=objects)
    proc = p.popen("--log-format", "json", "daemon")
    try:
        wait_until(lambda: runs(port, "live", "skipped_overlap") >= 1, timeout=60, what="a skipped overlapping run")
        assert metric(scrape(port), "replicator_job_running", job="live") == 1 or runs(port, "live") >= 1
    finally:
        err = stop_daemon(p, proc)
    assert proc.returncode == 0, err
    import json

    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # each one parses
    assert lines and all(set(d) == {"time", "level", "logger", "message"} for d in lines), lines
    assert all(re_time(d["time"]) and d["level"] in {"debug", "info", "warning", "error", "critical"} for d in lines)
    assert any(d["logger"] == "replicator.daemon" and d["message"].startswith("daemon started") for d in lines)
    assert any(d["level"] == "warning" and "skipped" in d["message"] for d in lines)
    assert lines[-1]["message"] == "daemon stopped"


def re_time(text: str) -> bool:
    import re

    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text) is not None
