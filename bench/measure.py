"""Run one command and report what it cost: `python measure.py TIMEOUT -- CMD...`.

Prints one JSON line on stdout: wall seconds (around the child only), exit code, the
child's peak RSS in KiB, and its user and system CPU seconds (of the child and every process
it waited for). Peak RSS is the larger of ru_maxrss (the largest resident set of any one
process waited for) and the largest sum over the child's process tree seen by sampling it
every 20 ms: a tool that works in several processes is charged for all of them at once. The child's own stdout and
stderr go to the files named by $BENCH_STDOUT / $BENCH_STDERR (default: discarded).
On timeout the child's whole process group is killed and "timeout": true is reported.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import psutil


def main() -> int:
    timeout = float(sys.argv[1])
    assert sys.argv[2] == "--", "usage: measure.py TIMEOUT -- CMD..."
    cmd = sys.argv[3:]
    out = open(os.environ.get("BENCH_STDOUT", os.devnull), "wb")
    err = open(os.environ.get("BENCH_STDERR", os.devnull), "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
    timed_out = False

    def stop(signum, _frame):  # our own end takes the child's whole group with it
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tree_peak = [0]
    done = threading.Event()
    sampler = threading.Thread(target=_sample_tree, args=(proc.pid, tree_peak, done), daemon=True)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    wall = time.monotonic() - t0
    done.set()
    sampler.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall": wall, "rc": rc, "timeout": timed_out, "maxrss_kib": max(ru.ru_maxrss, tree_peak[0]),
                      "utime": ru.ru_utime, "stime": ru.ru_stime}))
    return 0


def _sample_tree(pid: int, peak: list[int], done: threading.Event) -> None:
    """Largest sum of resident sets over the process tree under pid (KiB), sampled until done."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not done.wait(0.02):
        total = 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak[0] = max(peak[0], total // 1024)


if __name__ == "__main__":
    sys.exit(main())
