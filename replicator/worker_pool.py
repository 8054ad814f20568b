"""Worker processes for work one interpreter cannot do fast enough (issue 7): process_engine.py
copies, restore_processes.py restores, many small objects between local disks.

Workers are spawned, not forked (a fork would copy this process's threads' locks), and started
before any work is handed out, so a host that cannot start them (no POSIX semaphores in a
container, process creation forbidden by a sandbox) is known at once and the caller's threads
do the work instead. A worker ignores SIGINT and SIGTERM (its parent decides when to stop and
waits for the batch in hand) and exits at once when its parent is killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

from replicator.memory import reuse_large_buffers

log = logging.getLogger("replicator.processes")


AUTO_FROM = 2000  # `[engine] processes` unset: workers once a run or restore has this many objects
BATCH = 256  # objects handed to a worker at a time: four full packs of small objects


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def workers_for(asked: int | None, count: Callable[[], int]) -> int:
    """Worker processes for `count()` objects between local disks: as `[engine] processes` asks,
    else one per CPU (where there are two or more) from AUTO_FROM objects on; 0: threads do it."""
    if asked is not None:
        return asked
    n = cpus()
    return n if n >= 2 and count() >= AUTO_FROM else 0


def start_pool(n: int) -> ProcessPoolExecutor | None:
    """n started workers; None where this host cannot start them (no POSIX semaphores in a
    container, process creation forbidden by a sandbox): the caller's threads work instead."""
    pool = None
    try:
        pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=worker_start)
        for f in [pool.submit(os.getpid) for _ in range(n)]:
            f.result(timeout=120)
        return pool
    except Exception as e:
        log.warning("cannot start worker processes (%s: %s); threads do the work", type(e).__name__, e)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return None


def worker_start() -> None:
    """In a worker: large buffers reused as in the parent (memory.py). SIGINT (a terminal's Ctrl-C
    reaches the whole group) and SIGTERM (systemd's control-group stop) are for the parent, which
    stops handing out work and waits for this worker's batch. A parent that dies without closing
    the pool (kill -9) leaves the worker waiting on a queue it holds itself: it exits then."""
    reuse_large_buffers()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="parent-watch", daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # a batch half done leaves what a crash leaves: blobs nobody records yet
