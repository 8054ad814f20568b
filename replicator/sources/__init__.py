"""Sources: what the replicator reads. Each yields SourceItems and reads their content in chunks."""

from __future__ import annotations

from replicator.sources.base import SourceItem, Source  # noqa: F401


def open_source(job, options: dict) -> "Source":
    """The source for a job's `kind` (objects today; git and svn are added beside it)."""
    from replicator.errors import ConfigError
    from replicator.units import KeyFilter

    if job.kind == "objects":
        from replicator.sources.objects import ObjectSource

        return ObjectSource(job.source, options, KeyFilter(job.include, job.exclude))
    raise ConfigError(f"jobs[{job.name}].kind", f"kind {job.kind!r} is not supported yet")
