"""Memory of a huge listing (issue 7): peak RSS of replicator and rclone over the same local tree.

    python bench/listing.py --counts 100000 1000000 --workdir /tmp

For each count it creates (once, kept in WORKDIR/listing-N) a tree of N empty files in directories
of 1000, then measures with bench/measure.py:
- `replicator run --dry-run` of a job over the tree (a local vault, `init` not measured): the whole
  listing goes into the catalogue and is planned against it, nothing is copied;
- `rclone lsf -R --files-only` of the tree (a listing and nothing else);
- `rclone copy --dry-run` of the tree to an empty local directory (listing and planning, the
  closest thing to replicator's dry run).
It prints one line per (tool, count) and the growth in bytes per object between the two counts.
Empty files: what is measured is the listing, not content.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_tree(path: Path, n: int) -> None:
    done = path / ".complete"
    if done.exists():
        return
    shutil.rmtree(path, ignore_errors=True)
    for i in range(n):
        d = path / f"d{i // 1000:05d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        os.close(os.open(d / f"object-{i:08d}.bin", os.O_CREAT | os.O_WRONLY, 0o644))
    done.write_text(str(n))


def measure(cmd: list[str], timeout: float = 3600, cwd: Path | None = None) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "measure.py"), str(timeout), "--", *cmd], capture_output=True,
                         text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r.get("rc") != 0:
        raise SystemExit(f"{cmd[:3]} failed: {r}")
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workdir", default="/tmp")
    args = ap.parse_args()
    work = Path(args.workdir) / "replicator-listing-bench"
    work.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[int, dict]] = {}
    for n in args.counts:
        tree = work / f"tree-{n}"
        make_tree(tree, n)
        proj = work / f"project-{n}"
        shutil.rmtree(proj, ignore_errors=True)
        proj.mkdir()
        (proj / "config.toml").write_text(
            f'[vault]\nurl = "{proj / "vault"}"\nkey_file = "vault.key"\n\n[state]\ndir = "state"\n\n'
            f'[[jobs]]\nname = "many"\nsource = "{tree}"\n')
        py = [sys.executable, "-m", "replicator", "--config", str(proj / "config.toml")]
        subprocess.run(py + ["init"], check=True, capture_output=True, cwd=proj, env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.setdefault("replicator run --dry-run", {})[n] = measure(py + ["run", "--dry-run", "--json"], cwd=proj)
        rows.setdefault("rclone lsf -R", {})[n] = measure(["rclone", "lsf", "-R", "--files-only", str(tree)])
        empty = proj / "rclone-dst"
        empty.mkdir()
        rows.setdefault("rclone copy --dry-run", {})[n] = measure(
            ["rclone", "copy", "--dry-run", "--transfers", "8", "--checkers", "8", "-q", str(tree), str(empty)])
    print(f"{'tool':28} {'objects':>9} {'wall s':>8} {'peak RSS MiB':>13}")
    for tool, by_n in rows.items():
        for n, r in sorted(by_n.items()):
            print(f"{tool:28} {n:>9} {r['wall']:>8.1f} {r['maxrss_kib'] / 1024:>13.1f}")
    if len(args.counts) >= 2:
        a, b = sorted(args.counts)[0], sorted(args.counts)[-1]
        print(f"\ngrowth of peak RSS per object between {a} and {b} objects:")
        for tool, by_n in rows.items():
            slope = (by_n[b]["maxrss_kib"] - by_n[a]["maxrss_kib"]) * 1024 / (b - a)
            print(f"  {tool:28} {slope:8.1f} B/object")
    return 0


if __name__ == "__main__":
    sys.exit(main())
