"""Repository captures (git and svn jobs): list, restore and deep-verify them from the vault alone.

A repository R of a git job is the key `R/refs` (JSON: refs, HEAD, the chain of bundle keys)
plus `R/bundles/<sha256>`; of an svn job, `R/state` (JSON: uuid, youngest, the dump keys),
`R/dumps/<a>-<b>` and `R/hooks-conf.tar`. See docs/FORMAT.md, "Repository captures".
Restores rebuild working repositories with the real tools, in a hidden temporary directory
beside the destination that is renamed into place only when the repository checks clean.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from replicator.errors import IntegrityError, ReplicatorError, UsageError
from replicator.history import History
from replicator.restore import RestoreResult
from replicator.sources.repo_base import last_line
from replicator.vault.manifest import Entry, SnapshotRoot
from replicator.vault.vault import Vault

REPO_KINDS = ("git", "svn")
DESCRIPTOR = {"git": "refs", "svn": "state"}
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_BUNDLE = re.compile(r"/bundles/([0-9a-f]{64})$")
_DUMP = re.compile(r"/dumps/(\d+)-(\d+)$")
_TOOL_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C"}


class RepoError(ReplicatorError):
    """A repository capture cannot be rebuilt (missing piece, a tool refused it)."""

    exit_code = 1


@dataclass
class RepoCapture:
    """One repository at one snapshot: its descriptor document and the entries it needs."""

    name: str
    kind: str
    doc: dict
    increments: list[str]  # bundle or dump keys, in the order they are applied
    entries: dict[str, Entry]  # key -> entry for the descriptor, increments and hooks/conf present

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries.values())

    def missing(self) -> list[str]:
        need = list(self.increments) + ([self.doc["hooks_conf"]] if self.kind == "svn" and self.doc.get("hooks_conf") else [])
        return [k for k in need if k not in self.entries]


# -- reading captures ----------------------------------------------------------------------------


def read_entry(vault: Vault, entry: Entry) -> bytes:
    return b"".join(vault.read_chunk(ref) for ref in entry.chunks)


def parse_descriptor(kind: str, name: str, data: bytes) -> dict:
    """The refs/state JSON of repository `name`, checked enough that a restore can trust its shape."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise IntegrityError(f"{kind} repository {name!r}: its {DESCRIPTOR[kind]} document is not JSON") from None
    bad = IntegrityError(f"{kind} repository {name!r}: malformed {DESCRIPTOR[kind]} document")
    if not isinstance(doc, dict) or doc.get("format") != 1 or doc.get("repo") != name:
        raise bad
    if kind == "git":
        refs, chain, head = doc.get("refs"), doc.get("bundles"), doc.get("head")
        if doc.get("type") != "git-refs" or not isinstance(refs, dict) or not isinstance(chain, list):
            raise bad
        if not all(isinstance(k, str) and k.startswith("refs/") and isinstance(v, str) and _SHA.match(v)
                   for k, v in refs.items()):
            raise bad
        if not all(isinstance(k, str) and k.startswith(f"{name}/bundles/") and _BUNDLE.search(k) for k in chain):
            raise bad
        if head is not None and not (isinstance(head, dict) and (
                (isinstance(head.get("symref"), str) and head["symref"].startswith("refs/"))
                or (isinstance(head.get("detached"), str) and _SHA.match(head["detached"])))):
            raise bad
    else:
        dumps = doc.get("dumps")
        if (doc.get("type") != "svn-state" or not isinstance(doc.get("uuid"), str)
                or not isinstance(doc.get("youngest"), int) or isinstance(doc.get("youngest"), bool)
                or not isinstance(dumps, list)):
            raise bad
        expect = 0
        for k in dumps:
            m = _DUMP.search(k) if isinstance(k, str) and k.startswith(f"{name}/dumps/") else None
            if not m or int(m.group(1)) != expect or int(m.group(2)) < int(m.group(1)):
                raise bad
            expect = int(m.group(2)) + 1
        if expect != doc["youngest"] + 1:
            raise bad
        if doc.get("hooks_conf") not in (None, f"{name}/hooks-conf.tar"):
            raise bad
    return doc


