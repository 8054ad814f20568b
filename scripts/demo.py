"""The demo behind the README's first command: a local S3 server's bucket replicated
into a local vault, attacked, verified, and restored as it was before the attack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import servers  # noqa: E402  (tests/servers.py starts the real local servers)

OUT = Path(os.environ.get("DEMO_DIR", "demo-out")).resolve()


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def cli(*args: str, ok=(0,)) -> str:
    cmd = [sys.executable, "-m", "replicator", "--config", str(OUT / "config.toml"), *args]
    print("$ replicator " + " ".join(args), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "SRC_SECRET": "testing"})
    sys.stdout.write(p.stdout)
    sys.stdout.write(p.stderr)
    if p.returncode not in ok:
        raise SystemExit(f"demo: `replicator {' '.join(args)}` exited {p.returncode}")
    return p.stdout


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    step("starting a local S3 server (moto) as the source")
    s3 = servers.start_s3()
    try:
        import fsspec

        fs = fsspec.filesystem("s3", **s3.fsspec_options())
        fs.mkdir("prod-assets")
        sample = {f"invoices/2026/{i:03d}.json": f'{{"invoice": {i}, "total": {i * 17.5}}}\n'.encode() * 20 for i in range(200)}
        sample.update({"images/logo.png": os.urandom(300_000), "backups/db.dump": os.urandom(6 * 2**20),
                       "docs/read me.txt": "unicode ✓ and spaces\n".encode(), "empty": b""})
        for k, v in sample.items():
            fs.pipe_file(f"prod-assets/{k}", v)
        print(f"bucket prod-assets: {len(sample)} objects, {sum(map(len, sample.values())) / 2**20:.1f} MiB")
        (OUT / "config.toml").write_text(f"""\
[vault]
url = "{OUT / 'vault'}"          # a NAS path here; gs://, az://, sftp://, s3:// work the same
key_file = "vault.key"

[state]
dir = "state"

[[jobs]]
name = "prod-assets"
source = "s3://prod-assets/"
schedule = "15m"
source_options = {{ endpoint_url = "{s3.endpoint_url}", key = "testing", secret = "env:SRC_SECRET" }}
""")
        step("create the vault and its key")
        cli("init")
        step("first replication pass")
        cli("run")
        step("a day of normal changes, then a second pass: only changes are copied")
        fs.pipe_file("prod-assets/invoices/2026/201.json", b'{"invoice": 201}\n')
        fs.rm_file("prod-assets/invoices/2026/000.json")
        time.sleep(0.01)
        cli("run")
        step("the attack: every object deleted or overwritten by an intruder, then a pass")
        for i, k in enumerate(sorted(sample)):
            if i % 2:
                fs.rm_file(f"prod-assets/{k}")
            elif fs.exists(f"prod-assets/{k}"):
                fs.pipe_file(f"prod-assets/{k}", b"PAY 10 BTC TO GET YOUR DATA BACK")
        cli("run", ok=(1,))  # the breaker trips: the garbage is stored, but "latest" keeps the real data
        step("the operator sees it (status, metrics, the webhook if configured)")
        cli("status")
        step("the vault keeps every point in time")
        cli("snapshots")
        step("prove the vault complete and intact (downloads and decrypts every blob)")
        cli("verify", "--deep")
        step("restore the bucket as it was before the attack")
        import json

        snaps = json.loads(subprocess.run([sys.executable, "-m", "replicator", "--config", str(OUT / "config.toml"),
                                           "snapshots", "--json"], capture_output=True, text=True).stdout)["snapshots"]
        before = snaps[-2]["time"]  # the latest is the same, held by the breaker; --at reaches any point
        cli("restore", "prod-assets", "--to", str(OUT / "restored"), "--at", before)
        expected = dict(sample)
        expected["invoices/2026/201.json"] = b'{"invoice": 201}\n'
        del expected["invoices/2026/000.json"]
        got = {p.relative_to(OUT / "restored").as_posix(): p.read_bytes() for p in (OUT / "restored").rglob("*") if p.is_file()}
        same = got == expected
        print(f"\nrestored {len(got)} objects into {OUT / 'restored'}: "
              + ("every key and byte identical to the bucket before the attack" if same else "MISMATCH"))
        print(f"vault: {OUT / 'vault'} (opaque names, encrypted); key: {OUT / 'vault.key'}; config: {OUT / 'config.toml'}")
        return 0 if same else 1
    finally:
        s3.stop()


if __name__ == "__main__":
    raise SystemExit(main())
