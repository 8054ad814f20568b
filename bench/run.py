#!/usr/bin/env python3
"""Side-by-side benchmark: replicator against rclone (crypt remote) and restic, on the same data,
in the same run, with the floors they are measured against.

    .venv/bin/python bench/run.py [--rounds N] [--scale tiny|small|full] [--out bench/results]

Generates the data sets, starts two moto S3 servers (source, vault), runs every tool on every
path for N rounds, and prints a table of medians; writes OUT/results.json and OUT/results.png.
bench/README.md says what each column means and which flags each tool gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))

import servers  # noqa: E402  (tests/servers.py: moto on a free port)

KiB, MiB, GiB = 2**10, 2**20, 2**30

SCALES = {
    # a: small objects (count, min size, max size); b: medium (count, size); c: one large object;
    # timeout: per command; budget: whole run, rounds that would not fit are dropped (said so)
    "tiny": dict(a=50, b=(2, 1 * MiB), c=4 * MiB, timeout=120, budget=15 * 60),
    "small": dict(a=2000, b=(10, 8 * MiB), c=128 * MiB, timeout=600, budget=45 * 60),
    "full": dict(a=20000, b=(40, 8 * MiB), c=1 * GiB, timeout=1800, budget=180 * 60),
}
A_SIZES = (1 * KiB, 16 * KiB)

SETS = ["a", "b", "c", "d", "ea", "eb"]
PATHS = ["s3-local", "s3-s3", "local-local"]
TOOLS = ["replicator", "rclone", "restic"]
PEERS = ["rclone", "restic"]
# restic reads only local files: it has no S3 *source*. It is run where it can be, and nowhere else.
TOOL_PATHS = {"replicator": PATHS, "rclone": PATHS, "restic": ["local-local"]}
FLOOR_SETS = ["a", "b", "c", "d"]  # restore has no floor measured here
CPU_SETS = ["b", "c"]

RCLONE_TRANSFERS = 8
RCLONE_CHECKERS = 8
RESTIC_PASSWORD = "bench-password-not-secret"
RCLONE_PASSWORD = "bench-password-not-secret"


def expected_entries() -> list[tuple[str, str, str]]:
    """Every (tool, set, path) the results must hold, floors included."""
    out = [(t, s, p) for t in TOOLS for p in TOOL_PATHS[t] for s in SETS]
    out += [("floor", s, p) for p in PATHS for s in FLOOR_SETS]
    return out


# -- small helpers --------------------------------------------------------------------------------

T0 = time.monotonic()


def say(msg: str) -> None:
    el = time.monotonic() - T0
    print(f"[{int(el) // 60:02d}:{int(el) % 60:02d}] {msg}", flush=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def toml_str(s: str) -> str:
    return json.dumps(s)


def toml_inline(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {toml_str(str(v))}" for k, v in d.items()) + " }"


def tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def source_digest() -> str:
    """sha256 over replicator/**/*.py: which code was measured, even in an uncommitted tree."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted((ROOT / "replicator").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def walk_sizes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath, f)
            out[p.relative_to(root).as_posix()] = p.stat().st_size
    return out


class Failed(Exception):
    pass


