"""A store over any fsspec filesystem: S3, GCS, Azure Blob, SFTP, ...

fsspec is used inside this adapter only; the rest of the program sees the
narrow Store protocol. Create-only puts use each provider's precondition
(S3 If-None-Match, GCS ifGenerationMatch=0, Azure overwrite=False); over SFTP
a temporary file is renamed with plain SFTP rename, which refuses to replace.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any, Iterator

from replicator.errors import AlreadyExists, NotFound, StoreError, StoreUnreachable
from replicator.redact import redact
from replicator.stores.base import check_name

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402  (after the gcsfs switch above)
from fsspec.asyn import sync  # noqa: E402

_CREATE_MODE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_SFTP = {"sftp", "ssh"}


class FsspecStore:
    def __init__(self, url: str, options: dict[str, Any]):
        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except ImportError as e:
            raise StoreError(f"{url}: support for this kind of URL is not installed ({e})") from None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{url}: bad URL or options: {redact(str(e))}") from None
        self.protocol = _protocol(self.fs)
        self.root = root.rstrip("/")
        self.url = url
        self._dirs: set[str] = set()

    def _path(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        with self._errors(name):
            if self.protocol in _CREATE_MODE:
                self.fs.pipe_file(path, data, mode="create")
            elif self.protocol in _SFTP:
                self._sftp_put(path, data)
            else:
                if self.fs.exists(path):
                    raise FileExistsError(path)
                self.fs.pipe_file(path, data)

    def _sftp_put(self, path: str, data: bytes) -> None:
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            self.fs.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)

        async def rename() -> None:
            async with self.fs._pool.get() as channel:
                await channel.rename(tmp, path)  # SFTP v3 rename: fails if path exists

        try:
            sync(self.fs.loop, rename)
        except Exception as e:
            try:
                self.fs.rm_file(tmp)
            except Exception:
                pass
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            raise e

    # Names are checked outside `_errors`: a bad name is the caller's ValueError, not a StoreError.
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        with self._errors(name):
            end = None if length is None else offset + length
            if offset == 0 and end is None:
                return self.fs.cat_file(path)
            return self.fs.cat_file(path, start=offset, end=end)

    def stat(self, name: str) -> int:
        path = self._path(name)
        with self._errors(name):
            info = self.fs.info(path)
            if info.get("type") == "directory":
                raise FileNotFoundError(name)
            return int(info["size"])

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        base = self.root + ("/" + prefix.rsplit("/", 1)[0] if "/" in prefix else "")
        with self._errors(prefix or "/"):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return
        cut = len(self.root) + 1
        for path, info in sorted(found.items()):
            name = path[cut:] if path.startswith(self.root + "/") else path
            if name.startswith(prefix) and info.get("type") != "directory" and "/.tmp-" not in "/" + name:
                yield name, int(info["size"])

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._errors(name):
            self.fs.rm_file(path)

    def exists(self) -> bool:
        with self._errors("/"):
            return bool(self.fs.exists(self.root))

    def create(self) -> None:
        with self._errors("/"):
            try:
                self.fs.mkdir(self.root, create_parents=True)
            except FileExistsError:
                pass
            if self.protocol in _SFTP:
                self.fs.makedirs(self.root, exist_ok=True)

    def _errors(self, name: str) -> "_Translate":
        return _Translate(self.url, name)


class _Translate:
    """Turn provider exceptions into the errors.py tree, with secrets redacted."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is None or isinstance(e, StoreError):
            return False
        if isinstance(e, FileExistsError):
            raise AlreadyExists(f"{self.name} already exists in {self.url}") from None
        if isinstance(e, FileNotFoundError):
            raise NotFound(f"{self.name} not found in {self.url}") from None
        if isinstance(e, PermissionError):
            raise StoreUnreachable(f"{self.url}: permission denied ({_short(e)})") from None
        if isinstance(e, (OSError, ConnectionError, TimeoutError)) or _is_network(e):
            raise StoreError(f"{self.url}: {self.name}: {_short(e)}") from None
        if isinstance(e, Exception):
            raise StoreError(f"{self.url}: {self.name}: {type(e).__name__}: {_short(e)}") from None
        return False


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return redact(text)[:300]


def _is_network(e: BaseException) -> bool:
    mod = type(e).__module__
    return mod.startswith(("aiohttp", "botocore", "asyncssh", "azure", "google", "requests", "urllib3"))


def _protocol(fs) -> str:
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p
