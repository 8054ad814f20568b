"""One writer per vault: a second `run` or `daemon` writing to the same vault from another state
directory (another host) is refused, naming the holder.

A vault is append-only, so a lease is a series of small sealed objects, never a file that is
updated or deleted (docs/FORMAT.md §3b):

  leases/<day>/<holder>/<expires>   {"holder": "replicator run (pid N on HOST)", "writer": W,
                                     "since": t, "expires": t}, sealed like a snapshot root
  leases/<day>/<holder>/released    the same, written when the holder stops

<day> is the UTC day the object was written (YYYYMMDD), so a check lists two days at most;
<holder> is random for each process; <expires> is the Unix time (12 digits) until which the
holder claims the vault. It renews the claim every TTL/3, so a killed holder's lease lapses at
most TTL after its last renewal. W names the state directory: a live lease with our own W and
host is a killed predecessor's (we hold that directory's flock), so it is passed over at once.
Lease objects bypass the bandwidth limit: a renewal must not wait behind large transfers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from replicator.errors import AlreadyExists, LockedError, ReplicatorError
from replicator.stores.throttle import ThrottledStore

log = logging.getLogger("replicator.lease")
PREFIX = "leases/"
TTL = float(os.environ.get("REPLICATOR_LEASE_SECONDS", "600"))  # the environment shortens it for tests


class VaultLease:
    def __init__(self, vault, writer: str, holder: str, ttl: float = TTL, clock=time.time):
        self.vault, self.writer, self.holder, self.ttl, self.clock = vault, writer, holder, ttl, clock
        self.store = _unthrottled(vault.store)
        self.host = socket.gethostname()
        self.id = uuid.uuid4().hex[:16]
        self.since = 0.0
        self.renewed = 0.0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> "VaultLease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Claim the vault, or LockedError naming the live holder of another state directory. Two
        claims made at the same moment may both see the other afterwards: then both give way
        (either may try again), never both go ahead."""
        self._refuse_if_held()
        self.since = self.clock()
        self._write(_stamp(self.since + self.ttl))
        self._refuse_if_held(give_way=True)
        self._renewer = threading.Thread(target=self._renew, name="vault-lease", daemon=True)
        self._renewer.start()

    def release(self) -> None:
        if self._renewer is None:
            return
        self._stop.set()
        self._renewer.join(timeout=30)  # a renewal stuck in retries must not hold up a stop
        self._renewer = None
        try:
            self._write("released")
        except ReplicatorError as e:  # the run's own error says why; the lease lapses by itself
            log.info("the vault lease was not released (it lapses by itself): %s", e)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._write(_stamp(self.clock() + self.ttl))
            except Exception as e:  # noqa: BLE001 - whatever it is, the next renewal tries again
                lapsed = self.clock() - self.renewed > self.ttl
                (log.error if lapsed else log.warning)(
                    "could not renew the vault lease%s: %s", " (it has lapsed: another writer may start)" if lapsed
                    else f" (it lapses {self.ttl:.0f}s after the last renewal)", e)

    def _write(self, last: str) -> None:
        now = self.clock()
        day = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d")
        doc = {"holder": self.holder, "writer": self.writer, "host": self.host, "since": self.since,
               "expires": now + self.ttl}
        try:
            self.store.put(f"{PREFIX}{day}/{self.id}/{last}", self.vault.seal_record(json.dumps(doc).encode()))
        except AlreadyExists:  # a renewal within the same second, or a retried put: the claim stands
            pass
        self.renewed = now

    def _refuse_if_held(self, give_way: bool = False) -> None:
        now = self.clock()
        for holder_id, names in _by_holder(self.store, now).items():
            if holder_id == self.id or any(n.endswith("/released") for n in names):
                continue
            latest = max(names)
            if int(latest.rsplit("/", 1)[1]) <= now:
                continue  # lapsed: its holder was killed, or lost the vault for longer than TTL
            doc = _read(self.vault, self.store, latest)
            if doc.get("writer") == self.writer and doc.get("host") == self.host:
                continue  # a killed predecessor in our own state directory (a copy on another host is not)
            if give_way:
                self.release_now()
            until = datetime.fromtimestamp(int(latest.rsplit("/", 1)[1]), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise LockedError(f"the vault {self.vault.store.url} is in use by {doc.get('holder', 'another replicator')} "
                              f"from another state directory (its lease runs until {until}; a killed holder's lapses then)")

    def release_now(self) -> None:
        """Give way before the renewer started: mark our claim released."""
        try:
            self._write("released")
        except ReplicatorError:
            pass


def _stamp(t: float) -> str:
    """An expiry time as a name: whole seconds, rounded up (a claim never ends early), 12 digits."""
    return str(math.ceil(t)).zfill(12)


def _by_holder(store, now: float) -> dict[str, list[str]]:
    """The lease objects of today and yesterday (UTC), by holder."""
    out: dict[str, list[str]] = {}
    for t in (now - 86400, now):
        day = datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%d")
        for name, _ in store.list(f"{PREFIX}{day}/"):
            parts = name.split("/")
            if len(parts) == 4 and (parts[3] == "released" or parts[3].isdigit()):
                out.setdefault(parts[2], []).append(name)
    return out


def _unthrottled(store):
    """The store below the bandwidth limit (stores/throttle.py), with its retries and retention."""
    while isinstance(store, ThrottledStore):
        store = store.inner
    return store


def _read(vault, store, name: str) -> dict:
    try:
        doc = json.loads(vault.open_record(store.get(name), name))
        return doc if isinstance(doc, dict) else {}
    except (ReplicatorError, ValueError):
        return {}  # unreadable: still a live claim, by "another replicator"
