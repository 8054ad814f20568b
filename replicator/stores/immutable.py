"""Immutability: writes that carry provider retention, and the probe that checks it holds.

`ImmutableStore` wraps the real store directly (retries and a bandwidth limit wrap it, not the
other way round; every wrapper keeps the wrapped store in `.inner`). Its `put` computes retain-until = now + retain_days and hands the write to a
provider *retention backend* (stores/retention.py) that attaches it to the write itself:

    S3     ObjectLockMode + ObjectLockRetainUntilDate on PutObject (same request as If-None-Match)
    GCS    `retention` {mode Locked|Unlocked, retainUntilTime} in the insert's object resource
    Azure  x-ms-immutability-policy-until-date / -mode on Put Blob (version-level WORM)

so no object is ever visible without its retention. Everything else passes through.
Local directories, SFTP and libcloud vaults have no such backend: configuring a mode there is
refused (`require`). The mapping of the two modes:

    compliance -> S3 COMPLIANCE, GCS Locked,   Azure Locked     (nobody can shorten or remove it)
    governance -> S3 GOVERNANCE, GCS Unlocked, Azure Unlocked   (principals with a bypass /
                  override / policy-delete permission can; the probe tries exactly that)

The probe (`probe`) writes a canary `probe/<random>` with the replicator's own credentials and
tries to destroy it. "Destroyed" means: the version of the canary that was written can no
longer be read back (by version id / generation where the store has versions). A delete
marker, a new version on top, or a noncurrent generation are *not* destruction: the written
bytes are still there. The verdict comes from reading the canary back after each attempt,
not from how the provider answered the attempt.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Protocol

from replicator.errors import ConfigError, NotFound, ReplicatorError, StoreError

KEY = "vault.immutability.mode"  # the config key every refusal names
MODES = ("compliance", "governance")
PROBE_PREFIX = "probe/"
PROBE_RETAIN = timedelta(days=1)  # canaries are retained this long (in the configured mode), then expire


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def stronger(a: str | None, b: str) -> str:
    """Of two modes, the one that protects more: retention is never weakened."""
    return "compliance" if "compliance" in (a, b) else b


@dataclass(frozen=True)
class Retention:
    mode: str  # "compliance" | "governance"
    until: datetime  # timezone-aware, UTC


@dataclass
class LockStatus:
    """What the bucket or container says about retention: read back by verify and check-config."""

    provider: str  # s3, gcs, azure, file, sftp, libcloud, ...
    supported: bool  # the provider has per-object retention at all
    enabled: bool  # ... and this bucket/container allows it
    summary: str  # one line for humans
    details: dict[str, Any] = field(default_factory=dict)
    how_to_enable: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Attempt:
    action: str  # what was tried, e.g. "DeleteObject with VersionId"
    outcome: str  # refused | survived | destroyed | error | skipped
    detail: str = ""


@dataclass
class ProbeResult:
    protected: bool | None  # None: could not tell
    how: str  # the first successful destruction, or why it could not tell, or "" when protected
    lock: dict | None
    canary: str | None
    attempts: list[Attempt] = field(default_factory=list)
    immutability: str | None = None  # the configured mode, if any
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return {"protected": self.protected, "how": self.how, "lock": self.lock, "canary": self.canary,
                "attempts": [asdict(a) for a in self.attempts], "immutability": self.immutability, "time": self.time}

    @property
    def can_hide(self) -> str:
        """A delete that only added a delete marker: history survives, but anyone holding these
        credentials can make the vault look empty. "" when no such delete succeeded."""
        a = next((a for a in self.attempts if a.outcome == "survived" and "delete" in a.action.lower()), None)
        return (f"the vault credentials can delete ({a.action} succeeded): history survives behind delete "
                "markers, but anyone holding them can make the vault look empty; deny s3:DeleteObject "
                "(docs/OPERATIONS.md)") if a else ""

    def line(self) -> str:
        if self.protected:
            return "vault is protected: the replicator's own credentials could not delete or overwrite a canary"
        if self.protected is False:
            return f"vault is not protected: {self.how}"
        return f"vault protection unknown: {self.how}"


class RetentionBackend(Protocol):
    """Provider-specific retention on one store (stores/retention.py)."""

    provider: str

    def lock_status(self) -> LockStatus: ...

    def put(self, name: str, data: bytes, retention: Retention) -> None: ...

    def retention(self, name: str) -> Retention | None: ...

    def extend(self, name: str, retention: Retention) -> Retention: ...

    def probe(self, name: str, data: bytes) -> list[Attempt]: ...

    def create_root(self) -> None: ...


def backend_for(store) -> RetentionBackend | None:
    """The retention backend for a raw (unwrapped) store, or None where the provider has none."""
    protocol = getattr(store, "protocol", None)
    if getattr(store, "fs", None) is None or protocol is None:
        return None
    from replicator.stores import retention

    if protocol in ("s3", "s3a"):
        return retention.S3Retention(store)
    if protocol in ("gs", "gcs"):
        return retention.GCSRetention(store)
    if protocol in ("az", "abfs", "abfss"):
        return retention.AzureRetention(store)
    return None


def provider_name(store) -> str:
    p = getattr(store, "protocol", None)
    if p:
        return {"s3a": "s3", "gs": "gcs", "abfs": "azure", "abfss": "azure", "az": "azure", "ssh": "sftp"}.get(p, p)
    return {"LocalStore": "file", "LibcloudStore": "libcloud"}.get(type(store).__name__, type(store).__name__)


def no_retention(store) -> LockStatus:
    name = provider_name(store)
    return LockStatus(name, False, False, f"{name} vaults have no provider-enforced retention",
                      how_to_enable="address the vault as s3://, gs:// or az:// (libcloud:// and file vaults "
                                    "cannot carry retention): an S3 bucket with Object Lock, a GCS bucket with object "
                                    "retention, or an Azure container with version-level immutability (docs/OPERATIONS.md)")


class ImmutableStore:
    """A store whose every put carries retention `mode` until now + `retain_days`."""

    def __init__(self, inner, mode: str, retain_days: int, clock: Callable[[], datetime] = utcnow,
                 backend: RetentionBackend | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown immutability mode {mode!r}")
        self.inner, self.mode, self.retain_days, self.clock = inner, mode, retain_days, clock
        self.url = inner.url
        self.backend = backend if backend is not None else backend_for(inner)
        self._ok: LockStatus | None = None
        self._lock = threading.Lock()

    # -- the check every write depends on ----------------------------------------------

    def lock_status(self) -> LockStatus:
        return self.backend.lock_status() if self.backend else no_retention(self.inner)

    def require(self) -> LockStatus:
        """The bucket honours the configured mode, or ConfigError naming vault.immutability.mode.
        Checked once per store object; the first put checks it too, so nothing is written unprotected."""
        with self._lock:
            if self._ok is None:
                status = self.lock_status()
                if not (status.supported and status.enabled):
                    hint = f"; {status.how_to_enable}" if status.how_to_enable else ""
                    raise ConfigError(KEY, f'"{self.mode}" cannot be honoured by {self.url}: {status.summary}{hint}')
                self._ok = status
            return self._ok

    def retention_from_now(self, days: float | None = None) -> Retention:
        return Retention(self.mode, self.clock() + timedelta(days=self.retain_days if days is None else days))

    # -- Store protocol ---------------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        self.require()
        self.backend.put(name, data, self.retention_from_now())

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(name, offset, length)

    def stat(self, name: str) -> int:
        return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.inner.delete(name)  # the provider refuses while retention holds

    def list_times(self, prefix: str = ""):
        return self.inner.list_times(prefix)

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self) -> None:
        """S3: create the bucket with Object Lock enabled. Elsewhere retention must be enabled when the
        bucket/container is created, by its owner: refuse rather than create one that cannot hold it."""
        if self.backend is None:
            self.require()
        self.backend.create_root()

    # -- retention of existing objects ---------------------------------------------------

    def retention(self, name: str) -> Retention | None:
        self.require()
        return self.backend.retention(name)

    def extend(self, name: str, until: datetime) -> Retention:
        """Lengthen `name`'s retention to at least `until` (never shorten, never weaken the mode)."""
        self.require()
        return self.backend.extend(name, Retention(self.mode, until))


