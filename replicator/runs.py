"""One run of one job as the CLI and the daemon both do it: open the source, run the engine,
record the outcome in the catalogue and the metrics. Failures are returned, not logged:
the caller says them once, in its own way."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from replicator import config as configmod
from replicator import metrics, notify
from replicator.catalogue import Catalogue
from replicator.coverage import observe as observe_coverage
from replicator.config import Config, JobConfig
from replicator.engine import Progress, RunStats, run_job
from replicator.event_runs import run_events
from replicator.errors import ReplicatorError, SourceError, StoreError, VaultError
from replicator.redact import redact
from replicator.sources import open_source
from replicator.stores.immutable import require_protection
from replicator.units import format_time
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.runs")


@dataclass
class Outcome:
    job: str
    ok: bool
    stats: RunStats | None = None
    error: str | None = None  # why the run could not be done at all

    def as_dict(self) -> dict:
        d = {"job": self.job, "ok": self.ok}
        if self.stats:
            d.update(self.stats.as_dict())
        if self.error:
            d["error"] = self.error
        return d


def run_one(cfg: Config, vault: Vault, job: JobConfig, *, dry_run: bool = False, workers: int = 8,
            progress: Progress | None = None, stop: threading.Event | None = None) -> Outcome:
    """Run one job; expected failures become an Outcome, not an exception (except integrity ones)."""
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    started = _now()
    t0 = time.monotonic()
    metrics.JOB_RUNNING.labels(job.name).set(1)
    try:
        cat.bind(vault.vault_id)
        require_protection(vault.store)  # [vault.immutability] the bucket cannot honour: ConfigError, nothing written
        index = cfg.jobs.index(job)
        opts = configmod.resolve_secrets(job.source_options, f"jobs[{index}].source_options")
        source = open_source(job, opts, state_dir=cfg.state_dir, catalogue=cat)
        stats = run_job(vault, cat, job, source, dry_run=dry_run, workers=workers,
                        progress=progress or LogProgress(job.name), stop=stop, copier=_copier(cfg, job))
    except (SourceError, VaultError, StoreError) as e:
        kind = "source" if isinstance(e, SourceError) else "vault"
        return _failed(cat, job, started, t0, redact(str(e)), kind, dry_run, cfg.notify.webhook)
    except ReplicatorError as e:
        _failed(cat, job, started, t0, redact(str(e)), "other", dry_run, cfg.notify.webhook)
        raise
    finally:
        metrics.JOB_RUNNING.labels(job.name).set(0)
    if stats.stopped and not dry_run:
        return _stopped(cat, job.name, stats)
    ok = not stats.errors
    if stats.breaker and not dry_run:
        notify.send(cfg.notify.webhook, "breaker_tripped", job=job.name, reason=stats.breaker, held=stats.held,
                    snapshot=stats.seq)
    elif not ok and not dry_run:
        notify.send(cfg.notify.webhook, "run_failed", job=job.name, errors=stats.errors[:10])
    if not dry_run:
        cat.record_run(job.name, stats.started, _now(), ok, redact("; ".join(stats.errors))[:500] or None,
                       stats.copied, stats.copied_bytes, stats.tombstones)
        _observe(cat, job.name, stats, ok, time.monotonic() - t0)
        if job.events is not None and stats.seq:  # reconciliation (not the first snapshot): what events missed
            _observe_missed(cat, job.name, stats)
    cat.close()
    log.info("job %s: run %s: %d listed, %d copied, %d tombstoned, %d warnings, %d errors", job.name,
             "ok" if ok else "failed", stats.listed, stats.copied, stats.tombstones, len(stats.warnings), len(stats.errors))
    return Outcome(job.name, ok, stats)


def _stopped(cat: Catalogue, job: str, stats: RunStats) -> Outcome:
    """A run ended by a graceful stop: not a failure. What it copied is pending (the next run
    resumes); `status` shows the stop from meta `stopped:JOB`, not as an error."""
    metrics.JOB_RUNS.labels(job, "stopped").inc()
    metrics.JOB_OBJECTS_COPIED.labels(job).inc(stats.copied)
    metrics.JOB_BYTES_COPIED.labels(job).inc(stats.copied_bytes)
    metrics.JOB_PENDING.labels(job).set(max(stats.to_copy - stats.copied, 0))
    cat.set_meta(f"stopped:{job}", json.dumps({"time": _now(), "copied": stats.copied, "errors": len(stats.errors)}))
    observe_catalogue(cat, job)
    cat.close()
    log.info("job %s: stopped before its snapshot: %d objects copied and recorded, the next run resumes",
             job, stats.copied)
    return Outcome(job, False, stats)


def _observe_missed(cat: Catalogue, job: str, stats: RunStats) -> None:
    missed = stats.copied + stats.tombstones
    metrics.EVENTS_MISSED.labels(job).inc(missed)
    info = json.loads(cat.meta(f"events:{job}") or "{}")
    info["missed"] = info.get("missed", 0) + missed
    info["last_reconciliation"] = {"time": time.time(), "missed": missed}
    cat.set_meta(f"events:{job}", json.dumps(info))
    if missed:
        log.warning("job %s: reconciliation found %d changes the events had not delivered", job, missed)


def run_event_batch(cfg: Config, vault: Vault, job: JobConfig, keys: list[str], times: dict[str, float], *,
                    workers: int = 8, stop: threading.Event | None = None) -> Outcome:
    """An event run of a job (event_runs.run_events) for `keys`, with `times` the latest event time of each
    key; records the replication lag of what the snapshot recorded. Like run_one, expected failures
    are returned; the caller acks the events only when the outcome says they are covered."""
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    try:
        cat.bind(vault.vault_id)
        require_protection(vault.store)
        index = cfg.jobs.index(job)
        opts = configmod.resolve_secrets(job.source_options, f"jobs[{index}].source_options")
        source = open_source(job, opts, state_dir=cfg.state_dir, catalogue=cat)
        stats = run_events(vault, cat, job, source, keys, workers=workers, stop=stop)
    except (SourceError, VaultError, StoreError) as e:
        metrics.EVENT_RUNS.labels(job.name, "failure").inc()
        metrics.JOB_ERRORS.labels(job.name, "source" if isinstance(e, SourceError) else "vault").inc()
        cat.close()
        return Outcome(job.name, False, error=redact(str(e)))
    except BaseException:
        cat.close()
        raise
    ok = not stats.errors
    metrics.EVENT_RUNS.labels(job.name, "failure" if not ok else "success" if stats.seq is not None else "unchanged").inc()
    metrics.JOB_OBJECTS_COPIED.labels(job.name).inc(stats.copied)
    metrics.JOB_BYTES_COPIED.labels(job.name).inc(stats.copied_bytes)
    metrics.JOB_TOMBSTONES.labels(job.name).inc(stats.tombstones)
    metrics.JOB_ERRORS.labels(job.name, "changed_during_read").inc(len(stats.warnings))
    if stats.newly_tripped:
        notify.send(cfg.notify.webhook, "breaker_tripped", job=job.name, reason=stats.breaker, held=stats.held,
                    snapshot=stats.seq)
    if stats.snapshot_time is not None:
        lags = [max(0.0, stats.snapshot_time - times[k]) for k in stats.changed_keys if k in times]
        for lag in lags:
            metrics.REPLICATION_LAG.labels(job.name).observe(lag)
        if lags:
            metrics.REPLICATION_LAG_LAST.labels(job.name).set(max(lags))
        info = json.loads(cat.meta(f"events:{job.name}") or "{}")
        info.update(last_run=stats.snapshot_time, snapshot=stats.seq, lag_seconds=round(max(lags), 3) if lags else None,
                    recorded=len(stats.changed_keys))
        cat.set_meta(f"events:{job.name}", json.dumps(info))
        log.info("job %s: event run: %d keys, %d copied, %d tombstoned, snapshot %s, lag %s", job.name, stats.keys,
                 stats.copied, stats.tombstones, stats.seq, f"{max(lags):.2f}s" if lags else "-")
    observe_catalogue(cat, job.name)
    cat.close()
    return Outcome(job.name, ok, stats)


class LogProgress:
    """Progress as a log line every 15 s: for journald and log files, where a status line would be noise."""

    def __init__(self, job: str, every: float = 15.0):
        self.job, self.every, self.t0 = job, every, time.monotonic()
        self.last = self.t0

    def __call__(self, s: RunStats) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            done = max(s.copied_bytes, s.stored_bytes)
            rate = done / max(now - self.t0, 1e-6)
            log.info("job %s: progress: %d listed, %d/%d objects, %d/%d bytes copied, %.0f B/s",
                     self.job, s.listed, s.copied, s.to_copy, done, s.to_copy_bytes, rate)


def _failed(cat: Catalogue, job: JobConfig, started: str, t0: float, error: str, kind: str, dry_run: bool,
            webhook: str | None = None) -> Outcome:
    if not dry_run:
        notify.send(webhook, "run_failed", job=job.name, errors=[error])
        cat.record_run(job.name, started, _now(), False, error[:500], 0, 0, 0)
        metrics.JOB_ERRORS.labels(job.name, kind).inc()
        metrics.JOB_RUNS.labels(job.name, "failure").inc()
        metrics.JOB_LAST_RESULT.labels(job.name).set(0)
        metrics.JOB_LAST_RUN.labels(job.name).set(time.time())
        metrics.JOB_LAST_DURATION.labels(job.name).set(time.monotonic() - t0)
    cat.close()
    return Outcome(job.name, False, error=error)


def _observe(cat: Catalogue, job: str, s: RunStats, ok: bool, seconds: float) -> None:
    now = time.time()
    metrics.JOB_RUNS.labels(job, "success" if ok else "failure").inc()
    metrics.JOB_LAST_RESULT.labels(job).set(1 if ok else 0)
    metrics.JOB_LAST_RUN.labels(job).set(now)
    metrics.JOB_LAST_DURATION.labels(job).set(seconds)
    if ok:
        metrics.JOB_LAST_SUCCESS.labels(job).set(now)
    metrics.JOB_OBJECTS_COPIED.labels(job).inc(s.copied)
    metrics.JOB_BYTES_COPIED.labels(job).inc(s.copied_bytes)
    metrics.JOB_OBJECTS_UNCHANGED.labels(job).inc(s.unchanged)
    metrics.JOB_TOMBSTONES.labels(job).inc(s.tombstones)
    metrics.JOB_ERRORS.labels(job, "changed_during_read").inc(len(s.warnings))
    metrics.JOB_ERRORS.labels(job, "source").inc(len(s.errors))
    metrics.JOB_PENDING.labels(job).set(max(s.to_copy - s.copied, 0))
    observe_catalogue(cat, job)


def observe_catalogue(cat: Catalogue, job: str) -> None:
    """Metrics that the catalogue knows: snapshots, live objects, last success (also after a restart)."""
    head = cat.head(job)
    metrics.JOB_SNAPSHOTS.labels(job).set(0 if head is None else head[0] + 1)
    metrics.JOB_BREAKER.labels(job).set(1 if cat.meta(f"breaker:{job}") else 0)
    metrics.JOB_LIVE_OBJECTS.labels(job).set(cat.live_count(job))
    observe_vault(cat)
    last = cat.last_runs(job)["last_success"]
    if last:
        metrics.JOB_LAST_SUCCESS.labels(job).set(datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ")
                                                 .replace(tzinfo=timezone.utc).timestamp())


def observe_vault(cat: Catalogue, coverage: bool = True) -> None:
    """Vault-wide metrics from the catalogue: the last verify and probe (also ones made by
    `replicator verify`: point reads) and, with `coverage`, deep-verify coverage (one pass over the
    tracked blobs). The stored blobs are counted by `observe_stored`."""
    verify = cat.meta("verify:last")
    if verify:
        v = json.loads(verify)
        metrics.VERIFY_LAST.set(v["time"])
        metrics.VERIFY_LAST_RESULT.set(1 if v["ok"] else 0)
        metrics.VERIFY_PROBLEMS.set(v["problems"])
    probe = cat.meta("probe:last")  # written by replicator.immutability.run_probe
    if probe:
        metrics.VAULT_PROTECTED.set(1 if json.loads(probe).get("protected") else 0)
    if coverage:
        observe_coverage(cat)  # replicator_verify_coverage_ratio, replicator_verify_oldest_unverified_age_seconds


def observe_stored(cat: Catalogue) -> None:
    """replicator_vault_blobs and _stored_bytes from the chunk index: one pass over it, so the daemon
    does it at start and after a scheduled run that copied something, not every minute."""
    blobs, size = cat.stored_blobs()
    metrics.VAULT_BLOBS.set(blobs)
    metrics.VAULT_BYTES.set(size)


def _copier(cfg: Config, job: JobConfig):
    """For an objects job: the Dask engine's copier when [engine] kind = "dask"; worker processes
    where the job may copy from a local directory into a local vault (process_engine.py decides
    at the run); else None, the engine's own threads."""
    if job.kind != "objects":
        return None
    if cfg.engine.kind == "dask":
        from replicator.dask_engine import DaskCopier

        return DaskCopier(cfg)
    if cfg.path is None or cfg.engine.processes == 0 or "://" in cfg.vault.url:
        return None
    from replicator.process_engine import ProcessCopier

    return ProcessCopier(cfg)


def _now() -> str:
    return format_time(datetime.now(timezone.utc))
