"""Sources: what the replicator reads. Each yields SourceItems and reads their content in chunks."""

from __future__ import annotations

from replicator.sources.base import SourceItem, Source  # noqa: F401


def open_source(job, options: dict, state_dir=None, catalogue=None) -> "Source":
    """The source for a job's `kind`. `state_dir` is where a source may keep working state (mirrors).
    git and svn sources read the job's head state from `catalogue` (else from the one in state_dir)."""
    from replicator.errors import ConfigError
    from replicator.units import KeyFilter

    if job.kind == "objects":
        from replicator.sources.objects import ObjectSource

        source = ObjectSource(job.source, options, KeyFilter(job.include, job.exclude))
        if job.inventory is not None:
            source.inventory = _inventory(job, source, options)
        return source
    if job.kind in ("git", "svn"):  # include/exclude select repositories by name
        from replicator.sources.git import GitSource
        from replicator.sources.svn import SvnSource

        cls = GitSource if job.kind == "git" else SvnSource
        return cls(job, options, state_dir, catalogue, KeyFilter(job.include, job.exclude))
    raise ConfigError(f"jobs[{job.name}].kind", f"kind {job.kind!r} is not supported yet")


def _inventory(job, source, options: dict):
    """The job's S3 Inventory listing, read with its own options or the source's."""
    from replicator import config as configmod
    from replicator.sources.inventory import InventoryListing

    inv = job.inventory
    fs = source.fs
    if inv.options is not None:
        import fsspec

        fs = fsspec.filesystem("s3", **configmod.resolve_secrets(inv.options, "inventory.options"), skip_instance_cache=True)
    bucket, _, prefix = source.root.partition("/")
    location = inv.location.split("://", 1)[1].rstrip("/")
    return InventoryListing(fs, location, bucket, prefix + "/" if prefix else "", source.accept, inv.max_age)
