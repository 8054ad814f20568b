"""`replicator status`: per job, the last success, the last error and the head snapshot."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="per job: last success, last error, head snapshot",
                       description="Show, from the local catalogue, how each configured job is doing.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config
    exists = (cfg.state_dir / "catalogue.db").exists()
    cat = ctx.catalogue() if exists else None
    jobs = []
    for job in cfg.jobs:
        info = {"job": job.name, "schedule": job.schedule, "last_success": None, "last_error": None,
                "snapshot": None, "snapshot_time": None, "live_objects": None}
        if cat is not None:
            info.update(cat.last_runs(job.name))
            head = cat.head(job.name)
            if head:
                row = cat.db.execute("SELECT started, live FROM snapshots WHERE job=? AND seq=?", (job.name, head[0])).fetchone()
                info.update(snapshot=head[0], snapshot_time=row[0], live_objects=row[1])
        jobs.append(info)
    lines = [f"{'JOB':<20} {'LAST SUCCESS':<21} {'SNAPSHOT':<30} LAST ERROR"]
    for j in jobs:
        snap = f"{j['snapshot']} of {j['snapshot_time']}" if j["snapshot"] is not None else "-"
        err = f"{j['last_error']['time']}: {j['last_error']['error']}" if j["last_error"] else "-"
        lines.append(f"{j['job']:<20} {j['last_success'] or 'never':<21} {snap:<30} {err}")
    ctx.emit({"jobs": jobs}, "\n".join(lines))
    return 0
