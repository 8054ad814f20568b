"""Per-object and per-byte costs of the local and the Dask engines (issue 9, docs/SCALING.md).

    .venv/bin/python bench/scaling.py                 # 2,000 x 4 KiB and 16 x 8 MiB, local / dask x1 / dask x2
    .venv/bin/python bench/scaling.py --small 500 --large 4 --rounds 1

Starts a moto S3 server (the source) and a distributed.LocalCluster per worker count, runs
`replicator run` into a fresh local-directory vault per (engine, data set, round), and prints
the median wall time, objects/s, MiB/s and the derived per-object and per-byte costs.
Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import servers  # noqa: E402  (tests/servers.py: moto on a free port)

KiB, MiB = 2**10, 2**20


def upload(fs, bucket: str, n: int, size: int, prefix: str) -> None:
    fs.mkdir(bucket)
    for i in range(n):
        fs.pipe_file(f"{bucket}/{prefix}/p{i % 50:02d}/o{i:06d}", os.urandom(size))


def config(dir: Path, src, bucket: str, scheduler: str | None) -> Path:
    engine = f'[engine]\nkind = "dask"\nscheduler = "{scheduler}"\nbatch = 64\n\n' if scheduler else ""
    text = (f'{engine}[vault]\nurl = "{dir / "vault"}"\nkey_file = "{dir / "vault.key"}"\n\n'
            f'[state]\ndir = "{dir / "state"}"\n\n[[jobs]]\nname = "bench"\nsource = "s3://{bucket}/"\n'
            f'source_options = {{ endpoint_url = "{src.endpoint_url}", key = "testing", secret = "testing" }}\n')
    path = dir / "config.toml"
    path.write_text(text)
    return path


def timed_run(cfg: Path) -> tuple[float, int, int]:
    """(seconds, catalogue bytes, manifest bytes) of one `replicator run` into a new vault."""
    cli = [sys.executable, "-m", "replicator", "--config", str(cfg)]
    subprocess.run(cli + ["init"], check=True, capture_output=True)
    t0 = time.monotonic()
    r = subprocess.run(cli + ["run", "--json"], capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"run failed: {r.stderr[-2000:]}")
    catalogue = sum(f.stat().st_size for f in (cfg.parent / "state").glob("catalogue.db*"))
    return elapsed, catalogue, manifest_bytes(cfg.parent)


def manifest_bytes(dir: Path) -> int:
    """Stored bytes of the job's snapshot root and manifest pages (what a checkpoint costs)."""
    from replicator.stores.local import LocalStore
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    vault = Vault.open(LocalStore(str(dir / "vault")), load_key_file(dir / "vault.key"))
    total = 0
    for jid, seqs in vault.snapshot_seqs().items():
        for seq in seqs:
            root, _ = vault.read_snapshot(jid, seq)
            total += vault.store.stat(f"snapshots/{jid}/{seq:010d}") + sum(p.blob_size for p in root.pages)
    return total


def measure_listing(src, bucket: str, rounds: int) -> list[dict]:
    """Keys per second listed from the S3 server with 1 and 4 key ranges in parallel (engine._list's way)."""
    from concurrent.futures import ThreadPoolExecutor

    from replicator.sources.objects import ObjectSource
    from replicator.units import KeyFilter

    out = []
    for parts in (1, 4):
        times, n = [], 0
        for _ in range(rounds):
            source = ObjectSource(f"s3://{bucket}/", src.fsspec_options(), KeyFilter(("**",), ()))
            t0 = time.monotonic()
            ranges = source.key_ranges(parts)
            with ThreadPoolExecutor(len(ranges)) as pool:
                n = sum(pool.map(lambda r: sum(1 for _ in source.list_range(*r)), ranges))
            times.append(time.monotonic() - t0)
        med = statistics.median(times)
        out.append({"partitions": parts, "ranges": len(ranges), "keys": n, "median_s": med, "keys_per_s": n / med})
        print(f"listing  {parts} partition(s) ({len(ranges)} ranges): {n} keys in {med:.2f} s = {n / med:,.0f} keys/s",
              flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=2000, help="objects of 4 KiB (default 2000)")
    ap.add_argument("--large", type=int, default=16, help="objects of 8 MiB (default 16)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    args = ap.parse_args(argv)
    from distributed import LocalCluster

    import fsspec

    src = servers.start_s3()
    try:
        fs = fsspec.filesystem("s3", **src.fsspec_options(), skip_instance_cache=True)
        sets = {"small": ("bsmall", args.small, 4 * KiB), "large": ("blarge", args.large, 8 * MiB)}
        for bucket, n, size in sets.values():
            upload(fs, bucket, n, size, "d")
        engines = [("local", None)] + [(f"dask x{w}", w) for w in (1, 2)]
        results = []
        for name, n_workers in engines:
            cluster = (LocalCluster(n_workers=n_workers, threads_per_worker=4, processes=True, dashboard_address=None)
                       if n_workers else None)
            try:
                for set_name, (bucket, n, size) in sets.items():
                    times = []
                    for _ in range(args.rounds):
                        with tempfile.TemporaryDirectory(prefix="replicator-scaling-") as tmp:
                            cfg = config(Path(tmp), src, bucket, cluster.scheduler_address if cluster else None)
                            seconds, catalogue, manifests = timed_run(cfg)
                            times.append(seconds)
                    med = statistics.median(times)
                    row = {"engine": name, "set": set_name, "objects": n, "bytes": n * size, "median_s": med,
                           "objects_per_s": n / med, "mib_per_s": n * size / MiB / med,
                           "ms_per_object": 1000 * med / n, "s_per_gib": med / (n * size / 2**30), "runs": times,
                           "catalogue_bytes_per_object": catalogue / n, "manifest_bytes_per_object": manifests / n}
                    results.append(row)
                    print(f"{name:8} {set_name:6} {n:6} objects {med:7.2f} s  {row['objects_per_s']:8.1f} obj/s "
                          f"{row['mib_per_s']:7.1f} MiB/s  {row['ms_per_object']:6.2f} ms/object  catalogue "
                          f"{catalogue / n:.0f} B/object, manifest {manifests / n:.0f} B/object", flush=True)
            finally:
                if cluster:
                    cluster.close()
        listing = measure_listing(src, "bsmall", args.rounds)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scaling.json").write_text(json.dumps({"results": results, "listing": listing,
                                                           "cpus": os.cpu_count()}, indent=1))
    finally:
        src.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
