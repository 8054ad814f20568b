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

    # Optional (issue 7): a source whose large objects are best read as concurrent ranges sets
    # `parallel_parts = True` and offers `read_part(item, start, end) -> bytes` and
    # `finish_parts(item)` (raises SourceChanged if the item changed while its parts were read);
    # the engine then reads a large object's chunks in parallel. Otherwise it reads them with read().

    def check(self) -> None:
        """Reach the source read-only; raise SourceError if it cannot be listed."""
        ...
