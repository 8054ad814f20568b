"""`replicator run`: one replication pass of all jobs (or the named ones), then exit."""

from __future__ import annotations

import logging
import sys
import time

from replicator import config as configmod
from replicator.cli.context import human_bytes
from replicator.engine import RunStats, run_job
from replicator.errors import EXIT_FATAL, EXIT_OK, EXIT_PROBLEMS, ReplicatorError, SourceError, VaultError
from replicator.lock import StateLock
from replicator.redact import redact
from replicator.sources import open_source
from replicator.units import format_time

log = logging.getLogger("replicator.run")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="one replication pass of every job, then exit",
                       description="Copy every new or changed object of each job into the vault and record a "
                                   "snapshot. Unchanged objects cost one listing entry. Objects gone from the source "
                                   "are recorded as tombstones; nothing in the vault is overwritten or deleted.")
    p.add_argument("--job", action="append", metavar="NAME", help="only this job (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list and plan, but write nothing")
    p.add_argument("--workers", type=int, default=8, metavar="N", help="objects copied at once (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config
    jobs = [cfg.job(n) for n in args.job] if args.job else list(cfg.jobs)
    if not jobs:
        raise ReplicatorError("the config has no [[jobs]]")
    vault = ctx.open_vault()
    results: list[dict] = []
    fatal = 0
    with StateLock(cfg.state_dir, "run"):
        cat = ctx.catalogue()
        cat.bind(vault.vault_id)
        for job in jobs:
            progress = _Progress(job.name) if sys.stderr.isatty() and not ctx.json else None
            started = format_time_now()
            try:
                opts = configmod.resolve_secrets(job.source_options, f"jobs[{cfg.jobs.index(job)}].source_options")
                source = open_source(job, opts)
                stats = run_job(vault, cat, job, source, dry_run=args.dry_run, workers=args.workers, progress=progress)
            except (SourceError, VaultError) as e:
                fatal += 1
                _record_failure(cat, job.name, started, e)
                results.append({"job": job.name, "ok": False, "error": redact(str(e))})
                ctx.say(f"{job.name}: failed: {redact(str(e))}")
                continue
            except ReplicatorError as e:
                _record_failure(cat, job.name, started, e)
                raise
            finally:
                if progress:
                    progress.done()
            ok = not stats.errors
            if not args.dry_run:
                cat.record_run(job.name, stats.started, format_time_now(), ok, "; ".join(stats.errors)[:500] or None,
                               stats.copied, stats.copied_bytes, stats.tombstones)
            results.append({"ok": ok, **stats.as_dict()})
            if not ctx.json:
                print(_summary(stats))
                for w in stats.warnings[:20]:
                    ctx.say(f"{job.name}: warning: {w}")
                for e in stats.errors[:20]:
                    ctx.say(f"{job.name}: error: {e}")
        cat.close()
    if ctx.json:
        ctx.emit({"jobs": results}, "")
    if fatal == len(jobs):
        return EXIT_FATAL
    return EXIT_PROBLEMS if fatal or any(not r["ok"] for r in results) else EXIT_OK


def _record_failure(cat, job: str, started: str, e: Exception) -> None:
    cat.record_run(job, started, format_time_now(), False, redact(str(e))[:500], 0, 0, 0)


def format_time_now() -> str:
    from datetime import datetime, timezone

    return format_time(datetime.now(timezone.utc))


def _summary(s: RunStats) -> str:
    if s.dry_run:
        return (f"{s.job}: dry run: {s.listed} listed, would copy {s.to_copy} ({human_bytes(s.to_copy_bytes)}), "
                f"{s.tombstones} would be tombstoned, {s.listed - s.to_copy} unchanged")
    return (f"{s.job}: snapshot {s.seq}: {s.listed} listed, {s.copied} copied ({human_bytes(s.copied_bytes)}), "
            f"{s.unchanged} unchanged, {s.tombstones} tombstoned"
            + (f", {len(s.warnings)} warnings" if s.warnings else "")
            + (f", {len(s.errors)} errors" if s.errors else "") + f" in {s.seconds:.1f}s")


class _Progress:
    """A status line on a terminal: objects, bytes, rate, ETA."""

    def __init__(self, job: str):
        self.job, self.t0, self.last = job, time.monotonic(), 0.0

    def __call__(self, s: RunStats) -> None:
        now = time.monotonic()
        if now - self.last < 0.25:
            return
        self.last = now
        rate = s.copied_bytes / max(now - self.t0, 1e-6)
        left = max(s.to_copy_bytes - s.copied_bytes, 0)
        eta = f"ETA {left / rate:.0f}s" if rate > 0 and s.to_copy else ""
        line = (f"{self.job}: listed {s.listed}, copied {s.copied}/{s.to_copy} objects, "
                f"{human_bytes(s.copied_bytes)}/{human_bytes(s.to_copy_bytes)}, {human_bytes(rate)}/s {eta}")
        sys.stderr.write("\r" + line[:150].ljust(150))
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r" + " " * 150 + "\r")
        sys.stderr.flush()
