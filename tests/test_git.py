"""Git jobs end to end through the CLI, with real git: capture, incremental bundles, force pushes,
deleted branches and repositories, a push racing with the capture, restore at several times."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from project import Project

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.com",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


@pytest.fixture(autouse=True)
def _git_installed():
    # A missing tool fails these tests (never skips): scripts/setup installs Debian `git`.
    assert shutil.which("git"), "git is not installed (Debian package `git`; scripts/setup installs it)"


def git(*args, cwd=None, input: bytes | None = None) -> str:
    p = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, env=GIT_ENV)
    assert p.returncode == 0, f"git {args}: {p.stderr.decode()}"
    return p.stdout.decode()


def refs(repo: Path) -> dict[str, str]:
    out = git("-C", str(repo), "for-each-ref", "--format=%(objectname) %(refname)")
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in out.splitlines()}


def reachable(repo: Path, tips: list[str] | None = None) -> list[str]:
    """Every object reachable from all refs (and HEAD), or from the given tips, sorted."""
    args = ["rev-list", "--objects", *(tips if tips is not None else ["--all"])]
    return sorted({line[:40] for line in git("-C", str(repo), *args).splitlines()})


def all_objects(repo: Path) -> list[str]:
    """Every object stored in the repository, reachable or not."""
    return sorted(git("-C", str(repo), "cat-file", "--batch-all-objects", "--batch-check=%(objectname)").split())


def head(repo: Path) -> str:
    p = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "-q", "HEAD"], capture_output=True, text=True, env=GIT_ENV)
    return p.stdout.strip() if p.returncode == 0 else "detached " + git("-C", str(repo), "rev-parse", "HEAD").strip()


def state(repo: Path) -> dict:
    return {"refs": refs(repo), "objects": reachable(repo), "head": head(repo)}


def commit(work: Path, files: dict[str, bytes], message: str) -> str:
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "commit", "-q", "-m", message)
    return git("-C", str(work), "rev-parse", "HEAD").strip()


def fast_import(bare: Path, n: int) -> None:
    """n commits on main in one `git fast-import` stream: 50 files, each commit appends to one."""
    lines: dict[int, list[str]] = {}
    out = []
    for i in range(n):
        k = i % 50
        lines.setdefault(k, [f"file {k}: the start of a file that grows by one line per change"]).append(
            f"change {i}: {'lorem ipsum dolor sit amet ' * 3}{i * 7919 % 10007}")
        content = ("\n".join(lines[k]) + "\n").encode()
        msg = f"commit {i}\n".encode()
        out.append(b"commit refs/heads/main\nmark :%d\ncommitter Dev <dev@example.com> %d +0000\ndata %d\n%s"
                   % (i + 1, 1_700_000_000 + i * 60, len(msg), msg))
        if i:
            out.append(b"from :%d\n" % i)
        out.append(b"M 100644 inline src/file%02d.txt\ndata %d\n%s\n" % (k, len(content), content))
    git("-C", str(bare), "fast-import", "--quiet", input=b"".join(out))


def make_project(tmp_path: Path, **job) -> Project:
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "code", "kind": "git", "schedule": "1h", **job}])
    p.write_config()
    p.cli("init")
    return p


def snapshot_times(p: Project, job: str = "code") -> list[str]:
    return [s["time"] for s in p.json("snapshots", "--job", job)["snapshots"]]


def ls(p: Project, *args: str) -> dict[str, dict]:
    out = p.cli("ls", "code", "--json", *args).stdout
    return {d["repo"]: d for d in map(json.loads, out.splitlines())}


def assert_restored(restored: Path, original: dict) -> None:
    """Same refs, same HEAD, exactly the reachable objects of the original (nothing more), fsck clean."""
    assert refs(restored) == original["refs"]
    assert head(restored) == original["head"]
    assert all_objects(restored) == original["objects"]
    git("-C", str(restored), "fsck", "--full", "--no-dangling")


def test_history_force_push_deleted_branch_and_repository_restore_at_each_time(tmp_path):
    src = tmp_path / "src"
    work = tmp_path / "work"
    git("init", "-q", "-b", "main", str(work))
    commit(work, {"README.md": b"# app\n", "bin/logo.png": os.urandom(20_000)}, "first")
    commit(work, {"src/app.py": b"print('hello')\n"}, "second")
    git("-C", str(work), "tag", "-a", "v1.0", "-m", "release 1.0")
    git("-C", str(work), "checkout", "-q", "-b", "feature")
    commit(work, {"src/feature.py": b"def feature(): pass\n", "bin/data.bin": os.urandom(8_000)}, "feature work")
    git("-C", str(work), "checkout", "-q", "main")
    commit(work, {"CHANGES": b"main moved on\n"}, "on main")
    git("-C", str(work), "merge", "-q", "--no-ff", "feature", "-m", "merge feature")
    git("-C", str(work), "tag", "light", "HEAD~1")
    git("-C", str(work), "notes", "add", "-m", "reviewed by QA", "HEAD")
    app = src / "team" / "app.git"
    git("init", "-q", "--bare", "-b", "main", str(app))
    git("-C", str(work), "push", "-q", str(app), "+refs/*:refs/*")
    big = src / "big.git"
    git("init", "-q", "--bare", "-b", "main", str(big))
    fast_import(big, 3000)
    tools = src / "team" / "tools"  # a working (non-bare) repository, found by its .git
    git("init", "-q", "-b", "trunk", str(tools))
    commit(tools, {"tool.sh": b"#!/bin/sh\necho tool\n"}, "tool")
    (tools / "uncommitted.txt").write_text("not part of any capture\n")

    p = make_project(tmp_path, source=str(src))
    originals: list[dict[str, dict]] = []

    # 1. First capture: every repository, every ref (branches, both kinds of tags, notes).
    t0 = time.monotonic()
    first = p.json("run")["jobs"][0]
    first_seconds = time.monotonic() - t0
    assert first["ok"] and first["seq"] == 0
    originals.append({"team/app.git": state(app), "big.git": state(big), "team/tools": state(tools)})
    listed = ls(p)
    assert sorted(listed) == ["big.git", "team/app.git", "team/tools"]
    assert listed["team/app.git"]["refs"] == refs(app)
    assert {"refs/heads/main", "refs/heads/feature", "refs/tags/v1.0", "refs/tags/light",
            "refs/notes/commits"} <= set(listed["team/app.git"]["refs"])
    assert listed["team/app.git"]["head"] == {"symref": "refs/heads/main"}
    assert listed["team/tools"]["head"] == {"symref": "refs/heads/trunk"}
    big_first = listed["big.git"]["bundles"][0]["size"]

    # Nothing changed: nothing copied.
    again = p.json("run")["jobs"][0]
    assert again["copied"] == 0 and again["unchanged"] == again["listed"]

    # 2. Small changes: the new bundle costs about the change, not the history.
    big_work = tmp_path / "big-work"
    git("clone", "-q", str(big), str(big_work))
    commit(big_work, {"src/file07.txt": b"rewritten\n", "NEWS": b"one more line\n"}, "small change")
    git("-C", str(big_work), "push", "-q", "origin", "main")
    commit(work, {"src/app.py": b"print('hello, world')\n"}, "third")
    git("-C", str(work), "push", "-q", str(app), "main")
    second = p.json("run")["jobs"][0]
    listed = ls(p)
    big_bundles = [b["size"] for b in listed["big.git"]["bundles"]]
    assert len(big_bundles) == 2
    print(f"\nbig.git (3000 commits): first bundle {big_first} B in a {first_seconds:.2f}s run; "
          f"incremental bundle after 1 commit {big_bundles[1]} B; second run copied {second['copied_bytes']} B")
    assert big_bundles[1] * 50 < big_first, (big_bundles, big_first)
    assert second["copied"] == 4  # two bundles, two refs documents; team/tools untouched
    originals.append({"team/app.git": state(app), "big.git": state(big), "team/tools": state(tools)})

    # 3. History rewritten: a force push drops the last two commits of main, a branch and a tag go.
    dropped = git("-C", str(app), "rev-parse", "main").strip()
    git("-C", str(work), "reset", "-q", "--hard", "HEAD~2")
    git("-C", str(work), "push", "-q", "--force", str(app), "main")
    git("-C", str(work), "push", "-q", str(app), ":refs/heads/feature", ":refs/tags/light")
    third = p.json("run")["jobs"][0]
    listed = ls(p)
    assert len(listed["team/app.git"]["bundles"]) == 2  # a refs-only change: no new bundle
    assert "refs/heads/feature" not in listed["team/app.git"]["refs"]
    assert third["copied"] == 1
    originals.append({"team/app.git": state(app), "big.git": state(big), "team/tools": state(tools)})
    assert dropped not in originals[-1]["team/app.git"]["objects"]

    # 4. A repository deleted at the source: tombstoned, still restorable from before.
    shutil.rmtree(tools)
    fourth = p.json("run")["jobs"][0]
    assert fourth["tombstones"] == 2  # its refs document and its bundle
    assert sorted(ls(p)) == ["big.git", "team/app.git"]
    originals.append({"team/app.git": state(app), "big.git": state(big)})

    # Restore every point in time: ref by ref, object by object, HEAD, fsck clean.
    times = snapshot_times(p)
    assert len(times) == 5
    for i, at in ((0, times[0]), (1, times[2]), (2, times[3]), (3, times[4])):
        out = tmp_path / f"restored-{i}"
        r = p.json("restore", "code", "--to", str(out), "--at", at)
        assert r["objects"] == len(originals[i]) and not r["errors"], r
        for name, orig in originals[i].items():
            assert_restored(out / (name if name.endswith(".git") else name + ".git"), orig)
        assert sorted(str(d.relative_to(out)) for d in out.rglob("*.git")) == \
            sorted(n if n.endswith(".git") else n + ".git" for n in originals[i])
        assert not list(out.rglob(".restore-*"))
    # The time before the rewrite brings back the dropped commits, the deleted branch and tag.
    before = tmp_path / "restored-1" / "team" / "app.git"
    assert git("-C", str(before), "rev-parse", "main").strip() == dropped
    assert {"refs/heads/feature", "refs/tags/light"} <= set(refs(before))
    assert (tmp_path / "restored-0" / "team" / "tools.git").is_dir()

    # --prefix restores one repository; an existing destination is refused, not overwritten.
    out = tmp_path / "one"
    r = p.json("restore", "code", "--to", str(out), "--prefix", "team/")
    assert r["objects"] == 1 and (out / "team" / "app.git").is_dir() and not (out / "big.git").exists()
    again = p.json("restore", "code", "--to", str(out), "--prefix", "team/", check=1)
    assert "already exists" in again["errors"][0]

    report = p.json("verify", "--deep")
    assert report["ok"] and report["repositories_checked"] == 3, report
    # Nothing but vault objects in the vault: no work files, no temporary files.
    stray = [f for f in (tmp_path / "vault").rglob("*")
             if f.is_file() and f.relative_to(tmp_path / "vault").parts[0] not in ("config", "keys", "data", "snapshots",
                                                                                  "leases")]
    assert not stray


def test_a_push_racing_with_the_capture_is_captured_whole(tmp_path):
    bare = tmp_path / "src" / "race.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    fast_import(bare, 300)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work))
    states = [refs(bare)]  # every state the source's refs were ever in, in order
    lock = threading.Lock()
    stop = threading.Event()
    pushes = [0]

    def pusher() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            sha = commit(work, {f"race/{i % 7}.txt": f"{i}\n".encode() * (i % 50 + 1), "race/blob.bin": os.urandom(3000)},
                         f"race {i}")
            git("-C", str(work), "push", "-q", "origin", "main")  # one ref per push: each push is atomic
            with lock:
                states.append({**states[-1], "refs/heads/main": sha})
            if i % 3 == 0:
                git("-C", str(work), "tag", f"t{i}")
                git("-C", str(work), "push", "-q", "origin", f"t{i}")
                with lock:
                    states.append({**states[-1], f"refs/tags/t{i}": sha})
            pushes[0] += 1

    p = make_project(tmp_path, source=str(tmp_path / "src"))
    thread = threading.Thread(target=pusher, daemon=True)
    thread.start()
    try:
        while pushes[0] < 3:
            time.sleep(0.05)
        before = pushes[0]
        during = [p.json("run")["jobs"][0] for _ in range(3)]
        after = pushes[0]
    finally:
        stop.set()
        thread.join(30)
    assert all(r["ok"] for r in during), during
    assert after > before, "the pusher should have been pushing during the runs"
    final = p.json("run")["jobs"][0]
    assert final["ok"]
    times = snapshot_times(p)
    for i, at in enumerate(times):
        out = tmp_path / f"restored-{i}"
        p.cli("restore", "code", "--to", str(out), "--at", at)
        restored = out / "race.git"
        got = refs(restored)
        assert got in states, f"snapshot {i}: refs are not a state the source was ever in"
        # exactly the objects those refs reach in the original, and a clean fsck
        assert all_objects(restored) == reachable(bare, sorted(set(got.values())))
        git("-C", str(restored), "fsck", "--full", "--no-dangling")
    assert got == states[-1] == refs(bare)  # the run after the race has the last state
    assert p.json("verify", "--deep")["ok"]


def test_repository_urls_a_detached_head_and_an_unreachable_repository(tmp_path):
    a = tmp_path / "hosted" / "a.git"
    git("init", "-q", "--bare", "-b", "main", str(a))
    fast_import(a, 20)
    b = tmp_path / "hosted" / "b"  # a working repository with a detached HEAD
    git("clone", "-q", str(a), str(b))
    git("-C", str(b), "checkout", "-q", "--detach", "HEAD~3")
    commit(b, {"only-on-detached-head.txt": b"reachable from HEAD alone\n"}, "detached work")
    p = make_project(tmp_path, repositories=[f"file://{a}", f"file://{b}"])
    assert p.json("run")["jobs"][0]["ok"]
    names = ls(p)
    name_a, name_b = str(a).lstrip("/"), str(b).lstrip("/")
    assert sorted(names) == sorted([name_a, name_b])
    assert names[name_b]["head"] == {"detached": git("-C", str(b), "rev-parse", "HEAD").strip()}
    before_a, before_b = state(a), state(b)

    # b becomes unreachable: the run reports it and keeps its history (no tombstones); a moves on.
    b.rename(tmp_path / "hosted" / "b-moved")
    commit_a = tmp_path / "a-work"
    git("clone", "-q", str(a), str(commit_a))
    commit(commit_a, {"x": b"x\n"}, "x")
    git("-C", str(commit_a), "push", "-q", "origin", "main")
    r = p.json("run", check=1)["jobs"][0]
    assert not r["ok"] and r["tombstones"] == 0
    assert any(name_b in e for e in r["errors"]), r["errors"]
    assert sorted(ls(p)) == sorted([name_a, name_b])
    out = tmp_path / "out"
    p.cli("restore", "code", "--to", str(out))
    assert_restored(out / (name_b + ".git"), before_b)
    assert_restored(out / name_a, state(a))
    assert state(a) != before_a

    (tmp_path / "hosted" / "b-moved").rename(b)
    assert p.json("run")["jobs"][0]["ok"]
    assert p.json("verify", "--deep")["ok"]


def test_verify_deep_and_restore_name_a_snapshot_whose_capture_lacks_a_bundle(tmp_path):
    from datetime import datetime, timezone

    from replicator.history import History
    from replicator.stores import open_store
    from replicator.units import format_time_precise
    from replicator.vault.format import PAGE_SIZE
    from replicator.vault.keys import load_key_file
    from replicator.vault.manifest import Entry, SnapshotRoot, encode_pages
    from replicator.vault.vault import Vault

    repo = tmp_path / "src" / "r.git"
    git("init", "-q", "--bare", "-b", "main", str(repo))
    fast_import(repo, 30)
    p = make_project(tmp_path, source=str(tmp_path / "src"))
    p.cli("run")
    work = tmp_path / "work"
    git("clone", "-q", str(repo), str(work))
    commit(work, {"more.txt": b"more\n"}, "more")
    git("-C", str(work), "push", "-q", "origin", "main")
    p.cli("run")
    bundles = [b["key"] for b in ls(p)["r.git"]["bundles"]]
    assert len(bundles) == 2

    # An authentic, well-chained snapshot that records the first bundle as gone while the refs
    # still need it (what a writer bug or a partial run could leave): only the repository check sees it.
    vault = Vault.open(open_store(str(tmp_path / "vault")), load_key_file(tmp_path / "vault.key"))
    history = History.for_job(vault, "code")
    head, digest = history.root(history.seqs[-1])
    page = vault.write_chunk(next(encode_pages([Entry(bundles[0], 0, deleted=True)], PAGE_SIZE)))
    now = format_time_precise(datetime.now(timezone.utc))
    vault.write_snapshot(vault.job_id("code"), SnapshotRoot(
        job="code", kind="git", seq=head.seq + 1, prev=digest, started=now, finished=now, checkpoint=False,
        pages=(page,)))

    assert p.json("verify")["ok"]  # the vault itself is intact
    report = p.json("verify", "--deep", check=1)
    assert any("'r.git' at snapshot 2" in x and bundles[0] in x for x in report["problems"]), report["problems"]
    r = p.json("restore", "code", "--to", str(tmp_path / "out"), check=1)
    assert r["objects"] == 0 and "incomplete" in r["errors"][0]
    assert not (tmp_path / "out" / "r.git").exists() and not list((tmp_path / "out").glob(".restore-*"))
    at = p.json("snapshots", "--job", "code")["snapshots"][1]["time"]
    p.cli("restore", "code", "--to", str(tmp_path / "before"), "--at", at)
    assert refs(tmp_path / "before" / "r.git") == refs(repo)


def test_config_repositories_key_and_repository_names():
    from replicator import config
    from replicator.errors import ConfigError
    from replicator.sources import open_source
    from replicator.sources.git import url_name

    head = '[vault]\nurl = "/v"\n[[jobs]]\nname = "g"\nkind = "git"\n'
    job = config.parse(head + 'repositories = ["ssh://git@h/a.git"]\n', Path("/etc")).jobs[0]
    assert job.repositories == ("ssh://git@h/a.git",) and job.source == ""
    with pytest.raises(ConfigError, match=r"^jobs\[0\]\.source: missing"):
        config.parse(head, Path("/etc"))
    with pytest.raises(ConfigError, match=r"^jobs\[0\]\.repositories\[1\]: expected a non-empty string"):
        config.parse(head + 'repositories = ["ssh://h/a.git", 3]\n', Path("/etc"))
    with pytest.raises(ConfigError, match=r"^jobs\[0\]\.repositories: only a job with kind = \"git\""):
        config.parse(head.replace('"git"', '"svn"') + 'source = "/srv/svn"\nrepositories = ["x"]\n', Path("/etc"))
    with pytest.raises(ConfigError, match=r"^jobs\[g\]\.source_options\.nope: unknown option"):
        open_source(job, {"nope": 1}, state_dir=None)
    assert url_name("https://user:token@git.example.net:8443/team/app.git") == "git.example.net/team/app.git"
    assert url_name("git@github.com:org/repo.git") == "github.com/org/repo.git"
    assert url_name("file:///srv/git/a.git") == "srv/git/a.git"
    assert url_name("ssh://h/../x/./y.git") == "h/_/x/y.git"


def test_a_capture_listed_but_never_stored_is_not_built_upon(tmp_path):
    """A run that lists (computing a bundle) and then stores nothing, like a dry run or a run that
    fails before its snapshot, must not become the base of the next bundle: its prerequisites
    would be in no stored bundle."""
    repo = tmp_path / "src" / "r.git"
    git("init", "-q", "--bare", "-b", "main", str(repo))
    fast_import(repo, 40)
    work = tmp_path / "work"
    git("clone", "-q", str(repo), str(work))
    p = make_project(tmp_path, source=str(tmp_path / "src"))
    p.cli("run")
    commit(work, {"a.txt": b"listed, never stored\n"}, "a")
    git("-C", str(work), "push", "-q", "origin", "main")
    dry = p.json("run", "--dry-run")["jobs"][0]
    assert dry["to_copy"] == 2  # a new bundle and the refs document, computed but not stored
    commit(work, {"b.txt": b"stored\n"}, "b")
    git("-C", str(work), "push", "-q", "origin", "main")
    assert p.json("run")["jobs"][0]["copied"] == 2
    assert len(ls(p)["r.git"]["bundles"]) == 2  # the first bundle, then everything since it
    out = tmp_path / "out"
    p.cli("restore", "code", "--to", str(out))
    assert_restored(out / "r.git", state(repo))
    assert p.json("verify", "--deep")["ok"]


def test_a_ref_renamed_across_a_directory_boundary_is_captured(tmp_path):
    """`foo` deleted and `foo/bar` created (and back): one atomic fetch that prunes and creates
    would fail on every run; the mirror drops the stale ref first."""
    repo = tmp_path / "src" / "r.git"
    git("init", "-q", "--bare", "-b", "main", str(repo))
    fast_import(repo, 10)
    main = refs(repo)["refs/heads/main"]
    git("-C", str(repo), "update-ref", "refs/heads/foo", main)
    p = make_project(tmp_path, source=str(tmp_path / "src"))
    p.cli("run")
    git("-C", str(repo), "update-ref", "-d", "refs/heads/foo")
    git("-C", str(repo), "update-ref", "refs/heads/foo/bar", main + "~1")
    assert p.json("run")["jobs"][0]["ok"]
    assert ls(p)["r.git"]["refs"] == refs(repo)
    git("-C", str(repo), "update-ref", "-d", "refs/heads/foo/bar")
    git("-C", str(repo), "update-ref", "refs/heads/foo", main + "~2")
    assert p.json("run")["jobs"][0]["ok"]
    out = tmp_path / "out"
    p.cli("restore", "code", "--to", str(out))
    assert_restored(out / "r.git", state(repo))


def test_repositories_missing_for_a_while_keep_their_mirrors(tmp_path):
    """Repositories that vanish for a run (an unmounted share, a lost permission) trip the breaker;
    their mirrors stay until a snapshot records the deletion, so when they return nothing is
    copied again. A source directory with no repositories at all is refused outright."""
    src = tmp_path / "src"
    for i in range(3):
        git("init", "-q", "--bare", "-b", "main", str(src / f"r{i}.git"))
        fast_import(src / f"r{i}.git", 30)
    p = make_project(tmp_path, source=str(src), safety={"min_objects": 1})
    p.cli("run")
    work = tmp_path / "work"
    git("clone", "-q", str(src / "r1.git"), str(work))
    commit(work, {"new.txt": b"an increment on top of the first bundle\n"}, "new")
    git("-C", str(work), "push", "-q", "origin", "main")
    p.cli("run")
    assert len(ls(p)["r1.git"]["bundles"]) == 2
    away = tmp_path / "away"
    away.mkdir()
    for name in ("r1.git", "r2.git"):
        (src / name).rename(away / name)
    r = p.json("run", check=1)["jobs"][0]
    assert not r["ok"] and "breaker" in json.dumps(r).lower(), r
    for name in ("r1.git", "r2.git"):
        (away / name).rename(src / name)
    r = p.json("run")["jobs"][0]
    assert r["ok"] and r["copied"] == 0 and r["tombstones"] == 0, r  # no full capture again
    assert len(ls(p)["r1.git"]["bundles"]) == 2

    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "q").mkdir()
    q = make_project(tmp_path / "q", source=str(empty))
    r = q.json("run", check=2)["jobs"][0]
    assert "no repositories found" in r["error"], r


def test_an_unreachable_repository_is_reported_by_its_cause(tmp_path):
    not_repo = tmp_path / "plain"
    not_repo.mkdir()
    p = make_project(tmp_path, repositories=[f"file://{not_repo}"])
    r = p.json("run", check=1)["jobs"][0]
    assert any("does not appear to be a git repository" in e for e in r["errors"]), r["errors"]


def test_restore_prefix_selects_whole_repository_paths(tmp_path):
    src = tmp_path / "src"
    for name in ("alpha.git", "alpha-old.git", "team/app.git"):
        git("init", "-q", "--bare", "-b", "main", str(src / name))
        fast_import(src / name, 3)
    p = make_project(tmp_path, source=str(src))
    p.cli("run")

    def restored(prefix: str) -> list[str]:
        out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
        p.cli("restore", "code", "--to", str(out), "--prefix", prefix)
        return sorted(x.relative_to(out).as_posix() for x in out.rglob("*.git"))

    assert restored("alpha") == ["alpha.git"]
    assert restored("alpha.git/") == ["alpha.git"]
    assert restored("team/") == ["team/app.git"]
    r = p.cli("restore", "code", "--to", str(tmp_path / "none"), "--prefix", "alp")
    assert "nothing at snapshot 0 matches --prefix 'alp'" in r.stdout
