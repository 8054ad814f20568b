"""Event sources for event-driven replication (issue 9): one small module per provider."""

from __future__ import annotations

from replicator.events.base import CREATED, REMOVED, Event, EventSource, Message  # noqa: F401

KINDS = ("sqs",)  # next: "pubsub" (GCS), "eventgrid" (Azure); docs/OPERATIONS.md says what each needs


def open_events(job, index: int) -> EventSource:
    """The event source of a job with `[jobs.events]` (the job's index in the config names key paths).
    Its options default to the job's source_options; secret references are resolved here."""
    from replicator.config import resolve_secrets

    ev = job.events
    if ev.options is None:
        options = resolve_secrets(job.source_options, f"jobs[{index}].source_options")
    else:
        options = resolve_secrets(ev.options, f"jobs[{index}].events.options")
    if ev.kind == "sqs":
        from replicator.events.sqs import SqsEvents

        return SqsEvents(ev.queue_url, options, job.source, visibility_timeout=ev.visibility_timeout)
    raise ValueError(f"event source kind {ev.kind!r} is not supported")
