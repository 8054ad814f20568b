"""`replicator status`: per job, the last success, the last error, the next run and the lag (and,
with events, the replication lag and what events missed).

The next run is what the daemon last wrote to the catalogue: shown only while a daemon runs (the
lock file names a live one) and the time is ahead; otherwise "daemon not running" or "overdue".
A run ended by a graceful stop is shown as such, not as an error.
"""

from __future__ import annotations

import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path

from replicator.units import format_age

# What a stop recorded as a failed run before stops were told apart (meta `stopped:JOB` now).
_OLD_STOP = ("stopped before the snapshot was written", "stopped while listing")
NEXT_RUN_LAG = 10  # seconds a running daemon's recorded next run may be past before it is "overdue"


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
    daemon = daemon_running(cfg.state_dir)
    jobs = []
    for job in cfg.jobs:
        info = {"job": job.name, "schedule": job.schedule, "last_success": None, "last_error": None,
                "next_run": None, "next_run_past": None, "stopped": None, "breaker": None, "lag_seconds": None,
                "snapshot": None, "snapshot_time": None, "live_objects": None,
                "replication_lag_seconds": None, "events": None}
        if cat is not None:
            info.update(cat.last_runs(job.name))
            info.update(_next_run(cat.meta(f"next_run:{job.name}"), now, daemon))
            info["stopped"] = _stop(cat, job.name, info)
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
        nxt = j["next_run"] or ("-" if not j["next_run_past"] else "overdue" if daemon else "daemon not running")
        lines.append(f"{j['job']:<20} {j['last_success'] or 'never':<21} {format_age(j['lag_seconds']):>8}  "
                     f"{nxt:<21} {'-' if j['snapshot'] is None else j['snapshot']:>8}  {err}")
    for j in jobs:
        if j["stopped"]:
            lines.append(f"{j['job']}: the last run was stopped at {j['stopped']} (a graceful stop, not an error) "
                         "before its snapshot; the next run resumes it")
    if not daemon and any(j["next_run_past"] for j in jobs):
        lines.append("daemon: not running (the next runs it had scheduled are past); `systemctl status replicator`")
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
    ctx.emit({"jobs": jobs, "daemon_running": daemon, "verify": verify}, "\n".join(lines))
    return 0


def _next_run(recorded: str | None, now: datetime, daemon: bool) -> dict:
    """The next run time the daemon recorded, while the daemon runs and the time is ahead (it rewrites
    it every second: a few seconds' lag is allowed); else it is reported as past."""
    if recorded is None:
        return {"next_run": None, "next_run_past": None}
    when = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
    if daemon and (now - when).total_seconds() < NEXT_RUN_LAG:
        return {"next_run": recorded, "next_run_past": None}
    return {"next_run": None, "next_run_past": recorded}


def _stop(cat, job: str, info: dict) -> str | None:
    """When the job's last run ended by a graceful stop (newer than its last success and error), else
    None; an old stop recorded as an error is taken out of `last_error`."""
    import json

    recorded = cat.meta(f"stopped:{job}")
    stopped = json.loads(recorded)["time"] if recorded else None
    error = info["last_error"]
    if error and (error["error"] or "").startswith(_OLD_STOP):
        stopped = max(stopped or "", error["time"])
        info["last_error"] = None
    later = [t for t in (info["last_success"], (info["last_error"] or {}).get("time")) if t]
    return stopped if stopped and all(stopped > t for t in later) else None


def daemon_running(state_dir) -> bool:
    """Whether a live `replicator daemon` on this host holds the state directory's lock. Read from the
    lock file's text (it names its holder) without taking the lock, so a starting daemon is never refused."""
    try:
        holder = (state_dir / "lock").read_text(errors="replace")
    except OSError:
        return False
    m = re.match(r"replicator daemon \(pid (\d+) on (.+)\)", holder.strip())
    if not m or m.group(2) != socket.gethostname():
        return False
    pid = int(m.group(1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's (the service's dynamic user)
    try:  # the pid may have been reused since the daemon stopped
        return b"replicator" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: the process is alive


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