def captures(vault: Vault, history: History, root: SnapshotRoot, prefix: str = "") -> list[RepoCapture]:
    """Every repository of a git/svn job at one snapshot that `prefix` selects: by whole path
    segments, so `alpha` is the repository `alpha` (or `alpha.git`) or those under `alpha/`,
    never `alpha.old`."""
    kind = root.kind
    suffix = "/" + DESCRIPTOR[kind]
    top = prefix.strip("/")
    with history.state(root.seq) as state:
        entries = {e.key: e for e in state.iter(top)}
    out = []
    for key, entry in sorted(entries.items()):
        if not key.endswith(suffix):
            continue
        name = key[: -len(suffix)]
        if top and name not in (top, top + ".git") and not name.startswith(top + "/"):
            continue
        doc = parse_descriptor(kind, name, read_entry(vault, entry))
        increments = doc["bundles"] if kind == "git" else doc["dumps"]
        need = [key] + increments + ([doc["hooks_conf"]] if kind == "svn" and doc.get("hooks_conf") else [])
        out.append(RepoCapture(name, kind, doc, list(increments), {k: entries[k] for k in need if k in entries}))
    return out


def summary(cap: RepoCapture) -> dict:
    """What `ls` shows of one repository."""
    d = {"repo": cap.name, "kind": cap.kind, "size": cap.size}
    if cap.kind == "git":
        d.update(head=cap.doc.get("head"), refs=cap.doc["refs"],
                 bundles=[{"key": k, "size": cap.entries[k].size if k in cap.entries else None} for k in cap.increments])
    else:
        d.update(uuid=cap.doc["uuid"], youngest=cap.doc["youngest"],
                 dumps=[{"key": k, "size": cap.entries[k].size if k in cap.entries else None} for k in cap.increments])
    if cap.missing():
        d["missing"] = cap.missing()
    return d


def human_summary(d: dict) -> str:
    from replicator.cli.context import human_bytes

    if d["kind"] == "git":
        head = d["head"] or {}
        h = f"HEAD -> {head['symref']}" if head.get("symref") else (f"HEAD {head['detached']}" if head.get("detached") else "no HEAD")
        lines = [f"{d['repo']}  {h}, {len(d['refs'])} refs, {len(d['bundles'])} bundles ({human_bytes(d['size'])})"]
        lines += [f"    {sha}  {ref}" for ref, sha in sorted(d["refs"].items())]
    else:
        lines = [f"{d['repo']}  r{d['youngest']}, uuid {d['uuid']}, {len(d['dumps'])} dumps ({human_bytes(d['size'])})"]
    if d.get("missing"):
        lines.append(f"    incomplete at this snapshot: {len(d['missing'])} pieces missing")
    return "\n".join(lines)


# -- tools ----------------------------------------------------------------------------------------


def _run(args: list[str], what: str, *, input: bytes | None = None, cwd: Path | None = None) -> bytes:
    try:
        p = subprocess.run(args, input=input, capture_output=True, env=_TOOL_ENV, cwd=cwd, check=False,
                           start_new_session=True)
    except FileNotFoundError:
        raise RepoError(f"{what}: `{args[0]}` is not installed (Debian: apt-get install "
                        f"{'git' if args[0] == 'git' else 'subversion'})") from None
    if p.returncode != 0:
        raise RepoError(f"{what}: {last_line(p.stderr) or f'`{args[0]} {args[1]}` exited with {p.returncode}'}")
    return p.stdout


