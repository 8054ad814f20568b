"""Where a restore writes: a local directory, or any fsspec URL (s3://, gs://, az://, sftp://)."""

from __future__ import annotations

import errno
import itertools
import os
import threading
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Iterator

from replicator.errors import StoreError
from replicator.local_io import write_all
from replicator.redact import first_line, redact

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
PART_SIZE = 8 * 2**20


class Unrepresentable(Exception):
    """A source key that cannot be written on this target (for example `../x` on a filesystem)."""


def open_target(url: str, options: dict[str, Any]) -> "LocalTarget | FsspecTarget":
    if "://" not in url or url.startswith("file://"):
        return LocalTarget(url[len("file://"):] if url.startswith("file://") else url)
    return FsspecTarget(url, options)


class LocalTarget:
    """Writes each object to a temporary file and renames it into place; never outside the root.

    Keys the file system cannot hold are Unrepresentable (reported, not written): `..`, `.` or
    empty segments, absolute keys, backslashes, NUL, names longer than the file system allows, a
    key that is also another key's directory, and, where the file system folds case or Unicode
    normalisation (macOS, Windows), a second key that folds to the name of one already written."""

    def __init__(self, root: str):
        self.root = Path(root).resolve()
        self.url = str(self.root)
        try:  # a file in the way or a place nobody may write: one line before any object is tried
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"{self.url}: the restore target exists and is not a directory") from None
        except OSError as e:
            raise StoreError(f"{self.url}: cannot create the restore target: {e.strerror or e}") from None
        self._fold = None  # how this file system folds names; probed at the first write
        self._folded: dict[str, str] = {}  # folded name -> key written (only on folding file systems)
        self._dirs: set[str] = set()  # directories made and found to lie under the root
        self._tmp_prefix, self._tmp_seq = f".restore-{uuid.uuid4().hex[:16]}-", itertools.count()
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        """Where the key goes; Unrepresentable if it is no plain relative path or would lead outside
        the root (through a symbolic link on the way: its directory is resolved, once per directory)."""
        d, name = self._place(key)
        return Path(d, name)

    def _place(self, key: str) -> tuple[str, str]:
        """(directory, file name) of the key, as strings: tens of thousands of small files a second
        are restored, and Path objects cost more than the writes."""
        if not key or key[0] == "/" or "\\" in key or "\0" in key or any(p in ("", ".", "..") for p in key.split("/")):
            raise Unrepresentable(f"key {key!r} cannot be a path under {self.url}")
        rel, _, name = key.rpartition("/")
        d = f"{self.url}/{rel}" if rel else self.url
        if d not in self._dirs and not Path(d).resolve().is_relative_to(self.root):
            raise Unrepresentable(f"key {key!r} leads outside {self.url}")
        return d, name

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        d, name = self._place(key)
        p = f"{d}/{name}"
        tmp = None
        try:
            self._make_dir(d)
            self._claim(key)
            tmp = f"{d}/{self._tmp_prefix}{next(self._tmp_seq)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)  # os.open: no buffering,
            try:  # nor its extra system calls per file (thousands of small objects)
                for c in chunks:
                    write_all(fd, c)
            finally:
                os.close(fd)
            os.replace(tmp, p)  # over a symbolic link, the link itself is replaced: never written through
            tmp = None
        except (NotADirectoryError, IsADirectoryError, FileExistsError):
            raise Unrepresentable(f"key {key!r} collides with another key's directory under {self.url}") from None
        except OSError as e:
            if e.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
                raise Unrepresentable(f"key {key!r} cannot be a file name under {self.url}: {e.strerror}") from None
            raise StoreError(f"cannot write {p}: {e.strerror}") from None
        finally:
            if tmp is not None:  # whatever failed, no partial file is left behind
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def folds(self) -> bool:
        """Whether this file system folds names (case, Unicode normalisation): probed once, the
        root made if it is not there yet."""
        with self._lock:
            if self._fold is None:
                os.makedirs(self.root, exist_ok=True)
                self._fold = _probe_folding(self.root)
            return bool(self._fold)

    def _make_dir(self, d: str) -> None:
        """Make a key's directory (once per directory), and check it still lies under the root."""
        if d in self._dirs:
            return
        os.makedirs(d, exist_ok=True)
        if not Path(d).resolve().is_relative_to(self.root):
            raise StoreError(f"cannot write under {d}: it leads outside {self.url}")
        with self._lock:
            self._dirs.add(d)

    def _claim(self, key: str) -> None:
        """On a file system that folds names, refuse a key whose folded name another key holds."""
        with self._lock:
            if self._fold is None:
                self._fold = _probe_folding(self.root)
            if not self._fold:
                return
            folded = self._fold(key)
            other = self._folded.setdefault(folded, key)
        if other != key:
            raise Unrepresentable(f"key {key!r} and key {other!r} are the same file name under {self.url} "
                                  "(it ignores case or Unicode normalisation)")


