"""`replicator run` on a terminal: the progress line moves while a large object copies, not only
when an object finishes. The command runs with its stderr on a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from project import Project

MiB = 2**20


def run_on_terminal(p: Project, *args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "replicator", "--config", str(p.config), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, cwd=p.dir,
                            env={**os.environ, **p.env})
    os.close(slave)
    shown = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        shown.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(shown).decode(errors="replace")


def test_progress_counts_bytes_as_chunks_are_stored(tmp_path):
    """One 12 MiB object (three chunks) at 2 MiB/s: some six seconds in which no object finishes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * MiB))
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "files", "source": str(src)}])
    p.write_config()
    p.config.write_text(p.config.read_text().replace('key_file = "vault.key"', 'key_file = "vault.key"\nbandwidth = "2MiB/s"'))
    p.cli("init")
    rc, shown = run_on_terminal(p, "run")
    assert rc == 0, shown
    during = [float(m.group(1)) * {"B": 1, "KiB": 2**10, "MiB": MiB}[m.group(2)]
              for m in re.finditer(r"copied 0/1 objects, ([\d.]+) (B|KiB|MiB)/12\.0 MiB", shown)]
    assert during and max(during) >= 4 * MiB, shown  # at least the first chunk, before the object is done
