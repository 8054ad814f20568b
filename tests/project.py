"""A replicator project on disk for end-to-end tests: a config, and the CLI run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fsspec


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


# Every CLI output of this test session, for the secrets scan (tests/secrets_scan.py): the project's
# directory, the text, and the key files and environment the project had at that moment.
CAPTURED: list[tuple[Path, str, str, dict]] = []
# Other text the session saw that no project wrote alone (metrics scrapes): scanned against every secret.
SCRAPED: list[str] = []


def _record(p: "Project", *texts: str) -> None:
    keys = "".join(f.read_text(errors="replace") for f in p.dir.glob("*.key") if f.is_file())
    CAPTURED.append((p.dir, "\n".join(t for t in texts if t), keys, dict(p.env)))


@dataclass
class Project:
    dir: Path
    vault_url: str
    vault_options: dict
    jobs: list[dict]
    env: dict = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    def write_config(self) -> None:
        lines = ["[vault]", f"url = {toml_value(self.vault_url)}", 'key_file = "vault.key"']
        if self.vault_options:
            lines.append(f"options = {toml_value(self.vault_options)}")
        lines += ["", "[state]", 'dir = "state"', ""]
        for j in self.jobs:
            lines.append("[[jobs]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in j.items()]
            lines.append("")
        self.config.write_text("\n".join(lines))

    def cli(self, *args: str, check: int | None = 0, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `replicator --config ... ARGS`; assert the exit code unless check is None."""
        env = {**os.environ, **self.env}
        p = subprocess.run([sys.executable, "-m", "replicator", "--config", str(self.config), *args],
                           capture_output=True, text=True, env=env, timeout=timeout, cwd=self.dir)
        _record(self, p.stdout, p.stderr)
        if check is not None:
            assert p.returncode == check, f"exit {p.returncode} (wanted {check}) for {args}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        return p

    def popen(self, *args: str) -> subprocess.Popen:
        """Start the CLI in the background; its output goes to files (a pipe nobody reads would block it)."""
        env = {**os.environ, **self.env}
        n = len(list(self.dir.glob("popen-*.err")))
        out = open(self.dir / f"popen-{n}.out", "w")
        err = open(self.dir / f"popen-{n}.err", "w")
        proc = subprocess.Popen([sys.executable, "-m", "replicator", "--config", str(self.config), *args],
                                stdout=out, stderr=err, text=True, env=env, cwd=self.dir)
        proc.stderr_path = self.dir / f"popen-{n}.err"
        proc.project = self
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
        """Wait for a background CLI; its stderr text."""
        proc.wait(timeout=timeout)
        err = proc.stderr_path.read_text()
        _record(proc.project, proc.stderr_path.with_suffix(".out").read_text(), err)
        return err

    def json(self, *args: str, check: int | None = 0):
        return json.loads(self.cli(*args, "--json", check=check).stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def s3_fs(s3_server):
    return fsspec.filesystem("s3", **s3_server.fsspec_options(), skip_instance_cache=True)


def read_tree(fs, root: str) -> dict[str, bytes]:
    """key -> bytes of every object under root (keys relative to root)."""
    root = root.rstrip("/")
    out = {}
    for path in fs.find(root):
        out[path[len(root) + 1:]] = fs.cat_file(path)
    return out


def read_dir(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# Keys that break naive tools: unicode, spaces, deep paths, empty objects, look-alike names.
UNUSUAL = {
    "plain.txt": b"plain text\n" * 50,
    "deep/a/b/c/d/e/f/g/leaf.bin": bytes(range(256)) * 40,
    "with space/and  two.txt": b"spaces",
    "unicodé/ファイル/名前.txt": "ünïcödé ファイル".encode(),
    "empty.dat": b"",
    "empty-dir-sibling/zero": b"",
    "symbols/a+b=c&d%20e#f.txt": b"symbols",
    "emoji/\U0001f680.txt": b"rocket",
    "case/Readme.md": b"upper",
    "case/README.md": b"lower-ish",
}