def layers(store) -> Iterator[Any]:
    """The store and every store it wraps (wrappers keep the wrapped one in `.inner`)."""
    seen = 0
    while store is not None and seen < 20:
        yield store
        store, seen = getattr(store, "inner", None), seen + 1


def find_immutable(store) -> ImmutableStore | None:
    return next((s for s in layers(store) if isinstance(s, ImmutableStore)), None)


def innermost(store):
    return list(layers(store))[-1]


def hidden_by_delete_markers(store, name: str) -> bool:
    """Whether `name` is missing only because a delete marker hides its versions (S3 with
    versioning): a vault "deleted" with credentials that can delete, yet intact underneath."""
    raw = innermost(store)
    backend = backend_for(raw)
    if backend is None or not hasattr(backend, "hidden"):
        return False
    try:
        return backend.hidden(name)
    except ReplicatorError:  # e.g. no s3:ListBucketVersions: cannot tell, as before
        return False


def require_protection(store) -> LockStatus | None:
    """With [vault.immutability]: ConfigError unless the vault can honour it. Without: None."""
    imm = find_immutable(store)
    return imm.require() if imm is not None else None


# -- the probe ------------------------------------------------------------------------------


def probe(store) -> ProbeResult:
    """Write a canary with the replicator's own credentials and try to destroy it.

    With [vault.immutability] (and a bucket that supports it) the canary carries the configured
    mode for PROBE_RETAIN, exactly as vault objects carry it; without, it is written like any
    object (so a bucket default retention, a container policy or missing delete rights show)."""
    imm = find_immutable(store)
    raw = innermost(store)
    backend = imm.backend if imm is not None else backend_for(raw)
    try:
        lock = backend.lock_status() if backend else no_retention(raw)
        lock_dict = lock.as_dict()
    except ReplicatorError as e:
        lock, lock_dict = None, {"error": str(e)}
    name = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    data = b"replicator immutability canary\n" + os.urandom(32)
    result = ProbeResult(None, "", lock_dict, name, immutability=imm.mode if imm else None)
    try:
        if imm is not None and backend is not None and lock is not None and lock.enabled:
            backend.put(name, data, imm.retention_from_now(PROBE_RETAIN / timedelta(days=1)))
        else:
            raw.put(name, data)
    except (StoreError, ConfigError) as e:
        result.how = f"could not write the canary {name}: {e}"
        return result
    try:
        result.attempts = backend.probe(name, data) if backend else generic_probe(raw, name, data)
    except Exception as e:  # e.g. the canary cannot even be looked up: nothing is proven
        result.how = f"probe of {name} failed: {_short(e)}"
        return result
    destroyed = [a for a in result.attempts if a.outcome == "destroyed"]
    errors = [a for a in result.attempts if a.outcome == "error"]
    if destroyed:
        result.protected, result.how = False, f"{destroyed[0].action} destroyed the canary {name} ({destroyed[0].detail})"
    elif errors:
        result.how = f"{errors[0].action} on the canary {name}: {errors[0].detail}"
    elif not any(a.outcome == "refused" for a in result.attempts):
        result.how = f"no destructive attempt could be made on the canary {name}"
    else:
        result.protected = True
    return result


