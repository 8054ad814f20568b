"""One writer per state directory (an flock that names its holder and dies with it) and, given
the vault, one writer per vault (a lease in the vault: vault/leases.py)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from replicator.errors import LockedError, ReplicatorError


class StateLock:
    def __init__(self, state_dir: Path, what: str, vault=None):
        self.path = state_dir / "lock"
        self.what = what
        self.vault = vault
        self.fd: int | None = None
        self.lease = None

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
        holder = f"replicator {self.what} (pid {os.getpid()} on {socket.gethostname()})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\n".encode(), 0)
        self.fd = fd
        if self.vault is not None:
            from replicator.vault.leases import VaultLease

            try:
                self.lease = VaultLease(self.vault, _writer_id(self.path.parent), holder)
                self.lease.acquire()
            except BaseException:
                self.lease = None
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.fd is not None:
            os.close(self.fd)  # the kernel releases the flock; a killed holder releases it too
            self.fd = None


def _writer_id(state_dir: Path) -> str:
    """A random name for this state directory, made once: the vault lease tells its own from others'."""
    path = state_dir / "writer-id"
    try:
        text = path.read_text().strip()
        if text:
            return text
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ReplicatorError(f"cannot use the state directory {state_dir}: {e.strerror}") from None
    text = os.urandom(16).hex()
    try:
        path.write_text(text + "\n")
    except OSError as e:
        raise ReplicatorError(f"cannot use the state directory {state_dir}: {e.strerror}") from None
    return text
