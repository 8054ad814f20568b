"""Subversion repositories as a virtual object source.

Each repository R (a directory holding `format` and `db/`) becomes:
  R/state            JSON: uuid, youngest revision, the ordered dump keys, the hooks/conf key
  R/dumps/<a>-<b>    `svnadmin dump --deltas -r a:b` (incremental unless a = 0)
  R/hooks-conf.tar   the repository's hooks/ and conf/ directories

Revisions are immutable, so dumping the range up to the youngest revision read at one moment
is consistent by construction, even while commits continue. The rules are in
docs/FORMAT.md, "Repository captures".
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from replicator.errors import SourceError
from replicator.sources.base import SourceItem
from replicator.sources.repo_base import Capture, Committed, Repo, RepoSource, find_repositories, run_tool, \
    store_file, write_json

_DUMP_KEY = re.compile(r"/dumps/(\d+)-(\d+)$")
CACHE_FORMAT = 1


def is_svn_repo(p: Path) -> bool:
    return (p / "format").is_file() and (p / "db").is_dir()


class SvnSource(RepoSource):
    kind = "svn"
    tool = "svnadmin"
    descriptor = "state"

    def __init__(self, job, options: dict[str, Any], state_dir: Path | None, catalogue=None, accept=None):
        super().__init__(job, options, state_dir, catalogue, accept)
        src = job.source
        if src.startswith("file://"):
            src = src[len("file://"):]
        elif "://" in src:
            from replicator.errors import ConfigError

            raise ConfigError(f"jobs[{job.name}].source", "an svn job reads repositories on this host: give a "
                                                          "directory (svnadmin needs direct access)")
        self.root = Path(src).expanduser()

    def repositories(self) -> list[Repo]:
        return [Repo(name, str(p)) for name, p in find_repositories(self.root, is_svn_repo, "svn")]

    def check_reachable(self, repos: list[Repo]) -> None:
        run_tool(["svnlook", "--version", "--quiet"], f"svn job {self.job}", timeout=60)

    def keys_of(self, repo: str, committed: Committed) -> list[str]:
        depth = repo.count("/")
        return [k for k in committed
                if k in (f"{repo}/state", f"{repo}/hooks-conf.tar")
                or (k.startswith(f"{repo}/dumps/") and _DUMP_KEY.search(k) and k.count("/") == depth + 2)]

    def capture(self, repo: Repo, committed: Committed, work: Path) -> Capture:
        what = f"svn repository {repo.name}"
        path = repo.location
        youngest_text = run_tool(["svnlook", "youngest", path], what, timeout=self.timeout).stdout.decode().strip()
        uuid = run_tool(["svnlook", "uuid", path], what, timeout=self.timeout).stdout.decode().strip()
        if not youngest_text.isdigit() or not uuid:
            raise SourceError(f"{what}: svnlook gave an unexpected answer")
        youngest = int(youngest_text)
        cache_path = self.job_dir / f"{repo.safe}.json"
        cached = _load_cache(cache_path, repo.name)

        # The dumps already in the vault: the cached chain, from revision 0, as far as every dump
        # is at the head snapshot with the same content (etag) and size.
        prefix: list[dict] = []
        if cached and cached["uuid"] == uuid:
            for d in cached["dumps"]:
                if d["from"] != (prefix[-1]["to"] + 1 if prefix else 0) or committed.get(d["key"]) != (d["etag"], d["size"]):
                    break
                prefix.append(d)
        if prefix and prefix[-1]["to"] > youngest:
            prefix = []  # the repository went back in time (replaced by an older copy): start again
        dumps = list(prefix)
        files: dict[str, Path] = {}
        first = prefix[-1]["to"] + 1 if prefix else 0
        if first <= youngest:
            tmp = work / f"{repo.safe}.dump.tmp"
            args = ["svnadmin", "dump", "--quiet", "--deltas", "-r", f"{first}:{youngest}"]
            if first > 0:
                args.append("--incremental")
            with open(tmp, "wb") as out:
                run_tool(args + [path], f"{what}: dump", stdout=out, timeout=self.timeout)
            fpath, digest, size = store_file(work, f"{repo.safe}-dump", tmp)
            key = f"{repo.name}/dumps/{first}-{youngest}"
            dumps.append({"key": key, "from": first, "to": youngest, "etag": digest, "size": size})
            files[key] = fpath

        tmp = work / f"{repo.safe}.tar.tmp"
        _hooks_conf_tar(Path(path), tmp)
        tpath, tdigest, tsize = store_file(work, f"{repo.safe}-hooks-conf", tmp)
        tkey = f"{repo.name}/hooks-conf.tar"
        files[tkey] = tpath

        _save_cache(cache_path, repo.name, uuid, dumps)
        doc = {"format": 1, "type": "svn-state", "repo": repo.name, "uuid": uuid, "youngest": youngest,
               "dumps": [d["key"] for d in dumps], "hooks_conf": tkey}
        spath, data, sdigest = write_json(work, f"{repo.safe}-state", doc)
        files[f"{repo.name}/state"] = spath
        items = [SourceItem(d["key"], d["size"], None, d["etag"], None) for d in dumps]
        items.append(SourceItem(tkey, tsize, None, tdigest, None))
        items.append(SourceItem(f"{repo.name}/state", len(data), None, sdigest, None))
        return Capture(items, files)


def _hooks_conf_tar(repo: Path, out: Path) -> None:
    """hooks/ and conf/ as a tar with a stable member order and no owner names."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for top in ("conf", "hooks"):
            base = repo / top
            if not base.is_dir():
                continue
            paths = [base]
            for d, dirs, names in os.walk(base, followlinks=False):
                dirs.sort()
                paths += [Path(d) / n for n in dirs] + [Path(d) / n for n in sorted(names)]
            for p in sorted(paths):
                ti = tar.gettarinfo(str(p), arcname=p.relative_to(repo).as_posix())
                if not (ti.isfile() or ti.isdir() or ti.issym()):
                    continue
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = int(ti.mtime)
                if ti.isfile():
                    with open(p, "rb") as f:
                        tar.addfile(ti, f)
                else:
                    tar.addfile(ti)


def _load_cache(path: Path, name: str) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("repo") != name:
        return None
    dumps = doc.get("dumps")
    if not isinstance(doc.get("uuid"), str) or not isinstance(dumps, list):
        return None
    for d in dumps:
        if not (isinstance(d, dict) and isinstance(d.get("key"), str) and isinstance(d.get("etag"), str)
                and all(isinstance(d.get(k), int) for k in ("from", "to", "size"))):
            return None
    return {"uuid": doc["uuid"], "dumps": dumps}


def _save_cache(path: Path, name: str, uuid: str, dumps: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": CACHE_FORMAT, "repo": name, "uuid": uuid, "dumps": dumps}, sort_keys=True))
    os.replace(tmp, path)
