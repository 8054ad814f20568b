"""`replicator status`: per job, the last success, the last error, the next run and the lag (and,
with events, the replication lag and what events missed)."""

from __future__ import annotations

from datetime import datetime, timezone

from replicator.units import format_age


def add_parser(sub) -> None:
    p = sub.add_parser("status", help="per job: last success, last error, next run, lag",
                       description="Show, from the local catalogue, how each configured job is doing. The lag is "
                                   "the age of the last good copy: how much history an incident now would lose. For a job "
                                   "with [jobs.events], also the replication lag of its last event run (source "
                                   "write to vault snapshot) and how many changes reconciliation found that events missed.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config
    exists = (cfg.state_dir / "catalogue.db").exists()
    cat = ctx.catalogue() if exists else None
    now = datetime.now(timezone.utc)
    jobs = []
    for job in cfg.jobs:
        info = {"job": job.name, "schedule": job.schedule, "last_success": None, "last_error": None,
                "next_run": None, "breaker": None, "lag_seconds": None, "snapshot": None, "snapshot_time": None, "live_objects": None,
                "replication_lag_seconds": None, "events": None}
        if cat is not None:
            info.update(cat.last_runs(job.name))
            info["next_run"] = cat.meta(f"next_run:{job.name}")
            info["breaker"] = cat.meta(f"breaker:{job.name}")
            head = cat.head(job.name)
            if head:
                row = cat.db.execute("SELECT started, live FROM snapshots WHERE job=? AND seq=?", (job.name, head[0])).fetchone()
                info.update(snapshot=head[0], snapshot_time=row[0], live_objects=row[1])
                started = datetime.fromisoformat(row[0].replace("Z", "+00:00"))
                info["lag_seconds"] = round((now - started).total_seconds())
            if job.events is not None:  # issue 9: source change -> vault snapshot, and what reconciliation caught
                import json

                ev = json.loads(cat.meta(f"events:{job.name}") or "{}")
                info["events"] = {"kind": job.events.kind, "last_event_run": _iso(ev.get("last_run")),
                                  "missed_by_events": ev.get("missed", 0),
                                  "last_reconciliation_missed": (ev.get("last_reconciliation") or {}).get("missed")}
                info["replication_lag_seconds"] = ev.get("lag_seconds")
        jobs.append(info)
    verify = _verify_status(cat)
    lines = [f"{'JOB':<20} {'LAST SUCCESS':<21} {'LAG':>8}  {'NEXT RUN':<21} {'SNAPSHOT':>8}  LAST ERROR"]
    for j in jobs:
        err = f"{j['last_error']['time']}: {j['last_error']['error']}" if j["last_error"] else "-"
        lines.append(f"{j['job']:<20} {j['last_success'] or 'never':<21} {format_age(j['lag_seconds']):>8}  "
                     f"{j['next_run'] or '-':<21} {'-' if j['snapshot'] is None else j['snapshot']:>8}  {err}")
    for j in jobs:
        if j["events"]:
            e = j["events"]
            lag = j.get("replication_lag_seconds")
            lines.append(f"events for {j['job']} ({e['kind']}): replication lag {'-' if lag is None else f'{lag:.1f}s'} "
                         f"(last event run {e['last_event_run'] or 'never'}); changes found by reconciliation, "
                         f"missed by events: {e['missed_by_events']}")
    for j in jobs:
        if j["breaker"]:
            lines.append(f"BREAKER TRIPPED for {j['job']}: {j['breaker']} (holding the previous versions; "
                         f"`replicator approve {j['job']}` if the change was intended)")
    lines += verify.pop("lines")
    ctx.emit({"jobs": jobs, "verify": verify}, "\n".join(lines))
    return 0


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _verify_status(cat) -> dict:
    """The last verify and the deep-verify coverage (issue 10), from the catalogue."""
    import json

    from replicator import coverage

    if cat is None:
        return {"last": None, "coverage": None, "lines": ["verify: no catalogue on this host"]}
    raw = cat.meta("verify:last")
    last = json.loads(raw) if raw else None
    cov = coverage.summary(cat)
    lines = []
    if last:
        when = datetime.fromtimestamp(last["time"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        kind = "deep" if last.get("deep") else "shallow"
        if last.get("deep") and last.get("sample"):
            kind = f"deep {last['sample']:g}% sample"
        lines.append(f"last verify: {when} ({kind}): " + ("OK" if last["ok"] else f"{last['problems']} problems"))
    else:
        lines.append("last verify: never on this host")
    lines.append(coverage.human(cov))
    return {"last": last, "coverage": cov, "lines": lines}


