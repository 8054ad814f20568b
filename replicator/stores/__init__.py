"""Vault backends behind one narrow protocol, chosen by URL scheme."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from replicator.stores.base import Store, check_name  # noqa: F401


def open_store(url: str, options: dict[str, Any] | None = None, bandwidth=None, immutability=None) -> Store:
    """`file:///x` or a plain path -> LocalStore; `libcloud://PROVIDER/CONTAINER/PREFIX` ->
    LibcloudStore; any other fsspec URL -> FsspecStore.
    With [vault.immutability] (anything with .mode and .retain_days), the store is wrapped in an
    ImmutableStore (every put carries provider retention); with a bandwidth setting, the result is
    wrapped in a ThrottledStore. Between the two, always, a RetryingStore: the bucket paces each
    transfer once, and the retry budget measures the store's failures, not our own pacing."""
    store = _open(url, options or {})
    if immutability is not None:
        from replicator.stores.immutable import ImmutableStore

        store = ImmutableStore(store, immutability.mode, immutability.retain_days)
    from replicator.stores.retry import RetryingStore

    store = RetryingStore(store)
    if bandwidth:
        from replicator.stores.throttle import BandwidthSchedule, ThrottledStore, TokenBucket

        store = ThrottledStore(store, TokenBucket(BandwidthSchedule.parse(bandwidth).rate))
    return store


def _open(url: str, options: dict[str, Any]) -> Store:
    scheme = urlparse(url).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and url[1:3] == ":\\"):
        from replicator.stores.local import LocalStore

        return LocalStore(url[len("file://"):] if url.startswith("file://") else url)
    if scheme.lower() == "libcloud":
        from replicator.stores.libcloud_store import LibcloudStore

        return LibcloudStore(url, options)
    from replicator.stores.fsspec_store import FsspecStore

    return FsspecStore(url, options)
