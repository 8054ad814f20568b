"""One writer per state directory: an flock that names its holder and dies with it."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from replicator.errors import LockedError, ReplicatorError


class StateLock:
    def __init__(self, state_dir: Path, what: str):
        self.path = state_dir / "lock"
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> "StateLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ReplicatorError(f"cannot use the state directory {self.path.parent}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"the state directory {self.path.parent} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"replicator {self.what} (pid {os.getpid()} on {socket.gethostname()})\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the kernel releases the flock; a killed holder releases it too
            self.fd = None
