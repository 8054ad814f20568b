"""The breaker: a source being destroyed does not become the vault's "latest", and someone is told."""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servers import free_port
from test_daemon import metric, scrape, wait_until
from test_e2e_incident import fill, ls_keys, make_project

TEXT = {f"docs/{i:03d}.txt": (f"quarterly report {i}\n" * 400).encode() for i in range(100)}


class Receiver:
    """A local webhook endpoint that records the JSON events it is sent."""

    def __init__(self):
        events = self.events = []

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def project(tmp_path, s3_server, receiver, extra=""):
    p, fs, bucket = make_project(tmp_path, s3_server)
    p.config.write_text(p.config.read_text().replace("[[jobs]]", f'[notify]\nwebhook = "{receiver.url}"\n\n[[jobs]]')
                        + extra)
    fill(fs, bucket, TEXT)
    p.cli("init")
    p.cli("run")
    return p, fs, bucket


def test_mass_deletion_is_held_until_approved(tmp_path, s3_server, receiver):
    p, fs, bucket = project(tmp_path, s3_server, receiver)
    keys = sorted(TEXT)
    for k in keys[:90]:
        fs.rm_file(f"{bucket}/{k}")
    r = p.cli("run", check=1)
    assert "breaker tripped: 90 of 100 objects (90%) vanished" in r.stderr
    assert ls_keys(p) == keys  # "latest" still has everything
    assert p.json("snapshots")["snapshots"][-1]["held"] == 90
    assert p.json("status")["jobs"][0]["breaker"].startswith("90 of 100")
    assert [e["event"] for e in receiver.events] == ["breaker_tripped"]
    assert receiver.events[0]["job"] == "prod" and receiver.events[0]["held"] == 90

    # Later runs keep protecting the old data, and the daemon's metrics say so.
    port = free_port()
    p.config.write_text(p.config.read_text().replace('schedule = "15m"', 'schedule = "2s"')
                        + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    proc = p.popen("daemon")
    try:
        wait_until(lambda: (metric(scrape(port), "replicator_job_runs_total", job="prod", result="failure") or 0) >= 1,
                   what="the daemon's first run")
        assert metric(scrape(port), "replicator_job_breaker_tripped", job="prod") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        p.finish(proc, 30)
    assert ls_keys(p) == keys

    p.cli("approve", "prod")
    after = p.json("run")["jobs"][0]
    assert after["ok"] and after["tombstones"] == 90
    assert ls_keys(p) == keys[90:]
    assert "not tripped" in p.cli("approve", "prod").stdout
    v = p.json("verify", "--deep")
    assert v["ok"] and v["unreferenced_blobs"] == 0


def test_ransomware_rewrite_trips_and_keeps_the_readable_versions(tmp_path, s3_server, receiver):
    p, fs, bucket = project(tmp_path, s3_server, receiver)
    keys = sorted(TEXT)
    for k in keys[:50]:  # half rewritten with random bytes: "encrypted"
        fs.pipe_file(f"{bucket}/{k}", os.urandom(len(TEXT[k])))
    r = p.cli("run", check=1)
    assert "rewritten like ransomware" in r.stderr
    p.cli("restore", "prod", "--to", str(tmp_path / "out"))
    assert (tmp_path / "out" / keys[0]).read_bytes() == TEXT[keys[0]]
    # the encrypted versions were still stored (nothing is lost either way): referenced, not live
    v = p.json("verify", "--deep")
    assert v["ok"] and v["unreferenced_blobs"] == 0 and v["chunks_checked"] > len(TEXT)


def test_renaming_to_a_new_extension_trips(tmp_path, s3_server, receiver):
    p, fs, bucket = project(tmp_path, s3_server, receiver)
    for k in sorted(TEXT)[:20]:
        fs.pipe_file(f"{bucket}/{k}.locked", os.urandom(100))
        fs.rm_file(f"{bucket}/{k}")
    r = p.cli("run", check=1)
    assert "rewritten like ransomware" in r.stderr or "vanished" in r.stderr


def test_thresholds_are_configurable_and_small_changes_pass(tmp_path, s3_server, receiver):
    p, fs, bucket = project(tmp_path, s3_server, receiver, extra="\n[jobs.safety]\nmax_deleted_fraction = 0.95\n")
    for k in sorted(TEXT)[:5]:
        fs.rm_file(f"{bucket}/{k}")
    assert p.json("run")["jobs"][0]["tombstones"] == 5  # normal life
    for k in sorted(TEXT)[5:90]:
        fs.rm_file(f"{bucket}/{k}")
    assert p.json("run")["jobs"][0]["tombstones"] == 85  # 89% < 95%: allowed by this job's safety
    assert receiver.events == []


def test_failed_verify_and_failed_run_are_notified(tmp_path, s3_server, receiver):
    p, fs, bucket = project(tmp_path, s3_server, receiver)
    from test_e2e_failures import data_files

    victim = data_files(tmp_path)[-1]  # a pack of content (a damaged page would also make its entries unreadable)
    victim.write_bytes(victim.read_bytes()[:-1])
    p.cli("verify", check=1)
    assert receiver.events[-1]["event"] == "verify_failed" and receiver.events[-1]["count"] == 1
    p.config.write_text(p.config.read_text().replace(s3_server.endpoint_url, "http://127.0.0.1:9"))
    p.cli("run", check=2)
    assert receiver.events[-1]["event"] == "run_failed" and receiver.events[-1]["job"] == "prod"
    assert "testing" not in json.dumps(receiver.events)  # no secrets in events
