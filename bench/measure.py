"""Run one command and report what it cost: `python measure.py TIMEOUT -- CMD...`.

Prints one JSON line on stdout: wall seconds (around the child only), exit code, the
child's peak RSS (ru_maxrss of RUSAGE_CHILDREN: the largest resident set of any process
it waited for, in KiB), and its user and system CPU seconds. The child's own stdout and
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
import time


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
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall": wall, "rc": rc, "timeout": timed_out, "maxrss_kib": ru.ru_maxrss,
                      "utime": ru.ru_utime, "stime": ru.ru_stime}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
