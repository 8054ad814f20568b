"""`replicator ls JOB`: the objects of a job as they were at a point in time."""

from __future__ import annotations

import json
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("ls", help="list a job's objects at a point in time",
                       description="List the objects of JOB as they were at TIME (default: latest snapshot); for a "
                                   "git or svn job, its repositories with their refs or youngest revision.")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--at", metavar="TIME", help="ISO 8601 or an age like 3d (default: latest)")
    p.add_argument("--prefix", metavar="P", default="", help="only keys starting with P")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file (a write-only vault's private key file)")
    p.add_argument("--json", action="store_true", help="JSON lines: one object per line")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.history import History

    vault = ctx.open_vault(args.key)
    history = History.for_job(vault, args.job)
    root = history.select(args.at)
    if root.kind in ("git", "svn"):  # repositories with their refs (git) or youngest revision (svn)
        from replicator.repos import human_summary, iter_summaries

        if not ctx.json:
            ctx.say(f"{args.job}: snapshot {root.seq} of {root.started}")
        for d in iter_summaries(vault, history, root, args.prefix):
            sys.stdout.write((json.dumps(d, sort_keys=True) if ctx.json else human_summary(d)) + "\n")
        return 0
    with history.state(root.seq) as state:
        if not ctx.json:
            ctx.say(f"{args.job}: snapshot {root.seq} of {root.started}")
        for e in state.iter(args.prefix):
            if ctx.json:
                sys.stdout.write(json.dumps({"key": e.key, "size": e.size, "mtime": e.mtime, "etag": e.etag,
                                             "version": e.version}) + "\n")
            else:
                sys.stdout.write(f"{e.size:>12}  {e.mtime or '-':<27}  {printable(e.key)}\n")
    return 0


def printable(key: str) -> str:
    """A key for a terminal: control characters shown as escapes, so a hostile key cannot drive it."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in key)