# -- the benchmark --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.scale = SCALES[args.scale]
        self.timeout = args.timeout or self.scale["timeout"]
        self.out = Path(args.out).resolve()
        self.work = Path(tempfile.mkdtemp(prefix="replicator-bench-", dir=args.workdir))
        self.data = self.work / "data"
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True)
        self.trash = self.work / "set-aside"  # outputs of finished commands, deleted only at the end
        self.trash.mkdir()
        self.src = self.vsrv = None  # moto servers: source, vault
        self.runs: dict[tuple[str, str, str], list[dict]] = {}
        self.cpu_floor: dict[str, list[dict]] = {s: [] for s in CPU_SETS}
        self.sets: dict[str, dict] = {}
        self.expected: dict[str, dict[str, int]] = {}  # group -> key -> size
        self.floor_tuning: dict = {}
        self._floor_cache: dict = {}
        self.source_sha = source_digest()  # the code measured (the tree may be uncommitted)
        self.load_start = list(os.getloadavg())  # other work on the machine makes every figure noisier
        self.notes: list[str] = []
        self.n_cmd = 0
        self.tools = [t for t in TOOLS if t in args.tools]
        self.paths = [p for p in PATHS if p in args.paths]
        self.groups = [g for g in ("a", "b", "c") if g in args.groups]
        self.transfers = args.rclone_transfers
        self.checkers = args.rclone_checkers
        self.rclone_extra = args.rclone_flag or []
        self.fast_list = not args.rclone_no_fast_list
        self.base_env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1",
                         "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    # ---- running one command ----

    def measure(self, cmd: list[str], label: str, env: dict | None = None, cwd: Path | None = None) -> dict:
        """Run cmd under bench/measure.py; its wall, rc, peak RSS, CPU; stdout/stderr kept in logs."""
        self.n_cmd += 1
        stem = self.logs / f"{self.n_cmd:05d}-{label.replace('/', '_').replace(' ', '_')}"
        env = {**(env or self.base_env), "BENCH_STDOUT": f"{stem}.out", "BENCH_STDERR": f"{stem}.err"}
        wrapper = [sys.executable, str(BENCH / "measure.py"), str(self.timeout), "--", *cmd]
        proc = subprocess.Popen(wrapper, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=cwd or self.work)
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout + 60)
        except BaseException as e:  # interrupted or stuck: measure.py takes its child's process group down
            proc.terminate()
            proc.wait(timeout=30)
            if isinstance(e, subprocess.TimeoutExpired):
                raise Failed(f"{label}: measure.py did not return within {self.timeout + 60:.0f}s") from None
            raise
        if proc.returncode != 0:
            raise Failed(f"{label}: measure.py failed: {stderr[-2000:]}")
        m = json.loads(stdout.strip().splitlines()[-1])
        m["stdout"] = Path(f"{stem}.out").read_text(errors="replace")
        m["stderr_path"] = f"{stem}.err"
        m["cmd"] = cmd
        if m["timeout"]:
            raise Failed(f"{label}: timed out after {self.timeout:.0f}s")
        if m["rc"] != 0:
            err = Path(f"{stem}.err").read_text(errors="replace")[-1500:]
            raise Failed(f"{label}: exit {m['rc']}: {err.strip()}")
        return m

    def record(self, tool: str, st: str, path: str, rnd: int, m: dict | None, error: str | None = None,
               extra: dict | None = None) -> None:
        run = {"round": rnd, "ok": error is None, "error": error}
        if m is not None:
            run.update(wall_s=m["wall"], maxrss_kib=m["maxrss_kib"], cpu_s=m["utime"] + m["stime"],
                       user_s=m["utime"], sys_s=m["stime"], cmd=" ".join(m["cmd"]))
        if extra:
            run.update(extra)
        self.runs.setdefault((tool, st, path), []).append(run)
        if error:
            say(f"  {tool:10s} {st:2s} {path:11s} FAILED: {error.splitlines()[0][:300]}")
            return
        n, b = self.sets[st]["objects"], self.sets[st]["bytes"]
        secs = run.get("floor_s", run.get("wall_s"))
        rss = f"{m['maxrss_kib'] / 1024:6.0f} MiB RSS" if m else ""
        say(f"  {tool:10s} {st:2s} {path:11s} {secs:8.2f} s  {n / secs:9.0f} obj/s  {b / MiB / secs:8.1f} MiB/s  {rss}")

    def attempt(self, tool: str, st: str, path: str, rnd: int, fn) -> bool:
        try:
            m, extra = fn()
        except Failed as e:
            self.record(tool, st, path, rnd, None, str(e))
            return False
        self.record(tool, st, path, rnd, m, None, extra)
        return True

    # ---- data ----

    def generate(self) -> None:
        sc = self.scale
        rng = random.Random(20261129)
        say(f"generating data under {self.data} (scale {self.args.scale})")
        files: dict[str, dict[str, int]] = {"a": {}, "b": {}, "c": {}}
        for i in range(sc["a"]):
            key = f"p{i % 100:02d}/obj-{i:06d}.bin"
            files["a"][key] = rng.randint(*A_SIZES)
        nb, sb = sc["b"]
        for i in range(nb):
            files["b"][f"medium-{i:03d}.bin"] = sb
        files["c"]["large.bin"] = sc["c"]
        for grp, objs in files.items():
            if grp not in self.groups:
                continue
            for key, size in objs.items():
                p = self.data / grp / key
                p.parent.mkdir(parents=True, exist_ok=True)
                with open(p, "wb") as f:  # incompressible: neither compression nor dedup helps anyone
                    left = size
                    while left:
                        n = min(left, 16 * MiB)
                        f.write(rng.randbytes(n))
                        left -= n
        self.expected = files
        for grp in ("a", "b", "c"):
            self.sets[grp] = {"objects": len(files[grp]), "bytes": sum(files[grp].values())}
        self.sets["d"] = dict(self.sets["a"])
        self.sets["ea"] = dict(self.sets["a"])
        self.sets["eb"] = dict(self.sets["b"])
        a, b, c = self.sets["a"], self.sets["b"], self.sets["c"]
        self.sets["a"]["desc"] = f"{a['objects']} objects of 1-16 KiB ({human(a['bytes'])})"
        self.sets["b"]["desc"] = f"{b['objects']} objects of {human(sb)}"
        self.sets["c"]["desc"] = f"one object of {human(c['bytes'])}"
        self.sets["d"]["desc"] = "no-op rerun over (a): nothing changed"
        self.sets["ea"]["desc"] = "restore of (a) to a local directory"
        self.sets["eb"]["desc"] = "restore of (b) to a local directory"

    def upload_sources(self) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=self.src.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", config=Config(max_pool_connections=32))
        for grp in ("a", "b", "c"):
            if grp not in self.groups:
                continue
            t = time.monotonic()
            bucket = f"src-{grp}"
            s3.create_bucket(Bucket=bucket)
            cfg = TransferConfig(multipart_threshold=64 * MiB, multipart_chunksize=64 * MiB, max_concurrency=4)

            def put(key: str) -> None:
                s3.upload_file(str(self.data / grp / key), bucket, key, Config=cfg)

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(put, self.expected[grp]))
            say(f"uploaded set {grp} to the source server in {time.monotonic() - t:.1f}s")

    # ---- peers' configuration ----

    def write_rclone_config(self) -> None:
        obscured = subprocess.run(["rclone", "obscure", RCLONE_PASSWORD], capture_output=True, text=True,
                                  check=True).stdout.strip()
        self.rclone_conf = self.work / "rclone.conf"
        s3 = "type = s3\nprovider = Other\naccess_key_id = testing\nsecret_access_key = testing\n" \
             "region = us-east-1\nforce_path_style = true\n"
        conf = f"[crypt-local]\ntype = crypt\nremote = {self.work / 'rclone-vault'}\npassword = {obscured}\n\n"
        if self.src:
            conf += f"[src]\n{s3}endpoint = {self.src.endpoint_url}\n\n"
        if self.vsrv:
            conf += (f"[vs3]\n{s3}endpoint = {self.vsrv.endpoint_url}\n\n"
                     f"[crypt-s3]\ntype = crypt\nremote = vs3:rclone-vault\npassword = {obscured}\n\n")
        self.rclone_conf.write_text(conf)
        self.rclone_conf.chmod(0o600)

    def rclone(self, *args: str) -> list[str]:
        return ["env", "-u", "AWS_CA_BUNDLE", "rclone", "--config", str(self.rclone_conf), *args]

    def rclone_flags(self, path: str, noop: bool = False) -> list[str]:
        f = ["--transfers", str(self.transfers), "--checkers", str(self.checkers)]
        if path.startswith("s3") and self.fast_list:
            f += ["--fast-list"]
        if noop:
            f += ["--size-only"]
        return f + self.rclone_extra

    # ---- source, vault and checks ----

    def source(self, path: str, grp: str) -> tuple[str, dict]:
        if path.startswith("s3"):
            return f"s3://src-{grp}", self.src.fsspec_options()
        return f"file://{self.data / grp}", {}

    def vault_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.vsrv.endpoint_url, aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=name)

    def vault_count(self, bucket: str) -> int:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.vsrv.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))

    def check_restore(self, out: Path, grp: str) -> None:
        """The restored tree holds exactly the set's keys and sizes, and sampled contents match."""
        src = self.data / grp
        nested = out / str(src).lstrip("/")  # restic restores under the absolute path it backed up
        root = nested if nested.is_dir() else out
        got = walk_sizes(root)
        want = self.expected[grp]
        if got != want:
            missing = sorted(set(want) - set(got))[:3]
            extra = sorted(set(got) - set(want))[:3]
            raise Failed(f"restore of {grp}: {len(got)} files, wanted {len(want)}; missing {missing}, extra {extra}")
        for key in random.Random(1).sample(sorted(want), min(10, len(want))):
            if (root / key).read_bytes() != (src / key).read_bytes():
                raise Failed(f"restore of {grp}: {key} differs from the source")

    @staticmethod
    def warm(root: Path) -> None:
        """Read a local vault (or repository) once before a timed restore from it: every tool then
        restores from the page cache, whether or not it kept its own writes there (replicator drops
        its vault blobs' pages once they are on disk; see the README's fairness notes)."""
        for dirpath, _, files in os.walk(root):
            for name in files:
                with open(os.path.join(dirpath, name), "rb") as f:
                    while f.read(2**20):
                        pass

    def set_aside(self, path: Path) -> None:
        """Move a finished command's output out of the way; deleted only when the benchmark ends.
        Deleting tens of thousands of files would make the next tool pay: ext4 without a journal,
        as here, skips inodes freed in the last minutes when it allocates new ones (README)."""
        if path.exists():
            path.rename(self.trash / f"{len(list(self.trash.iterdir()))}-{path.name}")

    # Each tool gets one fresh vault per path and round; the data sets are separate jobs / folders /
    # backups in it, copied in the order a, (d), (ea), b, (eb), c. The vault is set aside afterwards.

    def _follow_ups(self, grp: str) -> list[str]:
        return {"a": ["d", "ea"], "b": ["eb"]}.get(grp, [])

    def _fail_all(self, tool: str, path: str, rnd: int, error: str) -> None:
        for grp in self.groups:
            for st in [grp] + self._follow_ups(grp):
                self.record(tool, st, path, rnd, None, error)

    # ---- replicator ----

    def replicator_round(self, path: str, rnd: int) -> None:
        d = self.work / f"replicator-{path}-r{rnd}"
        d.mkdir()
        if path.endswith("-s3"):
            vault_url, vault_opts = f"s3://replicator-r{rnd}/vault", self.vsrv.fsspec_options()
        else:
            vault_url, vault_opts = str(d / "vault"), {}
        lines = ["[vault]", f"url = {toml_str(vault_url)}", 'key_file = "vault.key"']
        if vault_opts:
            lines.append(f"options = {toml_inline(vault_opts)}")
        lines += ["", "[state]", 'dir = "state"', ""]
        for grp in self.groups:
            source, source_opts = self.source(path, grp)
            lines += ["[[jobs]]", f"name = {toml_str(grp)}", f"source = {toml_str(source)}"]
            if source_opts:
                lines.append(f"source_options = {toml_inline(source_opts)}")
            lines.append("")
        (d / "config.toml").write_text("\n".join(lines))
        rep = [sys.executable, "-m", "replicator", "--config", str(d / "config.toml")]
        label = f"replicator-{path}-r{rnd}"
        try:
            try:
                self.measure(rep + ["init"], f"{label}-init", cwd=d)
            except Failed as e:
                self._fail_all("replicator", path, rnd, str(e))
                return
            for grp in self.groups:
                def run(st: str, want_copied: int, grp=grp):
                    def fn():
                        m = self.measure(rep + ["run", "--job", grp, "--json"], f"{label}-{st}", cwd=d)
                        job = json.loads(m["stdout"])["jobs"][0]
                        if job.get("copied") != want_copied or not job.get("ok"):
                            raise Failed(f"{label}-{st}: copied {job.get('copied')}, wanted {want_copied}: "
                                         f"{str(job)[:500]}")
                        return m, None
                    return fn

                def restore(st: str, grp=grp):
                    def fn():
                        out = d / f"restore-{st}"
                        self.warm(d / "vault")
                        m = self.measure(rep + ["restore", grp, "--to", str(out)], f"{label}-{st}", cwd=d)
                        self.check_restore(out, grp)
                        self.set_aside(out)
                        return m, None
                    return fn

                if not self.attempt("replicator", grp, path, rnd, run(grp, self.sets[grp]["objects"])):
                    continue
                if grp == "a":
                    self.attempt("replicator", "d", path, rnd, run("d", 0))
                if grp in ("a", "b"):
                    self.attempt("replicator", "e" + grp, path, rnd, restore("e" + grp))
        finally:
            self.set_aside(d)

    # ---- rclone ----

    def rclone_round(self, path: str, rnd: int) -> None:
        s3 = path.endswith("-s3")
        if s3:
            self.vault_bucket("rclone-vault")
        root = f"{'crypt-s3' if s3 else 'crypt-local'}:{path}-r{rnd}"
        label = f"rclone-{path}-r{rnd}"
        stored_want = 0

        def stored() -> int:
            if s3:
                return self.vault_count("rclone-vault")
            return sum(len(f) for _, _, f in os.walk(self.work / "rclone-vault"))

        try:
            for grp in self.groups:
                dst = f"{root}/{grp}"
                src = f"src:src-{grp}" if path.startswith("s3") else str(self.data / grp)
                stored_want += self.sets[grp]["objects"]

                def copy(st: str, noop: bool, src=src, dst=dst, want=stored_want):
                    def fn():
                        m = self.measure(self.rclone("copy", src, dst, *self.rclone_flags(path, noop)),
                                         f"{label}-{st}")
                        if stored() != want:
                            raise Failed(f"{label}-{st}: the crypt remote holds {stored()} objects, wanted {want}")
                        return m, None
                    return fn

                def restore(st: str, grp=grp, dst=dst):
                    def fn():
                        out = self.work / f"rclone-restore-{st}"
                        self.warm(self.work / "rclone-vault")
                        m = self.measure(self.rclone("copy", dst, str(out), *self.rclone_flags(path)),
                                         f"{label}-{st}")
                        self.check_restore(out, grp)
                        self.set_aside(out)
                        return m, None
                    return fn

                if not self.attempt("rclone", grp, path, rnd, copy(grp, False)):
                    stored_want = stored()
                    continue
                if grp == "a":
                    self.attempt("rclone", "d", path, rnd, copy("d", True))
                if grp in ("a", "b"):
                    self.attempt("rclone", "e" + grp, path, rnd, restore("e" + grp))
        finally:
            self.set_aside(self.work / "rclone-vault")

    # ---- restic ----

    def restic_round(self, path: str, rnd: int) -> None:
        assert path == "local-local"
        d = self.work / f"restic-r{rnd}"
        d.mkdir()
        env = {**self.base_env, "RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_CACHE_DIR": str(d / "cache")}
        repo = ["restic", "-r", str(d / "repo")]
        label = f"restic-{path}-r{rnd}"
        try:
            try:
                self.measure(repo + ["init"], f"{label}-init", env=env)
            except Failed as e:
                self._fail_all("restic", path, rnd, str(e))
                return
            for grp in self.groups:
                src = str(self.data / grp)

                def backup(st: str, src=src):
                    def fn():
                        return self.measure(repo + ["backup", "--quiet", "--host", "bench", src],
                                            f"{label}-{st}", env=env), None
                    return fn

                def restore(st: str, grp=grp, src=src):
                    def fn():
                        out = d / f"restore-{st}"
                        self.warm(d / "repo")
                        m = self.measure(repo + ["restore", "latest", "--path", src, "--quiet", "--target", str(out)],
                                         f"{label}-{st}", env=env)
                        self.check_restore(out, grp)
                        self.set_aside(out)
                        return m, None
                    return fn

                if not self.attempt("restic", grp, path, rnd, backup(grp)):
                    continue
                if grp == "a":
                    self.attempt("restic", "d", path, rnd, backup("d"))
                if grp in ("a", "b"):
                    self.attempt("restic", "e" + grp, path, rnd, restore("e" + grp))
        finally:
            self.set_aside(d)

    # ---- floors ----

    def floor_cmd(self, *args: str) -> list[str]:
        return [sys.executable, str(BENCH / "floor.py"), *args]

    def floor_run(self, args: list[str], label: str) -> tuple[dict, dict]:
        m = self.measure(self.floor_cmd(*args), label)
        return m, json.loads(m["stdout"].strip().splitlines()[-1])

    def tune_floor(self) -> None:
        """Pick the GET client's concurrency: the fastest of a few, on up to 600 objects of set (a)."""
        self.floor_workers = 16
        if not any(p.startswith("s3") for p in self.paths) or "a" not in self.groups:
            return
        limit = min(self.sets["a"]["objects"], 600)
        if limit < 200:
            self.floor_tuning = {"note": f"not tuned on {limit} objects (too few to tell); 16 threads"}
            return
        tried = {}
        for w in (4, 8, 16, 32):
            try:
                _, r = self.floor_run(["get", "--endpoint", self.src.endpoint_url, "--bucket", "src-a",
                                       "--workers", str(w), "--limit", str(limit)], f"floor-tune-w{w}")
            except Failed as e:
                say(f"floor tuning with {w} threads failed: {e}")
                continue
            tried[w] = limit / r["seconds"]
        if tried:
            self.floor_workers = max(tried, key=tried.get)
        self.floor_tuning = {"objects": limit, "gets_per_s_by_workers": tried, "chosen_workers": self.floor_workers}
        say("floor GET client: " + ", ".join(f"{w} threads {v:.0f} GET/s" for w, v in tried.items())
            + f" -> {self.floor_workers}")

    def floors(self, path: str, rnd: int) -> None:
        """The source's own rate for (a), (b), (c), and its listing for (d). Both S3 paths read the same
        source server: it is measured once per round and the one measurement serves both."""
        s3 = path.startswith("s3")
        cached = self._floor_cache.get(("s3", rnd)) if s3 else None
        if cached:
            for st, m, extra in cached:
                self.record("floor", st, path, rnd, m, None, extra)
            return
        done = []
        for grp in self.groups:
            if s3:
                parts = "0" if grp == "a" else f"0,{8 * MiB}"  # whole-object GETs, or ranged GETs of 8 MiB
                args = ["get", "--endpoint", self.src.endpoint_url, "--bucket", f"src-{grp}",
                        "--workers", str(self.floor_workers), "--part-size", parts]
            else:
                args = ["read", "--dir", str(self.data / grp), "--workers", "8"]
            try:
                m, r = self.floor_run(args, f"floor-{path}-{grp}-r{rnd}")
            except Failed as e:
                self.record("floor", grp, path, rnd, None, str(e))
                if grp == "a":
                    self.record("floor", "d", path, rnd, None, str(e))
                continue
            r["variant"] = ("file reads" if not s3 else f"ranged GETs of {r['part_size'] // MiB} MiB"
                            if r["requests"] > r["objects"] else "whole-object GETs")
            extra = {"floor_s": r["seconds"], "floor": r, "measured_on": path}
            self.record("floor", grp, path, rnd, m, None, extra)
            done.append((grp, m, extra))
            if grp == "a":
                extra_d = {"floor_s": r["list_seconds"], "floor": {**r, "variant": "listing"}, "measured_on": path}
                self.record("floor", "d", path, rnd, m, None, extra_d)
                done.append(("d", m, extra_d))
        if s3:
            self._floor_cache[("s3", rnd)] = done

    def cpu_floors(self, rnd: int) -> None:
        for grp in CPU_SETS:
            if grp not in self.groups:
                continue
            try:
                _, r = self.floor_run(["cpu", "--dir", str(self.data / grp)], f"cpu-floor-{grp}-r{rnd}")
            except Failed as e:
                say(f"  cpu floor {grp} failed: {e}")
                continue
            self.cpu_floor[grp].append(r)
            say(f"  cpu-floor  {grp:2s} {'':11s} {r['cpu_seconds']:8.2f} s CPU = {r['cpu_s_per_gib']:.2f} s/GiB "
                f"(sha256 {r['parts']['sha256']:.2f}, zstd {r['parts']['zstd']:.2f}, aes-gcm {r['parts']['aes_gcm']:.2f})")

    # ---- the whole run ----

    def run(self) -> dict:
        started = time.time()
        # As an installed package would be: compiled once (PYTHONDONTWRITEBYTECODE, set on some
        # machines, would otherwise make every replicator command compile the package again).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "replicator")], check=True)
        self.generate()
        if any(p.startswith("s3") for p in self.paths):
            say("starting the source S3 server (moto)")
            self.src = servers.start_s3()
            self.upload_sources()
        if "s3-s3" in self.paths:
            say("starting the vault S3 server (a second moto)")
            self.vsrv = servers.start_s3()
        if "rclone" in self.tools:
            self.write_rclone_config()
        self.tune_floor()
        budget = self.args.budget or self.scale["budget"]
        done_rounds = 0
        round_secs = []
        for rnd in range(self.args.rounds):
            if round_secs and (time.monotonic() - T0) + max(round_secs) > budget:
                note = (f"stopped after {done_rounds} of {self.args.rounds} rounds: another would pass the "
                        f"{budget / 60:.0f}-minute budget")
                self.notes.append(note)
                say(note)
                break
            t = time.monotonic()
            say(f"round {rnd + 1}/{self.args.rounds}")
            for path in self.paths:
                tools = [x for x in self.tools if path in TOOL_PATHS[x]]
                k = rnd % len(tools)
                for tool in tools[k:] + tools[:k]:  # rotate the order so drift hits every tool alike
                    getattr(self, f"{tool}_round")(path, rnd)
                    if path.endswith("-s3"):
                        self.vsrv.reset()  # nothing left on the vault server for the next tool
                self.floors(path, rnd)
            self.cpu_floors(rnd)
            done_rounds += 1
            round_secs.append(time.monotonic() - t)
        return self.report(started, done_rounds)

    def cleanup(self) -> None:
        for srv in (self.src, self.vsrv):
            if srv is not None:
                srv.stop()
        if self.args.keep:
            say(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- results ----

    def summarize(self) -> list[dict]:
        rows = []
        for (tool, st, path), runs in self.runs.items():
            ok = [r for r in runs if r["ok"]]
            n, b = self.sets[st]["objects"], self.sets[st]["bytes"]
            row = {"tool": tool, "set": st, "path": path, "rounds_ok": len(ok), "rounds": len(runs),
                   "errors": [r["error"] for r in runs if not r["ok"]], "runs": runs,
                   "median_s": None, "objects_per_s": None, "mib_per_s": None, "peak_rss_mib": None,
                   "cpu_s": None, "cpu_s_per_gib": None, "ratio": {}}
            if ok:
                key = "floor_s" if tool == "floor" else "wall_s"
                med = statistics.median(r[key] for r in ok)
                row.update(median_s=med, objects_per_s=n / med, mib_per_s=b / MiB / med,
                           peak_rss_mib=max(r["maxrss_kib"] for r in ok) / 1024,
                           cpu_s=None if (tool, st) == ("floor", "d") else statistics.median(r["cpu_s"] for r in ok))
                if st in ("a", "b", "c", "ea", "eb") and tool != "floor":
                    row["cpu_s_per_gib"] = row["cpu_s"] / (b / GiB)
                if tool == "floor":
                    row["floor_variant"] = ok[0].get("floor", {}).get("variant", "listing" if st == "d" else "")
            rows.append(row)
        by = {(r["tool"], r["set"], r["path"]): r for r in rows}
        cpu = self.cpu_summary()
        for r in rows:
            if r["median_s"] is None:
                continue
            for other in PEERS + ["floor"]:
                o = by.get((other, r["set"], r["path"]))
                if other != r["tool"] and o and o["median_s"]:
                    r["ratio"][other] = r["median_s"] / o["median_s"]
            if r["set"] in cpu and r["cpu_s_per_gib"] and r["tool"] != "floor":
                r["ratio"]["cpu_floor"] = r["cpu_s_per_gib"] / cpu[r["set"]]["cpu_s_per_gib"]
        order = {t: i for i, t in enumerate(TOOLS + ["floor"])}
        rows.sort(key=lambda r: (SETS.index(r["set"]), PATHS.index(r["path"]), order[r["tool"]]))
        return rows

    def cpu_summary(self) -> dict:
        out = {}
        for grp, rs in self.cpu_floor.items():
            if rs:
                out[grp] = {"cpu_s": statistics.median(r["cpu_seconds"] for r in rs),
                            "cpu_s_per_gib": statistics.median(r["cpu_s_per_gib"] for r in rs),
                            "parts_s": {k: statistics.median(r["parts"][k] for r in rs) for k in rs[0]["parts"]},
                            "bytes": rs[0]["bytes"], "chunk": rs[0]["chunk"], "rounds": len(rs)}
        return out

    def report(self, started: float, done_rounds: int) -> dict:
        rows = self.summarize()
        missing = [list(e) for e in expected_entries()
                   if e[0] in self.tools + ["floor"] and e[2] in self.paths
                   and (e[1] if e[1] in ("a", "b", "c") else {"d": "a", "ea": "a", "eb": "b"}[e[1]]) in self.groups
                   and not any(r["median_s"] for r in rows if (r["tool"], r["set"], r["path"]) == e)]
        result = {
            "scale": self.args.scale, "scale_params": {k: v for k, v in self.scale.items()},
            "rounds_requested": self.args.rounds, "rounds_done": done_rounds,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_at_start": self.load_start, "loadavg_at_end": list(os.getloadavg())},
            "versions": {"rclone": tool_version(["rclone", "version"]), "restic": tool_version(["restic", "version"]),
                         "replicator": tool_version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
                         "replicator_source_sha256": self.source_sha},
            "sets": self.sets, "paths": {
                "s3-local": "moto S3 server -> local-directory vault",
                "s3-s3": "moto S3 server -> a second moto S3 server as vault",
                "local-local": "local directory -> local-directory vault"},
            "flags": {
                "replicator": "defaults (run: 8 workers, restore: 8); one vault per path and round, one job per data set; "
                              "the S3 vault bucket is created by `replicator init` (no [vault.immutability])",
                "rclone": " ".join(self.rclone_flags("s3-s3")) + " (--fast-list on S3 sources only; --size-only "
                          "for the no-op (d)); crypt remote, standard filename encryption; env -u AWS_CA_BUNDLE",
                "restic": "backup --quiet --host bench DIR; restore latest --target DIR; repository v2 "
                          "(compression auto), default pack size; local-local path only",
                "floor": f"boto3 thread pool of {getattr(self, 'floor_workers', 16)} GETs (S3) / 8 readers (local); "
                         "listing for (d)",
            },
            "floor_tuning": self.floor_tuning, "cpu_floor": self.cpu_summary(),
            "expected": [list(e) for e in expected_entries()], "missing": missing, "notes": self.notes,
            "results": rows,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
        table = format_table(result)
        (self.out / "results.txt").write_text(table + "\n")
        print("\n" + table, flush=True)
        plot(result, self.out / "results.png")
        say(f"wrote {self.out / 'results.json'}")
        failed_logs = [r for r in rows if r["errors"]]
        if failed_logs:
            dst = self.out / "logs"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(self.logs, dst)
            say(f"some runs failed; their logs are in {dst}")
        return result


# -- table and plot -------------------------------------------------------------------------------


def _f(v, fmt: str, missing: str = "-") -> str:
    return missing if v is None else format(v, fmt)


def format_table(res: dict) -> str:
    la = res["machine"]["loadavg_at_start"]
    lines = [f"replicator benchmark: scale {res['scale']}, {res['rounds_done']} round(s), medians; "
             f"{res['machine']['cpus']} CPUs; load average at start {la[0]:.1f}, at end "
             f"{res['machine']['loadavg_at_end'][0]:.1f}",
             "ratio columns: this row's median time / that tool's (below 1 = this row is faster); "
             "xcpu: CPU s per GiB / the CPU floor's", ""]
    hdr = (f"{'set':3} {'path':11} {'tool':10} {'median s':>9} {'obj/s':>8} {'MiB/s':>8} {'RSS MiB':>8} "
           f"{'CPU s':>7} {'CPU s/GiB':>9} {'xrclone':>7} {'xrestic':>7} {'xfloor':>7} {'xcpu':>6}")
    sets = res["sets"]
    for st in SETS:
        rows = [r for r in res["results"] if r["set"] == st]
        if not rows:
            continue
        lines.append(f"({st}) {sets[st]['desc']}")
        lines.append(hdr)
        for r in rows:
            if r["median_s"] is None:
                lines.append(f"{st:3} {r['path']:11} {r['tool']:10} FAILED: {(r['errors'] or ['?'])[0][:90]}")
                continue
            ra = r["ratio"]
            lines.append(
                f"{st:3} {r['path']:11} {r['tool']:10} {r['median_s']:9.2f} {r['objects_per_s']:8.0f} "
                f"{r['mib_per_s']:8.1f} {_f(r['peak_rss_mib'], '8.0f'):>8} {_f(r['cpu_s'], '7.2f'):>7} "
                f"{_f(r['cpu_s_per_gib'], '9.2f'):>9} {_f(ra.get('rclone'), '7.2f'):>7} "
                f"{_f(ra.get('restic'), '7.2f'):>7} {_f(ra.get('floor'), '7.2f'):>7} "
                f"{_f(ra.get('cpu_floor'), '6.1f'):>6}")
        lines.append("")
    cpu = res["cpu_floor"]
    if cpu:
        lines.append("CPU floor (SHA-256 + AES-256-GCM + zstd level 3 on 4 MiB chunks, one thread): " + "; ".join(
            f"({g}) {c['cpu_s']:.2f} s = {c['cpu_s_per_gib']:.2f} s/GiB" for g, c in cpu.items()))
    ft = res.get("floor_tuning")
    if ft and "note" in ft:
        lines.append("floor GET client: " + ft["note"])
    elif ft:
        lines.append("floor GET client: " + ", ".join(f"{w} threads {v:.0f} GET/s"
                                                       for w, v in ft["gets_per_s_by_workers"].items())
                     + f" -> {ft['chosen_workers']} threads")
    floors = [r for r in res["results"] if r["tool"] == "floor" and r["set"] in ("b", "c") and r["median_s"]]
    if floors:
        lines.append("large-object floors used: " + ", ".join(
            f"({r['set']}) {r['path']}: {r.get('floor_variant', '')}" for r in floors))
    for n in res["notes"]:
        lines.append("note: " + n)
    if res["missing"]:
        lines.append("MISSING (no successful run): " + ", ".join("/".join(m) for m in res["missing"]))
    return "\n".join(lines)


def plot(res: dict, png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot written (pip install matplotlib)", flush=True)
        return
    tools = TOOLS + ["floor"]
    colors = {"replicator": "#1f77b4", "rclone": "#ff7f0e", "restic": "#2ca02c", "floor": "#7f7f7f"}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, st in zip(axes.flat, SETS):
        per_obj = st in ("a", "d", "ea")
        unit = "objects/s" if per_obj else "MiB/s"
        width = 0.8 / len(tools)
        for i, tool in enumerate(tools):
            xs, ys = [], []
            for j, path in enumerate(PATHS):
                r = next((r for r in res["results"] if (r["tool"], r["set"], r["path"]) == (tool, st, path)), None)
                if r and r["median_s"]:
                    xs.append(j + (i - (len(tools) - 1) / 2) * width)
                    ys.append(r["objects_per_s"] if per_obj else r["mib_per_s"])
            if xs:
                ax.bar(xs, ys, width, label=tool, color=colors[tool])
        ax.set_xticks(range(len(PATHS)), PATHS)
        ax.set_yscale("log")  # the floors are often far above the tools
        ax.set_ylabel(unit + " (log scale)")
        ax.set_title(f"({st}) {res['sets'][st]['desc']}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize=9,
                   bbox_to_anchor=(0.5, 0.955))
    fig.suptitle(f"replicator vs rclone (crypt) vs restic: scale {res['scale']}, median of "
                 f"{res['rounds_done']} round(s), higher is better; restic only on local-local (no S3 source)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(png, dpi=100)
    plt.close(fig)
    print(f"wrote {png}", flush=True)


# -- entry point ----------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (default 3); medians are reported")
    p.add_argument("--scale", choices=sorted(SCALES), default="small", help="data set sizes (default small)")
    p.add_argument("--out", default=str(BENCH / "results"), help="where results.json/.txt/.png go (default bench/results)")
    p.add_argument("--workdir", default=None, help="parent of the scratch directory (default: the system tmp)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (data, logs) afterwards")
    p.add_argument("--timeout", type=float, default=0, help="seconds per command (default: by scale)")
    p.add_argument("--budget", type=float, default=0, help="seconds for the whole run; rounds that would not fit "
                                                           "are dropped (default: by scale)")
    p.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS, help="for experiments: only these tools")
    p.add_argument("--paths", nargs="+", default=PATHS, choices=PATHS, help="for experiments: only these paths")
    p.add_argument("--groups", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"],
                   help="for experiments: only these data sets (d, e follow a and b)")
    p.add_argument("--rclone-transfers", type=int, default=RCLONE_TRANSFERS)
    p.add_argument("--rclone-checkers", type=int, default=RCLONE_CHECKERS)
    p.add_argument("--rclone-flag", action="append", metavar="--FLAG=VALUE",
                   help="extra rclone flag (repeatable; write it as --rclone-flag=--s3-chunk-size=16M), for tuning")
    p.add_argument("--rclone-no-fast-list", action="store_true", help="for tuning: no --fast-list on S3 sources")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    for binary in ("rclone", "restic"):
        if binary in args.tools and shutil.which(binary) is None:
            print(f"error: {binary} is not installed (Debian package {binary}); the benchmark needs it", file=sys.stderr)
            return 2
    def on_term(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    say(f"scale {args.scale}, {args.rounds} round(s), scratch {bench.work}, results to {bench.out}")
    try:
        res = bench.run()
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        bench.cleanup()
    return 1 if res["missing"] else 0


if __name__ == "__main__":
    sys.exit(main())
