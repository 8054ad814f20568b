"""`replicator snapshots`: the snapshots the vault holds, one per completed run."""

from __future__ import annotations

from replicator.cli.context import human_bytes


def add_parser(sub) -> None:
    p = sub.add_parser("snapshots", help="list snapshots with time and counts",
                       description="List every snapshot in the vault (all jobs, or one), read from the vault itself.")
    p.add_argument("--job", metavar="NAME", help="only this job")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.history import History, job_names

    vault = ctx.open_vault(args.key)
    names = job_names(vault)
    seqs = vault.snapshot_seqs()
    rows = []
    for jid, name in sorted(names.items(), key=lambda kv: kv[1]):
        if args.job and name != args.job:
            continue
        h = History(vault, jid, seqs[jid])
        for r in h.visible_roots():
            rows.append({"job": r.job, "seq": r.seq, "time": r.started, "finished": r.finished,
                         "kind": "checkpoint" if r.checkpoint else "delta", **r.stats})
    lines = [f"{'JOB':<20} {'SNAP':>5} {'TIME':<21} {'LIVE':>8} {'CHANGED':>8} {'GONE':>6} {'HELD':>6} {'COPIED':>10}"]
    for r in rows:
        lines.append(f"{r['job']:<20} {r['seq']:>5} {r['time'][:19] + 'Z':<21} {r.get('live', 0):>8} {r.get('changed', 0):>8} "
                     f"{r.get('tombstones', 0):>6} {r.get('held', 0):>6} {human_bytes(r.get('copied_bytes', 0)):>10}")
    if not rows:
        lines = ["no snapshots" + (f" of job {args.job!r}" if args.job else "")]
    ctx.emit({"snapshots": rows}, "\n".join(lines))
    return 0
