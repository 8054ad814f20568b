"""What the git and svn sources share.

A repository job is a *virtual object source*: every repository becomes a few ordinary
keys (a small JSON description plus immutable increments: git bundles, svn dumps), so the
engine, manifests, dedup, tombstones, verify and point-in-time selection work unchanged.
The layout of those keys is in docs/FORMAT.md, "Repository captures".

Increments are computed at list time into a work directory under the state directory and
streamed from there by `read`. What counts as "already captured" is what the vault holds
at the job's head snapshot: the engine syncs the catalogue with the vault before it lists,
and the source reads the head's (key, etag, size) from it. Local state (mirrors, the last
captures) is only a cache: losing it costs a full capture, never a wrong one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from replicator.errors import ConfigError, SourceChanged, SourceError
from replicator.redact import redact
from replicator.sources.base import SourceItem

DEFAULT_TIMEOUT = 3600  # seconds for one external command
DEFAULT_PARALLEL = 4  # repositories captured at once
_READ_BLOCK = 1 << 20

Committed = dict[str, tuple[str | None, int]]  # key -> (etag, size) at the job's head snapshot


@dataclass(frozen=True)
class Repo:
    name: str  # the key prefix in the vault: a relative path, "/"-separated
    location: str  # what the tools are given: a local path or a URL

    @property
    def safe(self) -> str:
        """A file name for this repository's local state: readable, and unique by its hash."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name).strip("._-")[:60] or "repo"
        return f"{readable}-{hashlib.sha256(self.name.encode()).hexdigest()[:12]}"


@dataclass
class Capture:
    """What capturing one repository produced: the items to list and where their bytes are."""

    items: list[SourceItem]
    files: dict[str, Path]  # key -> file holding exactly the item's bytes (new increments, the JSON)
    error: str | None = None  # set when the repository could not be captured this time


def run_tool(args: list[str], what: str, *, env: dict[str, str] | None = None, cwd: Path | None = None,
             input: bytes | None = None, stdout=None, timeout: float = DEFAULT_TIMEOUT,
             ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Run one external command (never through a shell). A failure becomes a one-line SourceError:
    `what` (which names the repository) and the tool's last line on stderr."""
    try:
        p = subprocess.run(args, input=input, stdout=subprocess.PIPE if stdout is None else stdout,
                           stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=timeout, check=False,
                           start_new_session=True)  # no controlling terminal: nothing can prompt
    except FileNotFoundError:
        raise SourceError(f"{what}: `{args[0]}` is not installed (Debian: apt-get install "
                          f"{'git' if args[0] == 'git' else 'subversion'})") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"{what}: `{args[0]} {args[1]}` did not finish within {timeout:.0f}s") from None
    if p.returncode not in ok_codes:
        raise SourceError(f"{what}: {last_line(p.stderr) or f'`{args[0]} {args[1]}` exited with {p.returncode}'}")
    return p


def last_line(stderr: bytes | str | None) -> str:
    """The line of a tool's stderr that names the cause: its first `fatal:` / `error:` / `svnadmin:
    E...` line when there is one (git follows the cause with generic advice), else its last line."""
    if not stderr:
        return ""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if _CAUSE.match(ln)]
    line = causes[0] if causes else (lines or [""])[-1]
    return redact(line)[:300]


_CAUSE = re.compile(r"^(fatal|error|svn\w*: E\d+):", re.IGNORECASE)



def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            h.update(block)
    return h.hexdigest()


def store_file(work: Path, stem: str, tmp: Path) -> tuple[Path, str, int]:
    """Name a finished work file by its content hash: (path, sha256, size)."""
    digest = sha256_file(tmp)
    final = work / f"{stem}-{digest[:16]}"
    os.replace(tmp, final)
    return final, digest, final.stat().st_size


