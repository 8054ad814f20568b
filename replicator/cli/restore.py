"""`replicator restore JOB --to URL`: write the objects as they were at TIME to any supported URL."""

from __future__ import annotations

from pathlib import Path

from replicator import config as configmod
from replicator.cli.context import human_bytes
from replicator.errors import EXIT_OK, EXIT_PROBLEMS, UsageError
from replicator.redact import redact


def add_parser(sub) -> None:
    p = sub.add_parser("restore", help="write a job's objects as of a time to any URL",
                       description="Write the objects of JOB as they were at TIME to URL: a local directory, "
                                   "s3://bucket/prefix, gs://, az://, sftp://... Endpoint and credentials of the "
                                   "target come from --to-option (values may be env:NAME or file:/path). A git or svn "
                                   "job rebuilds its repositories in a local directory instead: URL/<repo>.git (bare git, "
                                   "exactly the refs and objects of TIME) or URL/<repo> (svn); there --prefix selects whole repository paths (`team` is team/ and team.git, "
                                   "not team-old).")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--to", required=True, metavar="URL", help="where to write")
    p.add_argument("--to-option", action="append", default=[], metavar="KEY=VALUE",
                   help="target option, e.g. endpoint_url=http://... key=env:AWS_KEY (repeatable)")
    p.add_argument("--at", metavar="TIME", help="ISO 8601 or an age like 3d (default: latest)")
    p.add_argument("--prefix", metavar="P", default="", help="only keys starting with P (git/svn: the repository P, or those under P/)")
    p.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
    p.add_argument("--workers", type=int, metavar="N",
                   help="threads writing objects at once (default 8; from a local vault to a local directory, "
                        "one per CPU: raise it when either is a network mount). Without it, a restore of 2,000 "
                        "objects or more between local disks is written by worker processes ([engine] processes)")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.restore import restore
    from replicator.targets import open_target

    options = configmod.resolve_secrets(configmod.parse_option_pairs(args.to_option, "--to-option"), "--to-option")
    vault = ctx.open_vault(args.key)
    kind = next((j.kind for j in ctx.config.jobs if j.name == args.job), "objects")
    if kind in ("git", "svn") and "://" in args.to and not args.to.startswith("file://"):
        raise UsageError(f"a {kind} job restores repositories into a local directory, not {args.to}")
    target = None if args.dry_run else open_target(args.to, options)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    # Worker processes of a large local restore open the vault as this command did (restore_processes.py).
    reopen = None if ctx.config.path is None else \
        (str(ctx.config.path.resolve()), str(Path(args.key).resolve()) if args.key else None)
    r = restore(vault, args.job, target, args.at, args.prefix, dry_run=args.dry_run, workers=args.workers,
                reopen=reopen, processes=ctx.config.engine.processes)
    verb = "would restore" if r.dry_run else "restored"
    noun = "objects" if r.kind == "objects" else f"{r.kind} repositories"  # git/svn: rebuilt repositories
    human = (f"{args.job}: {verb} {r.objects} {noun} ({human_bytes(r.bytes)}) from snapshot {r.snapshot} "
             f"of {r.time} to {redact(args.to)}")
    if args.prefix and not r.objects and not r.errors and not r.skipped:
        human += f"\nnothing at snapshot {r.snapshot} matches --prefix {args.prefix!r}"
    if r.skipped:
        human += f"\n{len(r.skipped)} keys cannot be represented on the target:\n  " + "\n  ".join(r.skipped[:20])
    if r.errors:
        human += f"\n{len(r.errors)} {noun} failed:\n  " + "\n  ".join(r.errors[:20])
    ctx.emit(r.__dict__, human)
    return EXIT_PROBLEMS if r.errors or r.skipped else EXIT_OK
