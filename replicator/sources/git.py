"""Git repositories as a virtual object source.

Each repository R becomes:
  R/refs             JSON: every ref -> object id, HEAD, and the ordered chain of bundle keys
  R/bundles/<sha256> a git bundle with the objects new since the capture it builds on

A local bare mirror per repository (`<state>/git/<job>/<safe>.git`) is updated with one
`git fetch --prune --force --atomic '+refs/*:refs/*'` (refs the source dropped are deleted just
before it, see `_drop_refs`): upload-pack advertises the refs at one
moment and sends a pack closed under those refs, so a push racing with the capture is either
in it or not, never half. Bundles are cut from the mirror, never from the live repository.
The rules (what a new bundle builds on) are in docs/FORMAT.md, "Repository captures".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from replicator.errors import SourceError
from replicator.sources.base import SourceItem
from replicator.sources.repo_base import Capture, Committed, Repo, RepoSource, find_repositories, last_line, \
    run_tool, store_file, write_json

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")  # sha1 or sha256 object ids
_BUNDLE_KEY = re.compile(r"/bundles/[0-9a-f]{64}$")
CACHE_FORMAT = 1


def is_git_repo(p: Path) -> bool:
    """A bare repository (HEAD, objects/, refs/) or a working tree with a .git directory or file."""
    if (p / ".git").exists():
        return True
    return (p / "HEAD").is_file() and (p / "objects").is_dir() and (p / "refs").is_dir()


def is_local(location: str) -> bool:
    if location.startswith("file://"):
        return True
    if "://" in location:
        return False
    # git's rule: a colon before the first slash makes `[user@]host:path` an ssh location
    return not re.match(r"^[^/]*:", location)


def local_path(location: str) -> Path:
    if location.startswith("file://"):
        rest = location[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return Path(unquote(rest))
    return Path(location).expanduser()


def url_name(location: str) -> str:
    """The repository's name in the vault for a URL: host and path, without user, password or port."""
    if is_local(location):
        host, path = "", str(local_path(location).absolute())
    elif "://" in location:
        parts = urlsplit(location)
        host, path = parts.hostname or "", unquote(parts.path)
    else:  # [user@]host:path
        hostpart, path = location.split(":", 1)
        host = hostpart.rsplit("@", 1)[-1]
    parts = [p for p in f"{host}/{path}".split("/") if p not in ("", ".")]
    return "/".join("_" if p == ".." else p for p in parts) or "repository"


def git_env(ssh_command: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GCM_INTERACTIVE="never", LC_ALL="C", LANGUAGE="C")
    if ssh_command:
        env["GIT_SSH_COMMAND"] = ssh_command
    return env


