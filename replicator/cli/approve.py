"""`replicator approve JOB`: accept the changes a tripped breaker is holding back."""

from __future__ import annotations

from datetime import datetime, timezone

from replicator.errors import ReplicatorError
from replicator.units import format_time


def add_parser(sub) -> None:
    p = sub.add_parser("approve", help="accept the mass change a tripped breaker is holding back",
                       description="A tripped breaker keeps the previous versions current while the source looks "
                                   "like it is being destroyed. If the change was intended, approve it: the next run "
                                   "records the deletions and rewrites. Nothing is lost either way: older snapshots "
                                   "keep every version.")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config
    cfg.job(args.job)
    if not (cfg.state_dir / "catalogue.db").exists():
        raise ReplicatorError(f"job {args.job!r} has never run on this host; nothing to approve")
    cat = ctx.catalogue()
    reason = cat.meta(f"breaker:{args.job}")
    if not reason:
        ctx.emit({"job": args.job, "approved": False, "breaker": None}, f"{args.job}: the breaker is not tripped")
        return 0
    cat.set_meta(f"approve:{args.job}", format_time(datetime.now(timezone.utc)))
    ctx.emit({"job": args.job, "approved": True, "breaker": reason},
             f"{args.job}: approved ({reason}); the next run records the held changes")
    return 0
