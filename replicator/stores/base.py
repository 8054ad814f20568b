"""The Store protocol: the narrow interface every vault backend implements.

A store is a flat namespace of immutable objects addressed by relative names
(`data/ab/abcd...`, `snapshots/<job>/0000000007`). What an implementation must
guarantee, and what the conformance suite in tests/ checks on every backend:

- `put` is atomic and create-only: a reader sees either nothing or the whole
  object, never a part; a name that exists raises AlreadyExists and the old
  object is untouched. The vault never overwrites.
- read-after-write: once `put` returns, `get`, `stat` and `list` see the object.
- `get(name, offset, length)` returns exactly that byte range (shorter only at
  the end of the object); a missing object raises NotFound.
- `list(prefix)` yields (name, size) for every object whose name starts with
  prefix, each once, in no particular order.
- `delete` exists for the separately authorised retention step only; normal
  operation never calls it.
Errors are translated into the errors.py tree; no provider exception escapes.

Optional capability: provider checksums (issue 10). Where the provider keeps a content
checksum of each object, a store may offer
- `checksum(name) -> str | None`: the checksum the provider reports for the object now,
  tagged with its kind: `md5:<hex>` (S3 single-part ETag, GCS md5Hash, Azure Content-MD5),
  `crc32c:<hex>` (GCS without MD5), `etag:<text>` (an S3 ETag that is not an MD5:
  multipart, SSE-KMS); None where the provider keeps none. A store that just answered
  `stat(name)` remembers what came with it, so asking right after a `stat` costs no request.
- `list_checksums(prefix) -> Iterator[(name, size, checksum)]`: `list` with checksums,
  from the same listing requests (S3 ListObjectsV2 carries ETags, GCS objects.list
  md5Hash/crc32c, Azure List Blobs Content-MD5).
Checksums are compared for equality only (a different kind is a different object).
Wrappers (bandwidth, retention, retries) keep the wrapped store in `.inner` and need not
forward these: `checksums_of(store)` finds the layer that has them. Metadata reads carry
no payload, so nothing a wrapper adds applies to them. Local directories have none.
"""

from __future__ import annotations

import re
from typing import Iterator, Protocol

_BAD = re.compile(r"(^/)|(//)|(^|/)\.\.?(/|$)|[\x00-\x1f\\]")


def check_name(name: str) -> str:
    """Names are validated at the storage boundary: relative, no `..`, no control characters."""
    if not name or _BAD.search(name) or name.endswith("/"):
        raise ValueError(f"invalid store object name {name!r}")
    return name


def is_local(store) -> bool:
    """Whether a store is a directory on this host: a LocalStore's url is its path, every other
    store's (and every wrapper's, which copies it) a URL with a scheme."""
    return "://" not in store.url


class Store(Protocol):
    url: str  # for messages; never carries credentials

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, name: str) -> int: ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]: ...

    def delete(self, name: str) -> None: ...

    def exists(self) -> bool:
        """Whether the root (bucket, container, directory) exists and is reachable."""
        ...

    def create(self) -> None:
        """Create the root (bucket, container, directory) if missing."""
        ...


def checksums_of(store):
    """The layer of a (possibly wrapped) store offering provider checksums, or None."""
    seen = 0
    while store is not None and seen < 20:
        if callable(getattr(store, "list_checksums", None)) and callable(getattr(store, "checksum", None)):
            return store
        store, seen = getattr(store, "inner", None), seen + 1
    return None