def _write_entry(vault: Vault, entry: Entry, path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for ref in entry.chunks:
            data = vault.read_chunk(ref)
            h.update(data)
            f.write(data)
    return h.hexdigest()


class GitBuilder:
    """A bare repository rebuilt bundle by bundle."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.what = f"git repository {name}"
        _run(["git", "init", "-q", "--bare", str(path)], self.what)

    def git(self, *args: str, input: bytes | None = None) -> bytes:
        return _run(["git", "-C", str(self.path), *args], self.what, input=input)

    def add_bundle(self, vault: Vault, key: str, entry: Entry, verify: bool = False) -> None:
        tmp = self.path / "replicator-bundle.tmp"
        try:
            digest = _write_entry(vault, entry, tmp)
            if digest != _BUNDLE.search(key).group(1):
                raise IntegrityError(f"{self.what}: bundle {key} does not hash to its name")
            if verify:  # its prerequisites are in the repository rebuilt so far
                _run(["git", "-C", str(self.path), "bundle", "verify", "-q", str(tmp)], f"{self.what}: bundle {key}")
            _run(["git", "-C", str(self.path), "bundle", "unbundle", str(tmp)], f"{self.what}: bundle {key}")
        finally:
            tmp.unlink(missing_ok=True)

    def missing_objects(self, shas: list[str]) -> list[str]:
        if not shas:
            return []
        out = self.git("cat-file", "--batch-check", input="".join(s + "\n" for s in shas).encode()).decode()
        return [line.split()[0] for line in out.splitlines() if line.endswith(" missing")]

    def set_refs(self, refs: dict[str, str], head: dict | None) -> None:
        """Exactly these refs (others deleted) and this HEAD."""
        have = {}
        for line in self.git("for-each-ref", "--format=%(objectname) %(refname)").decode("utf-8", "surrogateescape").splitlines():
            sha, _, ref = line.partition(" ")
            have[ref] = sha
        cmds = [f"delete {r}\n" for r in sorted(set(have) - set(refs))]
        cmds += [f"update {r} {sha}\n" for r, sha in sorted(refs.items()) if have.get(r) != sha]
        if cmds:
            self.git("update-ref", "--stdin", input="".join(cmds).encode("utf-8", "surrogateescape"))
        if head and head.get("symref"):
            self.git("symbolic-ref", "HEAD", head["symref"])
        elif head and head.get("detached"):
            self.git("update-ref", "--no-deref", "HEAD", head["detached"])

    def only_reachable(self) -> None:
        """Objects not reachable from the refs (from later bundles' dropped history) are removed."""
        self.git("repack", "-adq")
        self.git("prune")

    def fsck(self, full: bool) -> None:
        self.git("fsck", "--no-progress", "--no-dangling", *(["--full"] if full else ["--connectivity-only"]))


class SvnBuilder:
    """A Subversion repository rebuilt dump by dump."""

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self.what = f"svn repository {name}"
        self.loaded = 0
        _run(["svnadmin", "create", str(path)], self.what)

    def load(self, vault: Vault, key: str, entry: Entry) -> None:
        args = ["svnadmin", "load", "--quiet"] + (["--force-uuid"] if self.loaded == 0 else []) + [str(self.path)]
        with tempfile.TemporaryFile() as err:
            try:
                p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                     env=_TOOL_ENV, start_new_session=True)
            except FileNotFoundError:
                raise RepoError(f"{self.what}: `svnadmin` is not installed (Debian: apt-get install subversion)") from None
            try:
                for ref in entry.chunks:
                    p.stdin.write(vault.read_chunk(ref))
                p.stdin.close()
            except BrokenPipeError:
                pass
            except BaseException:
                p.kill()
                p.wait()
                raise
            if p.wait() != 0:
                err.seek(0)
                raise RepoError(f"{self.what}: loading {key}: {last_line(err.read()) or 'svnadmin load failed'}")
        self.loaded += 1

    def hooks_conf(self, data: bytes) -> list[str]:
        """Put the captured hooks/ and conf/ back; returns members that could not be restored."""
        skipped = []
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                top = m.name.split("/", 1)[0]
                if top not in ("hooks", "conf") or not (m.isfile() or m.isdir() or m.issym()):
                    skipped.append(m.name)
                    continue
                try:
                    tar.extract(m, self.path, filter="tar") if hasattr(tarfile, "tar_filter") else tar.extract(m, self.path)
                except (tarfile.TarError, OSError) as e:
                    skipped.append(f"{m.name} ({e})")
        return skipped

    def youngest(self) -> int:
        return int(_run(["svnlook", "youngest", str(self.path)], self.what).decode().strip())

    def uuid(self) -> str:
        return _run(["svnlook", "uuid", str(self.path)], self.what).decode().strip()

    def verify(self) -> None:
        _run(["svnadmin", "verify", "--quiet", str(self.path)], self.what)


def rebuild(vault: Vault, cap: RepoCapture, path: Path, *, full_fsck: bool = False) -> list[str]:
    """Rebuild one repository at `path` (which must not exist). Returns notes (skipped hook files)."""
    if cap.missing():
        raise RepoError(f"{cap.kind} repository {cap.name}: the capture at this snapshot is incomplete "
                        f"({cap.missing()[0]} is missing); choose another time")
    if cap.kind == "git":
        b = GitBuilder(path, cap.name)
        for key in cap.increments:
            b.add_bundle(vault, key, cap.entries[key])
        b.set_refs(cap.doc["refs"], cap.doc.get("head"))
        b.only_reachable()
        b.fsck(full=full_fsck)
        return []
    s = SvnBuilder(path, cap.name)
    for key in cap.increments:
        s.load(vault, key, cap.entries[key])
    notes = []
    if cap.doc.get("hooks_conf"):
        notes = [f"{cap.name}: hooks/conf member not restored: {m}"
                 for m in s.hooks_conf(read_entry(vault, cap.entries[cap.doc["hooks_conf"]]))]
    s.verify()
    if s.youngest() != cap.doc["youngest"] or s.uuid() != cap.doc["uuid"]:
        raise RepoError(f"svn repository {cap.name}: rebuilt at r{s.youngest()}, expected r{cap.doc['youngest']} "
                        f"of {cap.doc['uuid']}")
    return notes


# -- restore ----------------------------------------------------------------------------------------


def restore_repositories(vault: Vault, history: History, root: SnapshotRoot, target, prefix: str,
                         dry_run: bool = False,
                         progress: Callable[[RestoreResult], None] | None = None) -> RestoreResult:
    """Rebuild every repository (under prefix) as it was at `root` into a local directory:
    git as `DIR/<repo>.git` (bare), svn as `DIR/<repo>`."""
    from replicator.targets import LocalTarget, Unrepresentable

    if target is not None and not isinstance(target, LocalTarget):
        raise UsageError(f"a {root.kind} job restores repositories into a local directory, not {target.url}")
    result = RestoreResult(job=root.job, snapshot=root.seq, time=root.started, dry_run=dry_run, kind=root.kind)
    for cap in captures(vault, history, root, prefix):
        if dry_run:
            result.objects += 1
            result.bytes += cap.size
            continue
        name = cap.name if cap.kind == "svn" or cap.name.endswith(".git") else cap.name + ".git"
        try:
            dest = target.path(name)
        except Unrepresentable as e:
            result.skipped.append(str(e))
            continue
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            result.errors.append(f"{cap.name}: {dest} already exists and is not empty")
            continue
        tmp = dest.parent / f".restore-{uuid.uuid4().hex[:12]}-{dest.name}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            result.skipped += rebuild(vault, cap, tmp)
            os.rename(tmp, dest)
            result.objects += 1
            result.bytes += cap.size
        except ReplicatorError as e:
            result.errors.append(f"{cap.name}: {e}")
        except OSError as e:
            result.errors.append(f"{cap.name}: {dest}: {e.strerror or e}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            progress(result)
    return result


# -- verify --deep ----------------------------------------------------------------------------------


def verify_repositories(vault: Vault, seqs_by_job: dict[str, list[int]], only_job: str | None, report) -> None:
    """For every git/svn job: at every snapshot, every repository's descriptor names pieces present
    at that snapshot; then every distinct chain is rebuilt with the real tools (git: each bundle's
    prerequisites present before it is applied, every captured ref's object present, `git fsck
    --full` at the end of each chain; svn: every dump loads, youngest matches, `svnadmin verify`)."""
    for jid, seqs in sorted(seqs_by_job.items()):
        history = History(vault, jid, seqs)
        try:
            latest = history.root(seqs[-1])[0]
        except ReplicatorError:
            continue  # reported by the chain check
        if latest.kind not in REPO_KINDS or only_job not in (None, latest.job):
            continue
        _verify_job(vault, history, latest.kind, report)


def _repo_of(kind: str, key: str) -> str | None:
    for pat in ((r"/refs$", _BUNDLE.pattern) if kind == "git" else (r"/state$", r"/hooks-conf\.tar$", _DUMP.pattern)):
        m = re.search(pat, key)
        if m:
            return key[: m.start()]
    return None


def _verify_job(vault: Vault, history: History, kind: str, report) -> None:
    label = None
    suffix = "/" + DESCRIPTOR[kind]
    state: dict[str, Entry] = {}
    docs: dict[tuple, dict] = {}  # (descriptor chunk ids) -> parsed doc, read once
    # repo -> chain identity -> (chain [(key, entry)], [(seq, doc)])
    chains: dict[str, dict[tuple, tuple[list, list]]] = {}
    for seq in history.seqs:
        try:
            root = history.root(seq)[0]
            label = f"job {root.job!r}"
            if root.checkpoint:
                state.clear()
            changed = set()
            for e in history.entries(root):
                if e.deleted:
                    state.pop(e.key, None)
                else:
                    state[e.key] = e
                changed.add(e.key)
        except ReplicatorError:
            continue  # the chain and manifest checks report it
        repos = {r for r in (_repo_of(kind, k) for k in (state if root.checkpoint else changed)) if r is not None}
        for repo in sorted(repos):
            entry = state.get(repo + suffix)
            if entry is None:
                continue
            where = f"{label}: {kind} repository {repo!r} at snapshot {seq}"
            ident = tuple(r.id for r in entry.chunks)
            try:
                if ident not in docs:
                    docs[ident] = parse_descriptor(kind, repo, read_entry(vault, entry))
                doc = docs[ident]
            except ReplicatorError as e:
                report.problems.append(f"{where}: {e}")
                continue
            keys = doc["bundles"] if kind == "git" else doc["dumps"]
            need = keys + ([doc["hooks_conf"]] if kind == "svn" and doc.get("hooks_conf") else [])
            missing = [k for k in need if k not in state]
            if missing:
                report.problems.append(f"{where}: {missing[0]} is missing (this snapshot cannot be restored)")
                continue
            chain = [(k, state[k]) for k in keys]
            cid = tuple((k, e.size, tuple(r.id for r in e.chunks)) for k, e in chain)
            slot = chains.setdefault(repo, {}).setdefault(cid, (chain, []))
            hooks = state.get(doc.get("hooks_conf") or "")
            if not slot[1] or slot[1][-1][1] is not doc or slot[1][-1][2] != hooks:
                slot[1].append((seq, doc, hooks))
    for repo, by_chain in sorted(chains.items()):
        report.repositories_checked += 1
        ids = list(by_chain)
        maximal = [c for c in ids if not any(len(o) > len(c) and o[: len(c)] == c for o in ids)]
        for cid in maximal:
            prefixes = [(len(o), by_chain[o][1]) for o in ids if o == cid[: len(o)]]
            try:
                _rebuild_chain(vault, kind, repo, by_chain[cid][0], prefixes)
            except ReplicatorError as e:
                report.problems.append(f"{label}: {kind} repository {repo!r}: {e}")


def _rebuild_chain(vault: Vault, kind: str, repo: str, chain: list, prefixes: list) -> None:
    """Apply a chain step by step; after k steps, check every capture whose chain is those k."""
    checks = {}
    for n, items in prefixes:
        checks.setdefault(n, []).extend(items)
    with tempfile.TemporaryDirectory(prefix="replicator-verify-repo-") as tmp:
        path = Path(tmp) / "repo"
        if kind == "git":
            b = GitBuilder(path, repo)
            for n in range(len(chain) + 1):
                if n:
                    key, entry = chain[n - 1]
                    b.add_bundle(vault, key, entry, verify=True)
                for seq, doc, _ in checks.get(n, []):
                    shas = sorted(set(doc["refs"].values()) | ({doc["head"]["detached"]} if (doc.get("head") or {}).get("detached") else set()))
                    missing = b.missing_objects(shas)
                    if missing:
                        raise RepoError(f"snapshot {seq}: object {missing[0]} of a captured ref is in no bundle")
            _, last_doc, _ = checks[len(chain)][-1]
            b.set_refs(last_doc["refs"], last_doc.get("head"))
            b.fsck(full=True)
        else:
            s = SvnBuilder(path, repo)
            for n in range(1, len(chain) + 1):
                key, entry = chain[n - 1]
                s.load(vault, key, entry)
                for seq, doc, hooks in checks.get(n, []):
                    if s.youngest() != doc["youngest"]:
                        raise RepoError(f"snapshot {seq}: the dumps rebuild r{s.youngest()}, the state says r{doc['youngest']}")
                    if hooks is not None:
                        try:
                            with tarfile.open(fileobj=io.BytesIO(read_entry(vault, hooks))) as tar:
                                tar.getmembers()
                        except tarfile.TarError as e:
                            raise RepoError(f"snapshot {seq}: hooks-conf.tar is not a readable tar ({e})") from None
            s.verify()


def iter_summaries(vault: Vault, history: History, root: SnapshotRoot, prefix: str) -> Iterator[dict]:
    for cap in captures(vault, history, root, prefix):
        yield summary(cap)
