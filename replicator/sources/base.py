"""The source protocol: list items, then read each one's content as a stream of chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol


@dataclass(frozen=True)
class SourceItem:
    key: str  # relative to the job's source URL
    size: int
    mtime: str | None = None  # ISO 8601, UTC
    etag: str | None = None
    version: str | None = None


class Source(Protocol):
    url: str

    def list(self) -> Iterator[SourceItem]:
        """Every item, each once, any order; memory must not grow with the count."""
        ...

    def read(self, item: SourceItem, chunk_size: int) -> Iterator[bytes]:
        """The item's content in chunks of chunk_size (the last may be shorter).
        Raises SourceChanged if the item changed or vanished since it was listed."""
        ...

    def check(self) -> None:
        """Reach the source read-only; raise SourceError if it cannot be listed."""
        ...
