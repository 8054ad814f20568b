"""A graceful stop of a run (the daemon's SIGTERM): objects not started are not started, a large
object gives up between chunks, what finished is recorded, and the vault stays one that verify
accepts. In-process against a real local directory and a real local vault, the stop set by the
source itself at its first read, so nothing depends on timing."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import run_job
from replicator.sources.objects import ObjectSource
from replicator.stores.local import LocalStore
from replicator.units import KeyFilter
from replicator.vault import keys
from replicator.vault.vault import Vault
from replicator.verify import verify

MiB = 2**20
MASTER = keys.MasterKey(os.urandom(32))


class StoppingSource(ObjectSource):
    """A local directory that sets `stop` when its first object is read, and notes each object read
    and whether the stop was set by then. Not `local`, so the engine's copy threads take every object.
    With `queued`, the first read waits (up to a minute) until another object waits in its copy
    pool's queue, so that the stop finds an object not started."""

    local = False

    def __init__(self, root: Path, stop: threading.Event, queued: bool = False):
        super().__init__(f"file://{root}", {}, KeyFilter(("**",), ()))
        self.stop, self.reads, self.lock = stop, [], threading.Lock()
        self.queued, self.saw_queued = queued, False

    def read(self, item, size):
        with self.lock:
            self.reads.append((item.key, self.stop.is_set()))
            if self.queued and not self.stop.is_set():
                self.saw_queued = wait_for_queued(threading.current_thread())
            self.stop.set()
        yield from super().read(item, size)


def wait_for_queued(worker: threading.Thread, timeout: float = 60) -> bool:
    """Whether an object came to wait in the queue of the thread pool `worker` belongs to (a
    ThreadPoolExecutor worker's arguments hold its work queue)."""
    work_queue = worker._args[1]
    deadline = time.monotonic() + timeout
    while work_queue.qsize() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return work_queue.qsize() > 0


def tree(root: Path, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)


def run(tmp_path: Path, src: Path, workers: int, stop: threading.Event | None, queued: bool = False):
    store = LocalStore(str(tmp_path / "vault"))
    vault = Vault.open(store, MASTER) if Vault.exists(store) else Vault.create(store, MASTER)
    cat = Catalogue(tmp_path / "state" / "catalogue.db")
    cat.bind(vault.vault_id)
    source = StoppingSource(src, stop, queued) if stop else ObjectSource(f"file://{src}", {}, KeyFilter(("**",), ()))
    stats = run_job(vault, cat, JobConfig(name="j", source=f"file://{src}"), source, workers=workers, stop=stop)
    pending = cat.db.execute("SELECT count(*) FROM pending WHERE job='j'").fetchone()[0]
    cat.close()
    return vault, stats, source, pending


def test_a_stop_starts_no_queued_object_and_records_the_one_that_finished(tmp_path):
    rng = random.Random(1)
    src = tmp_path / "src"
    tree(src, {f"o/{i:02d}": rng.randbytes(1000) for i in range(20)})
    vault, stats, source, pending = run(tmp_path, src, workers=1, stop=threading.Event(), queued=True)
    assert source.saw_queued  # an object waited for the one copy thread when the stop came
    assert source.reads == [("o/00", False)]  # and it was never read
    assert stats.stopped and not stats.errors and stats.seq is None
    assert stats.copied == 1 and pending == 1  # what finished is recorded, for the next run
    assert verify(vault, None, ["j"], deep=True).ok
    vault, stats, _, pending = run(tmp_path, src, workers=1, stop=None)
    assert stats.copied == 19 and stats.seq == 0 and pending == 0 and not stats.stopped
    assert verify(vault, None, ["j"], deep=True).ok


def test_a_stop_gives_up_a_large_object_between_chunks_and_records_nothing_of_it(tmp_path):
    src = tmp_path / "src"
    tree(src, {"big": random.Random(2).randbytes(9 * MiB + 5)})  # three chunks
    vault, stats, source, pending = run(tmp_path, src, workers=4, stop=threading.Event())
    assert source.reads == [("big", False)]
    assert stats.copied == 0 and pending == 0  # given up, so nothing of it is recorded
    assert stats.stopped and not stats.errors
    assert stats.stored_bytes <= 4 * MiB  # no chunk read after the stop
    assert verify(vault, None, ["j"]).ok  # chunks stored before the stop are unreferenced: harmless
    vault, stats, _, pending = run(tmp_path, src, workers=4, stop=None)
    assert stats.copied == 1 and stats.seq == 0
    assert verify(vault, None, ["j"], deep=True).ok
