"""Subversion jobs end to end through the CLI, with real svnadmin/svnlook/svn: first capture,
incremental dumps, hooks and conf kept, a deleted repository, restore at several times."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from project import Project

TOOLS = ("svnadmin", "svnlook", "svn")


@pytest.fixture(autouse=True)
def _svn_installed():
    # A missing tool fails these tests (never skips): scripts/setup installs Debian `subversion`.
    for tool in TOOLS:
        assert shutil.which(tool), f"{tool} is not installed (Debian package `subversion`; scripts/setup installs it)"


def run(*args: str, cwd: Path | None = None) -> bytes:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True)
    assert p.returncode == 0, f"{args}: {p.stderr.decode()}"
    return p.stdout


class Repo:
    """A Subversion repository and a working copy to commit from."""

    def __init__(self, path: Path, wc: Path, config_dir: Path):
        self.path, self.wc, self.cfg = path, wc, config_dir
        path.parent.mkdir(parents=True, exist_ok=True)
        run("svnadmin", "create", str(path))
        self.url = f"file://{path}"
        self.svn("checkout", "-q", self.url, str(wc))

    def svn(self, *args: str) -> bytes:
        return run("svn", "--non-interactive", "--config-dir", str(self.cfg), *args, cwd=self.wc if self.wc.exists() else None)

    def commit(self, files: dict[str, bytes], message: str, props: dict[str, tuple[str, str]] | None = None) -> None:
        for name, data in files.items():
            (self.wc / name).parent.mkdir(parents=True, exist_ok=True)
            (self.wc / name).write_bytes(data)
        self.svn("add", "-q", "--force", ".")
        for path, (prop, value) in (props or {}).items():
            self.svn("propset", "-q", prop, value, path)
        self.svn("commit", "-q", "-m", message)
        self.svn("update", "-q")

    def state(self) -> dict:
        """What the repository is: its youngest revision, every revision's content (a full dump:
        paths, text, properties, authors, dates, uuid), and its hooks and conf files."""
        files = {}
        for top in ("hooks", "conf"):
            for f in sorted((self.path / top).rglob("*")):
                if f.is_file():
                    files[f.relative_to(self.path).as_posix()] = (f.read_bytes(), os.access(f, os.X_OK))
        return {"youngest": youngest(self.path), "dump": run("svnadmin", "dump", "-q", str(self.path)),
                "tree": run("svnlook", "tree", str(self.path)), "files": files}


def youngest(path: Path) -> int:
    return int(run("svnlook", "youngest", str(path)))


def restored_state(path: Path) -> dict:
    run("svnadmin", "verify", "-q", str(path))
    files = {}
    for top in ("hooks", "conf"):
        for f in sorted((path / top).rglob("*")):
            if f.is_file():
                files[f.relative_to(path).as_posix()] = (f.read_bytes(), os.access(f, os.X_OK))
    return {"youngest": youngest(path), "dump": run("svnadmin", "dump", "-q", str(path)),
            "tree": run("svnlook", "tree", str(path)), "files": files}


def ls(p: Project) -> dict[str, dict]:
    return {d["repo"]: d for d in map(json.loads, p.cli("ls", "svn", "--json").stdout.splitlines())}


def test_svn_incremental_dumps_hooks_conf_deleted_repository_and_restore_at_each_time(tmp_path):
    src = tmp_path / "svnroot"
    src.mkdir()
    cfg = tmp_path / "svn-config"
    alpha = Repo(src / "alpha", tmp_path / "wc-alpha", cfg)
    alpha.commit({"trunk/README": b"alpha\n", "branches/.keep": b"", "tags/.keep": b""}, "layout")
    alpha.commit({"trunk/src/main.c": b"int main(void) { return 0; }\n", "trunk/logo.bin": os.urandom(30_000)},
                 "code and a binary", props={"trunk/src": ("svn:ignore", "*.o\n")})
    alpha.commit({"trunk/src/main.c": b"int main(void) { return 1; }\n"}, "fix")
    alpha.svn("copy", "-q", f"{alpha.url}/trunk", f"{alpha.url}/tags/v1", "-m", "tag v1")
    hook = alpha.path / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\necho committed >> /dev/null\n")
    hook.chmod(0o755)
    (alpha.path / "conf" / "svnserve.conf").write_text("[general]\nanon-access = none\nauth-access = write\n")
    beta = Repo(src / "group" / "beta", tmp_path / "wc-beta", cfg)
    beta.commit({"doc.txt": b"beta v1\n"}, "one")
    beta.commit({"doc.txt": b"beta v2\n"}, "two")

    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "svn", "kind": "svn", "source": str(src)}])
    p.write_config()
    p.cli("init")
    originals = []

    # 1. First capture: a full dump from revision 0 per repository, its hooks/conf, its state.
    first = p.json("run")["jobs"][0]
    assert first["ok"] and first["copied"] == 6
    originals.append({"alpha": alpha.state(), "group/beta": beta.state()})
    listed = ls(p)
    assert sorted(listed) == ["alpha", "group/beta"]
    assert listed["alpha"]["youngest"] == 4 and [d["key"] for d in listed["alpha"]["dumps"]] == ["alpha/dumps/0-4"]
    assert p.json("run")["jobs"][0]["copied"] == 0  # unchanged: nothing copied

    # 2. New commits, a changed hook and conf: only the new revisions are dumped.
    alpha.commit({"trunk/src/util.c": b"void util(void) {}\n"}, "util")
    alpha.commit({"trunk/README": b"alpha, second edition\n"}, "readme")
    hook.write_text("#!/bin/sh\necho committed, notified >> /dev/null\n")
    (alpha.path / "conf" / "passwd").write_text("[users]\nalice = secret\n")
    second = p.json("run")["jobs"][0]
    assert second["copied"] == 3  # alpha's new dump, its hooks/conf, its state; beta untouched
    listed = ls(p)
    dumps = listed["alpha"]["dumps"]
    assert [d["key"] for d in dumps] == ["alpha/dumps/0-4", "alpha/dumps/5-6"]
    assert dumps[1]["size"] * 10 < dumps[0]["size"], dumps
    assert listed["alpha"]["youngest"] == 6
    originals.append({"alpha": alpha.state(), "group/beta": beta.state()})

    # 3. A repository deleted at the source: tombstoned, still restorable from before.
    shutil.rmtree(beta.path)
    third = p.json("run")["jobs"][0]
    assert third["tombstones"] == 3
    assert sorted(ls(p)) == ["alpha"]
    originals.append({"alpha": alpha.state()})

    times = [s["time"] for s in p.json("snapshots", "--job", "svn")["snapshots"]]
    assert len(times) == 4
    for i, at in ((0, times[0]), (1, times[2]), (2, times[3])):
        out = tmp_path / f"restored-{i}"
        r = p.json("restore", "svn", "--to", str(out), "--at", at)
        assert r["objects"] == len(originals[i]) and not r["errors"] and not r["skipped"], r
        for name, orig in originals[i].items():
            got = restored_state(out / name)
            assert got["youngest"] == orig["youngest"]
            assert got["tree"] == orig["tree"]
            assert got["dump"] == orig["dump"]  # every revision: paths, content, properties, log, dates, uuid
            assert got["files"] == orig["files"]  # hooks (with their exec bit) and conf
        assert not list(out.rglob(".restore-*"))
    assert not (tmp_path / "restored-2" / "group").exists()

    report = p.json("verify", "--deep")
    assert report["ok"] and report["repositories_checked"] == 2, report
