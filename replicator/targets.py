"""Where a restore writes: a local directory, or any fsspec URL (s3://, gs://, az://, sftp://)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator

from replicator.errors import StoreError
from replicator.redact import redact

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
PART_SIZE = 8 * 2**20


class Unrepresentable(Exception):
    """A source key that cannot be written on this target (for example `../x` on a filesystem)."""


def open_target(url: str, options: dict[str, Any]) -> "LocalTarget | FsspecTarget":
    if "://" not in url or url.startswith("file://"):
        return LocalTarget(url[len("file://"):] if url.startswith("file://") else url)
    return FsspecTarget(url, options)


class LocalTarget:
    """Writes each object to a temporary file and renames it into place; never outside the root."""

    def __init__(self, root: str):
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise Unrepresentable(f"key {key!r} cannot be a path under {self.url}")
        p = self.root.joinpath(*parts)
        if not p.resolve().is_relative_to(self.root):
            raise Unrepresentable(f"key {key!r} leads outside {self.url}")
        return p

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        p = self.path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.parent / f".restore-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                for c in chunks:
                    f.write(c)
            os.replace(tmp, p)
        except (NotADirectoryError, IsADirectoryError, FileExistsError):
            raise Unrepresentable(f"key {key!r} collides with another key's directory under {self.url}") from None
        except OSError as e:
            raise StoreError(f"cannot write {p}: {e.strerror}") from None


class FsspecTarget:
    def __init__(self, url: str, options: dict[str, Any]):
        import fsspec

        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except (ImportError, ValueError, TypeError) as e:
            raise StoreError(f"{url}: bad restore target: {redact(str(e))}") from None
        self.root = root.rstrip("/")
        self.url = url
        try:
            if not self.fs.exists(self.root):
                self.fs.mkdir(self.root, create_parents=True)
        except Exception as e:
            raise StoreError(f"{url}: cannot reach or create the target: {redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}") from None

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        if not key or key.endswith("/") or "//" in key:
            raise Unrepresentable(f"key {key!r} cannot be written to {self.url}")
        try:
            # Parts of 8 MiB: memory per restoring worker stays small whatever the object size.
            with self.fs.open(f"{self.root}/{key}", "wb", block_size=PART_SIZE) as f:
                for c in chunks:
                    f.write(c)
        except Exception as e:
            raise StoreError(f"{self.url}: cannot write an object: {redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}") from None