class GitSource(RepoSource):
    kind = "git"
    tool = "git"
    descriptor = "refs"
    options_allowed = ("timeout", "parallel", "ssh_command")

    def __init__(self, job, options: dict[str, Any], state_dir: Path | None, catalogue=None, accept=None):
        super().__init__(job, options, state_dir, catalogue, accept)
        self.source = job.source
        self.urls = tuple(getattr(job, "repositories", ()) or ())
        ssh = options.get("ssh_command")
        if ssh is not None and not isinstance(ssh, str):
            from replicator.errors import ConfigError

            raise ConfigError(f"jobs[{job.name}].source_options.ssh_command", "expected a string")
        self.env = git_env(ssh)

    def git(self, args: list[str], what: str, **kw):
        return run_tool(["git", *args], what, env=self.env, timeout=self.timeout, **kw)

    # -- which repositories ------------------------------------------------------------------

    def repositories(self) -> list[Repo]:
        repos = []
        if self.source:
            if is_local(self.source):
                for name, p in find_repositories(local_path(self.source), is_git_repo, "git"):
                    repos.append(Repo(name, str(p)))
            else:
                repos.append(Repo(url_name(self.source), self.source))
        for u in self.urls:
            repos.append(Repo(url_name(u), str(local_path(u)) if is_local(u) else u))
        return repos

    def check_reachable(self, repos: list[Repo]) -> None:
        for r in repos:
            if not is_local(r.location):
                self.git(["-c", "safe.directory=*", "ls-remote", r.location, "HEAD"], f"git repository {r.name}")

    def keys_of(self, repo: str, committed: Committed) -> list[str]:
        return [k for k in committed
                if k == f"{repo}/refs" or (k.startswith(f"{repo}/bundles/") and _BUNDLE_KEY.search(k)
                                           and k.count("/") == repo.count("/") + 2)]

    # -- one repository ------------------------------------------------------------------------

    def capture(self, repo: Repo, committed: Committed, work: Path) -> Capture:
        what = f"git repository {repo.name}"
        mirror = self.job_dir / f"{repo.safe}.git"
        cache_path = self.job_dir / f"{repo.safe}.json"
        captures = _load_cache(cache_path, repo.name)
        base = next((c for c in reversed(captures) if _chain_committed(c["chain"], committed)), None)

        remote_refs, head = self._ls_remote(repo, what)
        if not (mirror / "HEAD").exists():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            self.git(["init", "-q", "--bare", str(mirror)], what)
            self.git(["-C", str(mirror), "config", "gc.autoDetach", "false"], what)
        refs = self._refs(mirror, what)
        detached = head.get("detached") if head else None
        if refs != remote_refs or (detached and not self._existing(mirror, [detached], what)):
            self._drop_refs(mirror, [r for r in refs if r not in remote_refs], what)
            fetched_head = self._fetch(repo, mirror, what, with_head=bool(detached))
            refs = self._refs(mirror, what)
            if detached:
                head = {"detached": fetched_head}

        if base is not None and base["refs"] == refs and base["head"] == head:
            capture = base
            files: dict[str, Path] = {}
        else:
            self._set_head(mirror, head, what)
            negatives: set[str] = set()
            if base is not None:  # everything reachable from these is in the base's chain already
                negatives = set(base["refs"].values())
                if (base["head"] or {}).get("detached"):
                    negatives.add(base["head"]["detached"])
            bundle, files = self._bundle(repo, mirror, self._existing(mirror, sorted(negatives), what), work, what)
            chain = (list(base["chain"]) if base else []) + ([bundle] if bundle else [])
            capture = {"refs": refs, "head": head, "chain": chain}
        # The base (in the vault) and this capture (in the vault once this run's snapshot is written).
        _save_cache(cache_path, repo.name, [base, capture] if base is not None and base != capture else [capture])

        doc = {"format": 1, "type": "git-refs", "repo": repo.name, "head": capture["head"],
               "refs": capture["refs"], "bundles": [b["key"] for b in capture["chain"]]}
        path, data, digest = write_json(work, f"{repo.safe}-refs", doc)
        items = [SourceItem(b["key"], b["size"], None, b["key"].rsplit("/", 1)[1], None) for b in capture["chain"]]
        items.append(SourceItem(f"{repo.name}/refs", len(data), None, digest, None))
        files[f"{repo.name}/refs"] = path
        return Capture(items, files)

    def _ls_remote(self, repo: Repo, what: str) -> tuple[dict[str, str], dict | None]:
        out = self.git(["-c", "safe.directory=*", "ls-remote", "--symref", repo.location], f"{what}: ls-remote").stdout
        refs: dict[str, str] = {}
        symref = head_sha = None
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            left, _, name = line.partition("\t")
            if left.startswith("ref: "):
                if name == "HEAD":
                    symref = left[5:]
            elif name == "HEAD":
                head_sha = left
            elif name.startswith("refs/") and not name.endswith("^{}"):
                refs[name] = left
        head = {"symref": symref} if symref else ({"detached": head_sha} if head_sha else None)
        return refs, head

    def _refs(self, mirror: Path, what: str) -> dict[str, str]:
        out = self.git(["-C", str(mirror), "for-each-ref", "--format=%(objectname) %(refname)"], what).stdout
        refs = {}
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            sha, _, name = line.partition(" ")
            refs[name] = sha
        return refs

    def _fetch(self, repo: Repo, mirror: Path, what: str, with_head: bool) -> str | None:
        args = ["-c", "safe.directory=*", "-C", str(mirror), "fetch", "--quiet", "--prune", "--force", "--atomic",
                "--no-tags", "--no-recurse-submodules"]
        if not with_head:
            args.append("--no-write-fetch-head")
        args += [repo.location, "+refs/*:refs/*"] + (["HEAD"] if with_head else [])
        self.git(args, f"{what}: fetch")
        if not with_head:
            return None
        # FETCH_HEAD describes a ref as "<kind> '<name>' of <url>", and the remote HEAD as "<url>" alone.
        for line in reversed((mirror / "FETCH_HEAD").read_text(errors="replace").splitlines()):
            sha, _, rest = line.partition("\t")
            if _SHA.match(sha) and "' of " not in rest.partition("\t")[2]:
                return sha
        raise SourceError(f"{what}: fetch did not report the detached HEAD")

    def _drop_refs(self, mirror: Path, names: list[str], what: str) -> None:
        """Delete the mirror's refs that the source no longer has, before the fetch. `fetch --prune
        --atomic` would do it in the same transaction as the updates, and git refuses that when a
        new ref and a pruned one share a path (`foo` gone, `foo/bar` new): the repository would
        never be captured again. The objects stay in the mirror."""
        if names:
            self.git(["-C", str(mirror), "update-ref", "--stdin"], f"{what}: prune",
                     input="".join(f"delete {n}\n" for n in names).encode("utf-8", "surrogateescape"))

    def _existing(self, mirror: Path, shas: list[str], what: str) -> list[str]:
        if not shas:
            return []
        out = self.git(["-C", str(mirror), "cat-file", "--batch-check"], what,
                       input="".join(s + "\n" for s in shas).encode()).stdout.decode()
        return [line.split()[0] for line in out.splitlines() if line and not line.endswith(" missing")]

    def _set_head(self, mirror: Path, head: dict | None, what: str) -> None:
        if head and head.get("symref"):
            self.git(["-C", str(mirror), "symbolic-ref", "HEAD", head["symref"]], what)
        elif head and head.get("detached"):
            self.git(["-C", str(mirror), "update-ref", "--no-deref", "HEAD", head["detached"]], what)

    def _bundle(self, repo: Repo, mirror: Path, negatives: list[str], work: Path,
                what: str) -> tuple[dict | None, dict[str, Path]]:
        """A bundle of every object reachable from the mirror's refs (and HEAD) but not from the
        negatives; None when there is none (a refs-only change)."""
        tmp = work / f"{repo.safe}.bundle.tmp"
        p = run_tool(["git", "-C", str(mirror), "bundle", "create", "-q", str(tmp), "--all", "--stdin"],
                     f"{what}: bundle", env=self.env, timeout=self.timeout, ok_codes=(0, 128),
                     input="".join(f"^{s}\n" for s in negatives).encode())
        if p.returncode != 0:
            if b"Refusing to create empty bundle" in p.stderr:
                tmp.unlink(missing_ok=True)
                return None, {}
            raise SourceError(f"{what}: bundle: {last_line(p.stderr)}")
        path, digest, size = store_file(work, f"{repo.safe}-bundle", tmp)
        key = f"{repo.name}/bundles/{digest}"
        return {"key": key, "size": size}, {key: path}


def _chain_committed(chain: list[dict], committed: Committed) -> bool:
    """Every bundle of the chain is at the head snapshot, with its content hash and size."""
    return all(committed.get(b["key"]) == (b["key"].rsplit("/", 1)[1], b["size"]) for b in chain)


def _load_cache(path: Path, name: str) -> list[dict]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("repo") != name:
        return []
    caps = doc.get("captures")
    if not isinstance(caps, list):
        return []
    ok = []
    for c in caps:
        if (isinstance(c, dict) and isinstance(c.get("refs"), dict) and isinstance(c.get("chain"), list)
                and all(isinstance(b, dict) and isinstance(b.get("key"), str) and isinstance(b.get("size"), int)
                        for b in c["chain"])):
            ok.append({"refs": c["refs"], "head": c.get("head"), "chain": c["chain"]})
    return ok


def _save_cache(path: Path, name: str, captures: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": CACHE_FORMAT, "repo": name, "captures": captures}, sort_keys=True))
    os.replace(tmp, path)