def _probe_folding(root: Path):
    """A function folding keys as this file system folds names, or False if it keeps them all apart."""
    probe = root / f".restore-probe-{uuid.uuid4().hex}"
    probe.mkdir()
    try:
        (probe / "a\u00e9").touch()  # "aé" in NFC
        case = (probe / "A\u00e9").exists()
        norm = (probe / "ae\u0301").exists()  # the same in NFD
    finally:
        for f in probe.iterdir():
            f.unlink()
        probe.rmdir()
    if not case and not norm:
        return False

    def fold(key: str) -> str:
        key = unicodedata.normalize("NFC", key) if norm else key
        return key.casefold() if case else key

    return fold


class FsspecTarget:
    def __init__(self, url: str, options: dict[str, Any]):
        import fsspec

        shown = redact(url)  # sftp://user:password@host/...: never in a message
        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except (ImportError, ValueError, TypeError) as e:
            raise StoreError(f"{shown}: bad restore target: {redact(str(e))}") from None
        except Exception as e:  # filesystems that connect at once (sftp): refused, unknown host, ...
            raise StoreError(f"{shown}: cannot reach the target: {first_line(e)}") from None
        self.root = root.rstrip("/")
        self.url = shown
        proto = self.fs.protocol
        self.protocol = proto[0] if isinstance(proto, (tuple, list)) else proto
        try:
            if not self.fs.exists(self.root):
                self.fs.mkdir(self.root, create_parents=True)
        except Exception as e:
            raise StoreError(f"{shown}: cannot reach or create the target: {first_line(e)}") from None

    def write(self, key: str, chunks: Iterator[bytes]) -> None:
        # S3 keys are flat strings: `a//b`, `/x`, `../y` are ordinary keys there, written as they are.
        flat = self.protocol in ("s3", "s3a")
        if flat and key.endswith("/"):
            return self._put_slash_key(key, chunks)
        if not key or key.endswith("/") or ("//" in key and not flat):
            raise Unrepresentable(f"key {key!r} cannot be written to {self.url}")
        try:
            # Parts of 8 MiB: memory per restoring worker stays small whatever the object size.
            with self.fs.open(f"{self.root}/{key}", "wb", block_size=PART_SIZE) as f:
                for c in chunks:
                    f.write(c)
        except Exception as e:
            raise StoreError(f"{self.url}: cannot write an object: {first_line(e)}") from None

    def _put_slash_key(self, key: str, chunks: Iterator[bytes]) -> None:
        """A key ending in "/" that holds bytes: s3fs would drop the slash, so one PutObject, its
        body in memory (such keys are rare and small; a large one is reported, not written)."""
        body = bytearray()
        for c in chunks:
            body += c
            if len(body) > _SLASH_KEY_MAX:
                raise Unrepresentable(f"key {key!r} ends in '/' and holds more than {_SLASH_KEY_MAX >> 20} MiB: "
                                      f"not written to {self.url}")
        bucket, _, prefix = self.root.partition("/")
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=bytes(body))
        except Exception as e:
            raise StoreError(f"{self.url}: cannot write an object: {first_line(e)}") from None


_SLASH_KEY_MAX = 64 << 20

