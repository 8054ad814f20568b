"""One writer per vault (issue 8): a second `run` from another state directory is refused while a
run holds the vault's lease, and runs once the holder is done; a killed holder's lease is passed
over at once from its own state directory and lapses after its TTL for others."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
from project import Project

from replicator.vault.leases import VaultLease, _stamp

TTL = 3  # seconds: REPLICATOR_LEASE_SECONDS for these CLI runs


def two_hosts(tmp_path, files: int = 16, bandwidth: str = "2MiB/s", ttl: float = TTL) -> tuple[Project, Project]:
    """Two state directories (two "hosts") writing one local vault, with the same key."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(files):
        (src / f"f{i:02d}.bin").write_bytes(os.urandom(512 * 1024))
    hosts = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        p = Project(d, str(tmp_path / "vault"), {}, jobs=[{"name": "j", "source": str(src)}],
                    env={"REPLICATOR_LEASE_SECONDS": str(ttl)})
        p.write_config()
        p.config.write_text(p.config.read_text().replace("[state]", f'bandwidth = "{bandwidth}"\n\n[state]', 1))
        hosts.append(p)
    a, b = hosts
    a.cli("init")
    shutil.copy(a.dir / "vault.key", b.dir / "vault.key")
    return a, b


def wait_for_lease(tmp_path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not list((tmp_path / "vault").glob("leases/*/*/0*")):
        assert time.time() < deadline, "no lease was written"
        time.sleep(0.05)


def test_a_second_writer_from_another_state_directory_is_refused_naming_the_holder(tmp_path):
    a, b = two_hosts(tmp_path, files=48, bandwidth="4MiB/s")  # 24 MiB at 4 MiB/s: the holder runs for 6 s
    running = a.popen("run")
    wait_for_lease(tmp_path)
    r = b.cli("run", check=2)
    assert "is in use by replicator run (pid" in r.stderr and "another state directory" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    b.cli("ls", "j", check=None)  # readers need no lease
    assert running.poll() is None, "the refused run disturbed the holder"
    Project.finish(running)
    assert running.returncode == 0
    assert b.json("run")["jobs"][0]["ok"]  # released: the other host takes its turn
    assert b.json("verify")["ok"]


def test_a_killed_holders_lease_is_passed_over_by_its_own_state_directory_and_lapses_for_others(tmp_path):
    a, b = two_hosts(tmp_path, ttl=6)  # long enough for b's first try to fall inside it on a slow machine
    running = a.popen("run")
    wait_for_lease(tmp_path)
    os.kill(running.pid, signal.SIGKILL)
    running.wait()
    killed = time.time()
    r = b.cli("run", check=2)
    assert "is in use by replicator run" in r.stderr
    assert a.json("run")["jobs"][0]["ok"]  # the same state directory: its predecessor is dead (flock)
    # The lease a's killed run held lapses TTL after its last renewal; then b runs too.
    time.sleep(max(0.0, killed + 6 + 1 - time.time()))
    assert b.json("run")["jobs"][0]["ok"]
    assert a.json("verify", "--deep")["ok"]


def test_a_held_lease_is_renewed_and_two_claims_at_once_never_both_go_ahead(tmp_path):
    """In process: renewal keeps a lease alive past its TTL; of two claims made together, never both go ahead."""
    from replicator.errors import LockedError
    from replicator.stores.local import LocalStore
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    a, _ = two_hosts(tmp_path, files=1)
    vault = Vault.open(LocalStore(str(tmp_path / "vault")), load_key_file(a.dir / "vault.key"))
    first = VaultLease(vault, "writer-1", "replicator daemon (pid 1 on host-1)", ttl=0.9)
    first.acquire()
    try:
        time.sleep(2.0)  # more than twice the TTL: only renewals keep it
        second = VaultLease(vault, "writer-2", "replicator run (pid 2 on host-2)", ttl=0.9)
        try:
            second.acquire()
            raise AssertionError("a renewed lease was not honoured")
        except LockedError as e:
            assert "replicator daemon (pid 1 on host-1)" in str(e)
    finally:
        first.release()
    second = VaultLease(vault, "writer-2", "replicator run (pid 2 on host-2)", ttl=0.9)
    second.acquire()  # released: free
    second.release()

    # Two claims at the same moment: both are written. Whichever looks first sees the other and
    # gives way; the other then sees that claim released and goes ahead. Never both.
    clock = time.time() + 10
    x = VaultLease(vault, "writer-x", "x", ttl=60, clock=lambda: clock)
    y = VaultLease(vault, "writer-y", "y", ttl=60, clock=lambda: clock)
    x.since = y.since = clock
    x._write(_stamp(clock + 60))
    y._write(_stamp(clock + 60))
    with pytest.raises(LockedError):
        x._refuse_if_held(give_way=True)
    y._refuse_if_held(give_way=True)
    with pytest.raises(LockedError, match="in use by y"):
        VaultLease(vault, "writer-z", "z", ttl=60, clock=lambda: clock).acquire()


def test_a_snapshot_lost_to_another_writer_is_discarded_and_the_next_run_adopts_the_vaults_history(tmp_path):
    """A writer that committed snapshot N locally while another stored a different snapshot N
    (a race the lease prevents, but an old replicator or a lapsed lease could still cause):
    one clear failure, then the next run continues from the vault's history."""
    import base64
    import sqlite3

    from replicator.engine import _UNWRITTEN

    a, b = two_hosts(tmp_path, files=2, bandwidth="off")
    shutil.copytree(tmp_path / "vault", tmp_path / "vault2")  # the same vault, before either run
    a.cli("run")
    b.config.write_text(b.config.read_text().replace(str(tmp_path / "vault"), str(tmp_path / "vault2")))
    b.cli("run")
    # b's snapshot 0 as if its put into the shared vault had not happened yet (a crash, or a slow put)
    sealed = next((tmp_path / "vault2" / "snapshots").rglob("0000000000")).read_bytes()
    db = sqlite3.connect(b.dir / "state" / "catalogue.db")
    with db:
        db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)",
                   (_UNWRITTEN + "j", f"0 {base64.b64encode(sealed).decode()}"))
    db.close()
    b.config.write_text(b.config.read_text().replace(str(tmp_path / "vault2"), str(tmp_path / "vault")))
    r = b.cli("run", check=2)
    assert "snapshot 0 was written by another replicator at the same time" in r.stdout + r.stderr, r.stdout + r.stderr
    second = b.json("run")["jobs"][0]
    assert second["ok"] and second["seq"] == 1
    assert b.json("verify")["ok"] and a.json("verify")["ok"]
