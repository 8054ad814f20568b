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