_BUGS = (TypeError, AttributeError, NameError, ImportError, AssertionError)


class Checker:
    """Runs one destructive attempt and reads the canary back: the read decides the outcome."""

    def __init__(self, alive: Callable[[], bool]):
        self.alive = alive
        self.attempts: list[Attempt] = []
        self.destroyed = False

    def attempt(self, action: str, fn: Callable[[], Any], survived: str = "succeeded, but the canary is intact") -> Attempt:
        if self.destroyed:
            a = Attempt(action, "skipped", "the canary is already gone")
            self.attempts.append(a)
            return a
        try:
            fn()
            failure = None
        except _BUGS as e:  # our mistake, not the provider's refusal: proves nothing
            a = Attempt(action, "error", f"the attempt itself failed: {_short(e)}")
            self.attempts.append(a)
            return a
        except Exception as e:  # the provider's refusal, in whatever form it takes
            failure = _short(e)
        try:
            intact = self.alive()
        except Exception as e:
            a = Attempt(action, "error", f"cannot read the canary back: {_short(e)}")
        else:
            if not intact:
                self.destroyed = True
                a = Attempt(action, "destroyed", "it succeeded" if failure is None else f"it answered {failure}, yet the canary is gone")
            elif failure is None:
                a = Attempt(action, "survived", survived)
            else:
                a = Attempt(action, "refused", failure)
        self.attempts.append(a)
        return a


def generic_probe(store, name: str, data: bytes) -> list[Attempt]:
    """Stores without versions or retention (local, SFTP, libcloud): delete through the Store protocol."""

    def alive() -> bool:
        try:
            return store.get(name) == data
        except NotFound:
            return False

    c = Checker(alive)
    c.attempt("delete", lambda: store.delete(name))
    return c.attempts


def _short(e: BaseException) -> str:
    from replicator.redact import first_line

    return f"{type(e).__name__}: {first_line(e)}"[:300]