def write_json(work: Path, stem: str, obj: Any) -> tuple[Path, bytes, str]:
    """Canonical JSON (sorted keys, compact) written to the work directory: (path, bytes, sha256)."""
    import json

    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()  # ASCII: \u escapes
    digest = hashlib.sha256(data).hexdigest()
    path = work / f"{stem}-{digest[:16]}.json"
    path.write_bytes(data)
    return path, data, digest


def find_repositories(top: Path, is_repo: Callable[[Path], bool], what: str) -> list[tuple[str, Path]]:
    """(name, path) of every repository under top, names relative to top. A directory that is
    a repository is not searched further. An unreadable directory, or none found at all, fails
    the whole listing: going on would make repositories look deleted."""
    if not top.is_dir():
        raise SourceError(f"{what} source {top}: not a directory (or not reachable)")
    if is_repo(top):
        return [(top.name, top)]
    found: list[tuple[str, Path]] = []
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise SourceError(f"{what} source: cannot read directory {d}: {e.strerror}") from None
        subdirs = []
        for e in entries:
            if not e.is_dir(follow_symlinks=False):
                continue
            p = Path(e.path)
            if is_repo(p):
                found.append((p.relative_to(top).as_posix(), p))
            else:
                subdirs.append(p)
        stack.extend(reversed(subdirs))
    if not found:  # far more often an unmounted share or a typo than a server without repositories
        raise SourceError(f"{what} source {top}: no repositories found in it or below it")
    return sorted(found)


