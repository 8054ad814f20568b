"""Vault backends behind one narrow protocol, chosen by URL scheme."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from replicator.stores.base import Store, check_name  # noqa: F401


def open_store(url: str, options: dict[str, Any] | None = None, bandwidth=None) -> Store:
    """`file:///x` or a plain path -> LocalStore; any other fsspec URL -> FsspecStore.
    With a bandwidth setting, the store is wrapped in a ThrottledStore."""
    store = _open(url, options or {})
    if bandwidth:
        from replicator.stores.throttle import BandwidthSchedule, ThrottledStore, TokenBucket

        store = ThrottledStore(store, TokenBucket(BandwidthSchedule.parse(bandwidth).rate))
    return store


def _open(url: str, options: dict[str, Any]) -> Store:
    scheme = urlparse(url).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and url[1:3] == ":\\"):
        from replicator.stores.local import LocalStore

        return LocalStore(url[len("file://"):] if url.startswith("file://") else url)
    from replicator.stores.fsspec_store import FsspecStore

    return FsspecStore(url, options)
