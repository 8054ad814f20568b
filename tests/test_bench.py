"""The benchmark (bench/run.py) runs end to end on a tiny data set.

Not a benchmark itself: it checks that one command generates the data, starts its servers, runs
replicator and both peers on every path, and writes results with a positive time for every
(tool, data set, path) it promises. rclone and restic are installed by the project's setup, so a
missing one fails this test; it is never skipped.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SETS = ["a", "b", "c", "d", "ea", "eb"]
PATHS = ["s3-local", "s3-s3", "local-local"]
EXPECTED = (
    [(tool, s, p) for tool in ("replicator", "rclone") for p in PATHS for s in SETS]
    + [("restic", s, "local-local") for s in SETS]  # restic cannot read an S3 source
    + [("floor", s, p) for p in PATHS for s in ("a", "b", "c", "d")]
)


@pytest.mark.slow
def test_the_benchmark_runs_every_tool_on_every_path_on_a_tiny_data_set(tmp_path):
    for binary in ("rclone", "restic"):
        assert shutil.which(binary), f"{binary} is not installed (Debian package {binary}; scripts/setup installs it)"
    out = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--scale", "tiny", "--rounds", "1",
         "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout[-6000:]}\nstderr:\n{p.stderr[-3000:]}"

    res = json.loads((out / "results.json").read_text())
    by = {(r["tool"], r["set"], r["path"]): r for r in res["results"]}
    problems = []
    for key in EXPECTED:
        r = by.get(key)
        if r is None:
            problems.append(f"{key}: no entry")
        elif r["errors"] or not (r["median_s"] or 0) > 0:
            problems.append(f"{key}: median {r['median_s']}, errors {r['errors']}")
        elif key[0] != "floor" and not (r["peak_rss_mib"] or 0) > 0:
            problems.append(f"{key}: no peak RSS")
    assert not problems, "\n".join(problems)
    assert res["missing"] == []
    for s in ("b", "c"):
        assert res["cpu_floor"][s]["cpu_s_per_gib"] > 0
    # ratios are there where both sides ran
    assert by[("replicator", "a", "s3-s3")]["ratio"]["rclone"] > 0
    assert by[("replicator", "a", "local-local")]["ratio"]["restic"] > 0
    assert by[("replicator", "a", "s3-s3")]["ratio"]["floor"] > 0
    assert by[("replicator", "c", "local-local")]["ratio"]["cpu_floor"] > 0

    assert "median s" in p.stdout and (out / "results.txt").exists()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "results.png").stat().st_size > 0
    else:
        assert "no plot written" in p.stdout
    # the scratch directory (data, vaults, restores) and the servers are gone
    assert not list(tmp_path.glob("replicator-bench-*"))