class RepoSource:
    """The shared shell of GitSource and SvnSource: listing, per-repository isolation, reading."""

    kind = ""
    tool = ""
    options_allowed = ("timeout", "parallel")

    def __init__(self, job, options: dict[str, Any], state_dir: Path | None, catalogue=None,
                 accept: Callable[[str], bool] | None = None):
        self.job = job.name
        self.url = job.source or ", ".join(getattr(job, "repositories", ()) or ())
        self.accept = accept or (lambda name: True)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._catalogue = catalogue
        self._files: dict[str, Path] = {}
        self._errors: dict[str, str] = {}
        for k in options:
            if k not in self.options_allowed:
                raise ConfigError(f"jobs[{job.name}].source_options.{k}",
                                  f"unknown option for a {self.kind} job (known: {', '.join(self.options_allowed)})")
        self.timeout = _positive(options.get("timeout", DEFAULT_TIMEOUT), job.name, "timeout")
        self.parallel = int(_positive(options.get("parallel", DEFAULT_PARALLEL), job.name, "parallel"))

    # -- to be provided by the kind ------------------------------------------------------

    def repositories(self) -> list[Repo]:
        raise NotImplementedError

    def capture(self, repo: Repo, committed: Committed, work: Path) -> Capture:
        raise NotImplementedError

    def keys_of(self, repo: str, committed: Committed) -> list[str]:
        """The keys of `repo` at the head snapshot (to keep them when it cannot be captured)."""
        raise NotImplementedError

    descriptor = ""  # the per-repository JSON key suffix: "refs" or "state"

    # -- the Source protocol ---------------------------------------------------------------

    @property
    def job_dir(self) -> Path:
        if self.state_dir is None:
            raise SourceError(f"a {self.kind} job keeps mirrors in the state directory; none was given")
        return self.state_dir / self.kind / self.job

    def check(self) -> None:
        run_tool([self.tool, "--version"], f"{self.kind} job {self.job}", timeout=60)
        repos = self.repositories()
        self.check_reachable(repos)

    def check_reachable(self, repos: list[Repo]) -> None:
        pass

    def list(self) -> Iterator[SourceItem]:
        self._files.clear()
        self._errors.clear()
        run_tool([self.tool, "--version"], f"{self.kind} job {self.job}", timeout=60)
        committed = self._committed()
        repos = [r for r in self.repositories() if self.accept(r.name)]
        names = [r.name for r in repos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SourceError(f"{self.kind} job {self.job}: two repositories would be stored as {dupes[0]!r}")
        job_dir = self.job_dir
        work = job_dir / "work"
        shutil.rmtree(work, ignore_errors=True)  # increments of an earlier run: recomputed when needed
        work.mkdir(parents=True, exist_ok=True)

        def one(repo: Repo) -> Capture:
            try:
                return self.capture(repo, committed, work)
            except SourceError as e:
                return self._keep(repo, committed, str(e))
            except OSError as e:
                return self._keep(repo, committed, f"{self.kind} repository {repo.name}: {e.strerror or e}")

        with ThreadPoolExecutor(self.parallel, thread_name_prefix=f"{self.kind}-capture") as pool:
            for cap in pool.map(one, repos):
                self._files.update(cap.files)
                yield from cap.items
        # A repository missing now but still at the head snapshot keeps its mirror until a snapshot
        # records its deletion: a source that is briefly empty (an unmounted share, a breaker that
        # holds the run back) must not turn the next run into a full capture of everything.
        at_head = {k.rsplit("/", 1)[0] for k in committed if k.endswith(f"/{self.descriptor}")}
        self._forget_others({r.safe for r in repos} | {Repo(name, "").safe for name in at_head})

    def _keep(self, repo: Repo, committed: Committed, error: str) -> Capture:
        """A repository that cannot be captured now keeps its head state (no tombstones), and its
        descriptor is listed as changed so that the engine tries to read it and records the error."""
        items = []
        key = f"{repo.name}/{self.descriptor}"
        for k in self.keys_of(repo.name, committed):
            if k != key:
                etag, size = committed[k]
                items.append(SourceItem(k, size, None, etag, None))
        size = committed.get(key, (None, 0))[1]
        items.append(SourceItem(key, size, None, "unavailable", None))
        self._errors[key] = error
        return Capture(items, {}, error)

    def _forget_others(self, keep: set[str]) -> None:
        """Local state of repositories no longer at the source: removed (it is only a cache)."""
        try:
            entries = list(self.job_dir.iterdir())
        except OSError:
            return
        for p in entries:
            if p.name == "work":
                continue
            stem = next((p.name[:-len(x)] for x in (".git", ".json") if p.name.endswith(x)), p.name)
            if stem not in keep:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def read(self, item: SourceItem, chunk_size: int) -> Iterator[bytes]:
        if item.key in self._errors:
            raise SourceError(self._errors[item.key])
        path = self._files.get(item.key)
        if path is None:
            raise SourceChanged(f"{item.key!r} is no longer available locally; the next run captures it again")
        h = hashlib.sha256()
        got = 0
        try:
            with open(path, "rb") as f:
                while data := f.read(chunk_size):
                    h.update(data)
                    got += len(data)
                    yield data
        except FileNotFoundError:
            raise SourceChanged(f"{item.key!r} vanished from the work directory while it was read") from None
        except OSError as e:
            raise SourceError(f"{item.key!r}: cannot read {path}: {e.strerror}") from None
        if got != item.size or h.hexdigest() != item.etag:
            raise SourceChanged(f"{item.key!r} changed in the work directory while it was read")
        # The engine asks past the last chunk only once it has stored it: the work file is done.
        # (A later run recomputes whatever the vault's head does not hold.)
        self._files.pop(item.key, None)
        path.unlink(missing_ok=True)

    def _committed(self) -> Committed:
        """(etag, size) of every key of this job at its head snapshot, from the catalogue, which the
        engine has synced with the vault before listing. Without one, nothing counts as captured."""
        cat, close = self._catalogue, False
        if cat is None:
            if self.state_dir is None or not (self.state_dir / "catalogue.db").exists():
                return {}
            from replicator.catalogue import Catalogue

            cat, close = Catalogue(self.state_dir / "catalogue.db"), True
        try:
            return {e.key: (e.etag, e.size) for e in cat.entries(self.job)}
        finally:
            if close:
                cat.close()


def _positive(v: Any, job: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError(f"jobs[{job}].source_options.{key}", f"expected a positive number, got {v!r}")
    return v
