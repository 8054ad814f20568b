"""`replicator run`: one replication pass of all jobs (or the named ones), then exit."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from replicator.cli.context import human_bytes
from replicator.errors import EXIT_FATAL, EXIT_OK, EXIT_PROBLEMS, ReplicatorError

if TYPE_CHECKING:
    from replicator.engine import RunStats


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="one replication pass of every job, then exit",
                       description="Copy every new or changed object of each job into the vault and record a "
                                   "snapshot. Unchanged objects cost one listing entry. Objects gone from the source "
                                   "are recorded as tombstones; nothing in the vault is overwritten or deleted.")
    p.add_argument("--job", action="append", metavar="NAME", help="only this job (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list and plan, but write nothing")
    p.add_argument("--workers", type=int, default=8, metavar="N", help="objects copied at once (default 8)")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file (a write-only vault's private key file, to rebuild a lost or stale catalogue)")
    p.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.lock import StateLock
    from replicator.runs import run_one

    cfg = ctx.config
    jobs = [cfg.job(n) for n in args.job] if args.job else list(cfg.jobs)
    if not jobs:
        raise ReplicatorError("the config has no [[jobs]]")
    if args.workers < 1:
        raise ReplicatorError("--workers must be at least 1")
    vault = ctx.open_vault(args.key)
    outcomes = []
    with StateLock(cfg.state_dir, "run", vault=None if args.dry_run else vault):
        for job in jobs:
            progress = _Progress(job.name) if sys.stderr.isatty() and not ctx.json else None
            try:
                outcome = run_one(cfg, vault, job, dry_run=args.dry_run, workers=args.workers, progress=progress)
            finally:
                if progress:
                    progress.done()
            outcomes.append(outcome)
            if ctx.json:
                continue
            if outcome.stats is None:
                ctx.say(f"{job.name}: failed: {outcome.error}")
                continue
            print(_summary(outcome.stats))
            for w in outcome.stats.warnings[:20]:
                ctx.say(f"{job.name}: warning: {w}")
            for e in outcome.stats.errors[:20]:
                ctx.say(f"{job.name}: error: {e}")
    if ctx.json:
        ctx.emit({"jobs": [o.as_dict() for o in outcomes]}, "")
    if all(o.stats is None for o in outcomes):
        return EXIT_FATAL
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_PROBLEMS


def _summary(s: RunStats) -> str:
    if s.dry_run:
        return (f"{s.job}: dry run: {s.listed} listed, would copy {s.to_copy} ({human_bytes(s.to_copy_bytes)}), "
                f"{s.tombstones} would be tombstoned, {s.listed - s.to_copy} unchanged")
    return (f"{s.job}: snapshot {s.seq}: {s.listed} listed, {s.copied} copied ({human_bytes(s.copied_bytes)}), "
            f"{s.unchanged} unchanged, {s.tombstones} tombstoned"
            + (f", {len(s.warnings)} warnings" if s.warnings else "")
            + (f", {len(s.errors)} errors" if s.errors else "") + f" in {s.seconds:.1f}s")


class _Progress:
    """A status line on a terminal: objects, bytes, rate, ETA. Bytes count as their chunks are stored
    (RunStats.stored_bytes), so the line moves while a large object copies; redrawn at most every
    REFRESH seconds (the engine calls at least every engine.PROGRESS_EVERY)."""

    REFRESH = 0.25

    def __init__(self, job: str):
        self.job, self.t0, self.last = job, time.monotonic(), 0.0

    def __call__(self, s: RunStats) -> None:
        now = time.monotonic()
        if now - self.last < self.REFRESH:
            return
        self.last = now
        done = max(s.copied_bytes, s.stored_bytes)  # the process and Dask engines count whole objects
        rate = done / max(now - self.t0, 1e-6)
        left = max(s.to_copy_bytes - done, 0)
        eta = f"ETA {left / rate:.0f}s" if rate > 0 and s.to_copy else ""
        line = (f"{self.job}: listed {s.listed}, copied {s.copied}/{s.to_copy} objects, "
                f"{human_bytes(done)}/{human_bytes(s.to_copy_bytes)}, {human_bytes(rate)}/s {eta}")
        sys.stderr.write("\r" + line[:150].ljust(150))
        sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write("\r" + " " * 150 + "\r")
        sys.stderr.flush()
