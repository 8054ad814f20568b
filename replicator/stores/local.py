"""A store in a local directory (or a mounted NAS): `file:///mnt/nas/vault` or a plain path."""

from __future__ import annotations

import errno
import os
import stat as statmod
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from replicator.errors import AlreadyExists, NotFound, StoreError, StoreUnreachable
from replicator.local_io import drop_cached, write_all
from replicator.stores.base import check_name


class LocalStore:
    """Atomic create-only puts: write a temporary file, fsync, hard-link into place (fails if taken)."""

    def __init__(self, root: str):
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def put(self, name: str, data: bytes) -> None:
        final = self._path(name)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, data)
                os.fsync(fd)
                drop_cached(fd)  # on disk now; the next blob reuses these pages
            finally:
                os.close(fd)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise AlreadyExists(f"{name} already exists in {self.url}") from None
            _fsync_dir(final.parent)
        except OSError as e:
            raise _error(e, name, self.url) from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except (IsADirectoryError, NotADirectoryError):  # a name prefix, or a path through an object
            raise NotFound(f"{name} not found in {self.url}") from None
        except OSError as e:
            raise _error(e, name, self.url) from None

    def stat(self, name: str) -> int:
        try:
            st = os.stat(self._path(name))
        except NotADirectoryError:  # a path through an object
            raise NotFound(f"{name} not found in {self.url}") from None
        except OSError as e:
            raise _error(e, name, self.url) from None
        if not statmod.S_ISREG(st.st_mode):  # a directory is a name prefix, not an object
            raise NotFound(f"{name} not found in {self.url}")
        return st.st_size

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        # Walk only the directory the prefix points into.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            for f in sorted(filenames):
                name = rel + f
                if f.startswith(".tmp-") or not name.startswith(prefix):
                    continue
                try:
                    yield name, os.stat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:
                    continue

    def list_times(self, prefix: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(name, size, write time) for prune: the file's mtime, as this filesystem's clock set it."""
        for name, size in self.list(prefix):
            try:
                t = os.stat(self.root / name).st_mtime
            except FileNotFoundError:
                continue
            yield name, size, datetime.fromtimestamp(t, timezone.utc)

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except OSError as e:
            raise _error(e, name, self.url) from None

    def exists(self) -> bool:
        return self.root.is_dir()

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnreachable(f"cannot create {self.url}: {e.strerror}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _error(e: OSError, name: str, url: str) -> StoreError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"{name} not found in {url}")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"no space left on {url} while writing {name}")
    if e.errno == errno.EROFS:
        return StoreError(f"{url} is read-only")
    if isinstance(e, PermissionError):
        return StoreError(f"permission denied on {url}/{name}")
    return StoreError(f"{url}: {name}: {e.strerror or e}")
