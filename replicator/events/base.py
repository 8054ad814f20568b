"""Event sources: what changed in a job's source, as the provider announces it (issue 9).

The protocol is small so that each provider is one module (`sqs.py` today; GCS Pub/Sub and Azure
Event Grid next, see docs/OPERATIONS.md): `receive` a batch of messages, each carrying events
(key, created or removed, when, a sequencer), then `ack` them once the snapshot that covers them
is in the vault, never before: a crash in between leaves them in the queue, to be delivered
again. An event is only a hint of which key to look at: the event run asks the source for the
key's current state, so duplicated, reordered or stale events are harmless, and the scheduled
full run still reconciles what events missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

CREATED = "created"
REMOVED = "removed"


@dataclass(frozen=True)
class Event:
    key: str  # relative to the job's source URL (the source prefix removed)
    kind: str  # CREATED (created or overwritten) | REMOVED
    time: float  # unix time the provider says the change happened
    sequencer: str | None = None  # orders events of one key (S3 `sequencer`); informational only
    etag: str | None = None


@dataclass
class Message:
    """One delivery from the queue: zero or more events (a test event has none) and the handle to ack it."""

    handle: Any
    events: list[Event] = field(default_factory=list)
    id: str = ""


class EventSource(Protocol):
    description: str  # for logs and check-config, without secrets

    def receive(self, wait: float, max_messages: int = 10) -> list[Message]:
        """Messages available now, waiting up to `wait` seconds for the first; [] if none."""
        ...

    def ack(self, messages: list[Message]) -> None:
        """The snapshot covering these messages is written: delete them from the queue."""
        ...

    def release(self, messages: list[Message]) -> None:
        """Received but not covered (stopping, reloading): make them deliverable again now."""
        ...

    def check(self) -> str:
        """Reach the queue read-only; a line for check-config. Raises SourceError."""
        ...
