"""Objects from any fsspec URL: s3://bucket/prefix, gs://, az://, file://, sftp://, ..."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from replicator.errors import SourceChanged, SourceError
from replicator.redact import redact
from replicator.sources.base import SourceItem

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
from fsspec.asyn import sync  # noqa: E402

_LIST_BATCH = 1000


class ObjectSource:
    def __init__(self, url: str, options: dict[str, Any], accept: Callable[[str], bool]):
        self.url = url
        self.accept = accept
        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except ImportError as e:
            raise SourceError(f"{url}: support for this kind of URL is not installed ({e})") from None
        except (ValueError, TypeError) as e:
            raise SourceError(f"{url}: bad URL or options: {redact(str(e))}") from None
        self.root = root.rstrip("/")
        proto = self.fs.protocol
        self.protocol = proto[0] if isinstance(proto, (tuple, list)) else proto

    def check(self) -> None:
        with _errors(self.url):
            next(iter(self._raw_list()), None)  # a real request: fs.exists() hides connection errors

    def list(self) -> Iterator[SourceItem]:
        with _errors(self.url):
            for item in self._raw_list():
                if self.accept(item.key):
                    yield item

    def _raw_list(self) -> Iterator[SourceItem]:
        if self.protocol in ("s3", "s3a"):
            yield from self._list_s3()
        elif self.protocol == "file":
            yield from self._list_local(self.root)
        else:
            found = self.fs.find(self.root, detail=True)
            for path in sorted(found):
                info = found[path]
                if info.get("type") == "directory":
                    continue
                yield SourceItem(self._key(path), int(info["size"]), _mtime(info), _etag(info), None)

    def _key(self, path: str) -> str:
        return path[len(self.root) + 1:] if self.root else path

    def _list_s3(self) -> Iterator[SourceItem]:
        """Page through ListObjectsV2: memory holds one batch, never the whole bucket."""
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        pages = self.fs._iterdir(bucket, delimiter="", prefix=prefix)

        async def batch() -> list[dict]:
            out = []
            async for info in pages:
                out.append(info)
                if len(out) >= _LIST_BATCH:
                    break
            return out

        while True:
            infos = sync(self.fs.loop, batch)
            if not infos:
                return
            for info in infos:
                name = info["name"]  # "bucket/key"
                if info.get("type") != "file" or name.endswith("/"):
                    continue
                key = name[len(bucket) + 1 + len(prefix):]
                yield SourceItem(key, int(info["size"]), _mtime(info), _etag(info), info.get("VersionId"))

    def _list_local(self, top: str) -> Iterator[SourceItem]:
        """os.scandir walk: streams, one directory at a time."""
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for e in reversed(entries):
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
            for e in entries:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    key = os.path.relpath(e.path, top).replace(os.sep, "/")
                    yield SourceItem(key, st.st_size, _iso(st.st_mtime), f"{st.st_mtime_ns:x}-{st.st_size:x}", None)

    def read(self, item: SourceItem, chunk_size: int) -> Iterator[bytes]:
        """One GET for a small object; ranged GETs of chunk_size for a large one."""
        path = f"{self.root}/{item.key}" if self.root else item.key
        kw = {"version_id": item.version} if item.version and self.protocol in ("s3", "s3a") else {}
        got = 0
        with _errors(self.url, item):
            if item.size <= chunk_size:
                data = self.fs.cat_file(path, **kw)
                got = len(data)
                if got == item.size:
                    yield data
            else:
                while got < item.size:
                    data = self.fs.cat_file(path, start=got, end=min(got + chunk_size, item.size), **kw)
                    if not data:
                        break
                    got += len(data)
                    yield data
        if got != item.size:
            raise SourceChanged(f"{item.key!r} changed while it was read ({got} bytes, listed {item.size})")


class _errors:
    """Provider exceptions -> SourceError / SourceChanged, secrets redacted."""

    def __init__(self, url: str, item: SourceItem | None = None):
        self.url, self.item = url, item

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is None or isinstance(e, (SourceError, GeneratorExit)) or not isinstance(e, Exception):
            return False
        text = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:300]
        if self.item is not None and isinstance(e, FileNotFoundError):
            raise SourceChanged(f"{self.item.key!r} vanished while it was read") from None
        if isinstance(e, FileNotFoundError):
            raise SourceError(f"{self.url}: not found ({text})") from None
        if isinstance(e, PermissionError):
            raise SourceError(f"{self.url}: permission denied ({text})") from None
        raise SourceError(f"{self.url}: {text}") from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mtime(info: dict) -> str | None:
    for k in ("LastModified", "mtime", "updated", "last_modified", "modified"):
        v = info.get(k)
        if isinstance(v, datetime):
            return v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(v, (int, float)):
            return _iso(v)
        if isinstance(v, str) and v:
            return v
    return None


def _etag(info: dict) -> str | None:
    for k in ("ETag", "etag", "md5Hash", "generation", "content_settings"):
        v = info.get(k)
        if isinstance(v, str) and v:
            return v.strip('"')
        if isinstance(v, int):
            return str(v)
    return None
