"""A store wrapper that retries what may succeed on a second try.

Retried: errors flagged `retryable` (503 SlowDown, 500, timeouts, connection resets), with
exponential backoff and full jitter, bounded in attempts and total time (backoff.py).
Not retried: NotFound, AlreadyExists, and conditions that waiting does not fix even though
the store reported them as a plain StoreError: no space, read-only file system, permission
denied, refused credentials (recognised from the error the store translated).

A put that fails ambiguously (the connection broke after the store took the object) and is
retried then finds its own object: AlreadyExists. This wrapper cannot tell whose object that
is, so it raises AlreadyExists as it is; the vault decides (a data blob's name is its
content's hash; a snapshot root, keyring or config is read back and compared: vault._put_idempotent).
A retried delete that finds nothing succeeds (an earlier attempt did delete it).
`list` (and `list_times`, where the store has it) is retried until it yields its first name; a
listing that breaks later raises.
"""

from __future__ import annotations

import errno
from typing import Iterator

from replicator.backoff import Backoff
from replicator.errors import NotFound, StoreError

# errno values of conditions a retry cannot fix (LocalStore keeps the OSError as __context__).
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                     errno.ENAMETOOLONG}
_END = object()


def is_retryable(e: BaseException) -> bool:
    if not isinstance(e, StoreError) or not e.retryable:
        return False
    cause = e.__cause__ or e.__context__
    if isinstance(cause, PermissionError) or (isinstance(cause, OSError) and cause.errno in _PERMANENT_ERRNOS):
        return False
    if getattr(cause, "code", None) in (401, 403):  # libcloud: refused credentials or permissions
        return False
    return True


class RetryingStore:
    def __init__(self, inner, backoff: Backoff | None = None):
        self.inner = inner
        self.url = inner.url
        self.backoff = backoff or Backoff()
        if callable(getattr(inner, "list_times", None)):  # optional capability (prune): offered only if there
            self.list_times = self._list_times

    def _call(self, what: str, fn):
        return self.backoff.call(fn, is_retryable, what)

    def put(self, name: str, data: bytes) -> None:
        self._call(f"put {name}", lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {name}", lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> int:
        return self._call(f"stat {name}", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self._listing(f"list {prefix or '/'}", lambda: self.inner.list(prefix))

    def _list_times(self, prefix: str = ""):
        return self._listing(f"list {prefix or '/'}", lambda: self.inner.list_times(prefix))

    def _listing(self, what: str, make) -> Iterator:
        def start():
            it = iter(make())
            return it, next(it, _END)

        it, first = self._call(what, start)
        if first is _END:
            return
        yield first
        yield from it

    def delete(self, name: str) -> None:
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            try:
                self.inner.delete(name)
            except NotFound:
                if tries == 1:
                    raise

        self._call(f"delete {name}", once)

    def exists(self) -> bool:
        return self._call("exists", self.inner.exists)

    def create(self) -> None:
        self._call("create", self.inner.create)
