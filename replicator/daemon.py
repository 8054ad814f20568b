"""`replicator daemon`: every job on its schedule, until SIGTERM.

- APScheduler runs each job on a cron or interval trigger with jitter; one run of a job
  at a time (an overlapping run is skipped and counted); a run that was due while the
  daemon was down runs once at start.
- SIGTERM/SIGINT: stop scheduling, cancel objects not started, let the ones in hand finish (a
  large one gives up between chunks) with the bandwidth limit lifted, so the stop fits systemd's
  TimeoutStopSec; what finished is recorded as pending (the next run writes the snapshot); exit 0.
- SIGHUP: reload the config; a bad one is rejected and the old one keeps running. A job whose
  schedule is unchanged keeps its next run time; a new job or a changed schedule gets a new
  trigger (and runs at once if a run is overdue by it); a removed job's metrics are dropped.
- Every VAULT_METRICS_EVERY seconds: the verify, probe and coverage metrics from the catalogue,
  so a `replicator verify` by the systemd timer shows without a run.
- systemd: READY=1 when scheduled, WATCHDOG=1 while the main loop is alive, STATUS= lines.
- Metrics at http://[metrics].listen/metrics, and nothing else there.
- Jobs with `[jobs.events]` (issue 9): a consumer thread per job receives the source's change
  events, gathers them for `batch_window` seconds and makes an event run of the keys they name
  (runs.run_event_batch); messages are acked only once a snapshot covers them. An event run and a
  scheduled run of the same job never overlap (one lock per job; each waits for the other), and the
  scheduled run stays the reconciliation that catches lost events.
- Daily: the immutability probe (replicator_vault_protected) and, with [vault.immutability],
  retention extension for what live snapshots reference (replicator/immutability.py).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from replicator import __version__, metrics, schedules, systemd
from replicator.catalogue import Catalogue
from replicator.config import Config, JobConfig
from replicator.errors import ReplicatorError
from replicator.immutability import last_probe, maintain, observe_probe
from replicator.lock import StateLock
from replicator.redact import redact
from replicator.runs import observe_catalogue, observe_stored, observe_vault, run_event_batch, run_one
from replicator.stores.throttle import release
from replicator.units import format_time, parse_duration
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.daemon")
MAX_JITTER = 60.0
MAINTENANCE = "@vault-maintenance"  # not a valid job name, so it cannot collide with one
MAINTENANCE_EVERY = timedelta(days=1)
VAULT_METRICS = "@vault-metrics"
VAULT_METRICS_EVERY = 10  # seconds: point reads of the catalogue's meta
COVERAGE_EVERY = 3600  # seconds: coverage is one pass over the tracked blobs; also after each new verify
INTERNAL = (MAINTENANCE, VAULT_METRICS)


def trigger_for(schedule: str):
    """A cron expression or an interval; jitter is a tenth of the period, at most a minute."""
    if schedules.is_cron(schedule):
        return schedules.cron_trigger(schedule, jitter=int(MAX_JITTER))
    seconds = parse_duration(schedule).total_seconds()
    return IntervalTrigger(seconds=seconds, jitter=min(seconds / 10, MAX_JITTER), timezone=timezone.utc)


class Daemon:
    def __init__(self, load_config, open_vault):
        """load_config() -> Config and open_vault(Config) -> Vault; both raise ReplicatorError."""
        self._load_config, self._open_vault = load_config, open_vault
        self.config: Config = load_config()
        self.vault: Vault = open_vault(self.config)
        self.stop = threading.Event()
        self._reload = threading.Event()
        self._running: dict[str, str] = {}  # job -> what it is doing
        self._lock = threading.Lock()
        self.scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={
            "max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self.http: ThreadingHTTPServer | None = None
        self._job_locks: dict[str, threading.Lock] = {}  # one run of a job at a time, scheduled or event
        self._consumers: dict[str, "EventConsumer"] = {}
        self._schedules: dict[str, str] = {}  # job -> the schedule its trigger was made from
        self._verify_seen: tuple[str | None, float] = (None, 0.0)  # verify record, monotonic time of coverage
        self._counter: threading.Thread | None = None  # counting the stored blobs (_count_stored)
        self._recount = False  # count again once the current count is done

    def job_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._job_locks.setdefault(name, threading.Lock())

    # -- lifecycle -----------------------------------------------------------------

    def serve(self) -> int:
        with StateLock(self.config.state_dir, "daemon", vault=self.vault):
            metrics.BUILD.info({"version": __version__})
            metrics.DAEMON_START.set(time.time())
            self._start_metrics()
            for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                                 (signal.SIGHUP, self._on_hup)):
                signal.signal(sig, handler)
            self._schedule(self.config, first=True)
            self._schedule_vault_metrics()
            self.scheduler.start()
            self._start_consumers(self.config)
            systemd.notify("READY=1")
            self._status()
            log.info("daemon started: %d jobs scheduled", len(self.config.jobs))
            self._loop()
            systemd.notify("STOPPING=1")
            systemd.notify("STATUS=stopping: letting in-flight objects finish")
            log.info("stopping: waiting for running jobs to finish their in-flight objects")
            self._stop_consumers()
            self.scheduler.shutdown(wait=True)
            if self.http:
                self.http.shutdown()
            log.info("daemon stopped")
        return 0

    def _loop(self) -> None:
        interval = systemd.watchdog_interval()
        beat = min(interval, 1.0) if interval else 1.0
        last_ping = 0.0
        while not self.stop.wait(beat):
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if interval and time.monotonic() - last_ping >= interval and self.scheduler.running:
                systemd.notify("WATCHDOG=1")
                last_ping = time.monotonic()
            self._status()

    def _on_stop(self, signum, frame) -> None:
        self.stop.set()
        release(self.vault.store)  # what is in flight finishes at full speed, within TimeoutStopSec

    def _on_hup(self, signum, frame) -> None:
        self._reload.set()

    # -- config and schedule -------------------------------------------------------

    def reload(self) -> None:
        try:
            new = self._load_config()
            if new.vault != self.config.vault:
                vault = self._open_vault(new)
            else:
                vault = self.vault
            if new.state_dir != self.config.state_dir:
                raise ReplicatorError("state.dir cannot change while the daemon runs; restart it")
            if new.vault.url != self.config.vault.url:  # the lease (one writer per vault) is on the old one
                raise ReplicatorError("vault.url cannot change while the daemon runs; restart it")
        except ReplicatorError as e:
            metrics.CONFIG_RELOADS.labels("failure").inc()
            log.error("config reload rejected, the old config keeps running: %s", redact(str(e)))
            return
        other_vault = vault is not self.vault
        with self._lock:
            self.config, self.vault = new, vault
        self._stop_consumers()
        self._schedule(new, first=False)
        if other_vault:
            self._count_stored_soon()
        self._start_consumers(new)
        metrics.CONFIG_RELOADS.labels("success").inc()
        log.info("config reloaded: %d jobs scheduled", len(new.jobs))

    def _schedule(self, cfg: Config, first: bool) -> None:
        """Give each job a trigger, keeping those whose schedule did not change (and so their next run
        time); drop removed jobs. A new trigger runs the job at once if a run is overdue by it (missed
        while the daemon was down, or by a schedule changed to a shorter one). `first`: at start."""
        now = datetime.now(timezone.utc)
        cat = Catalogue(cfg.state_dir / "catalogue.db")
        try:
            cat.bind(self.vault.vault_id)
            for name in set(self._schedules) - {job.name for job in cfg.jobs}:
                self._forget(cat, name)
            for job in cfg.jobs:
                observe_catalogue(cat, job.name)
                if self._schedules.get(job.name) == job.schedule and self.scheduler.get_job(job.name):
                    continue
                last = cat.last_runs(job.name)["last_success"]
                last_dt = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) if last else None
                kwargs = {}
                if schedules.overdue(job.schedule, last_dt, now):
                    kwargs["next_run_time"] = now + timedelta(seconds=1)  # missed: run once now
                self.scheduler.add_job(self._run, trigger_for(job.schedule), args=[job.name], id=job.name,
                                       name=job.name, replace_existing=True, **kwargs)
                self._schedules[job.name] = job.schedule
            if first:  # at start; then after runs that add blobs
                self._count_stored_soon()
            self._schedule_maintenance(cat, now)
        finally:
            cat.close()

    def _forget(self, cat: Catalogue, name: str) -> None:
        """A job removed by a reload: no trigger, no metrics (a stale-copy alert must not fire for it)."""
        if self.scheduler.get_job(name):
            self.scheduler.remove_job(name)
        del self._schedules[name]
        metrics.forget_job(name)
        cat.set_meta(f"next_run:{name}", None)
        log.info("job %s: removed from the config; no longer scheduled", name)

    def _schedule_vault_metrics(self) -> None:
        self.scheduler.add_job(self._observe_vault, IntervalTrigger(seconds=VAULT_METRICS_EVERY, timezone=timezone.utc),
                               id=VAULT_METRICS, name=VAULT_METRICS, replace_existing=True)

    def _observe_vault(self) -> None:
        """Catalogue-derived vault metrics, also when no job runs: a verify made by the systemd timer
        (another process) shows within seconds; coverage is recounted after a new verify, else hourly."""
        with self._lock:
            cfg = self.config
        cat = None
        try:
            cat = Catalogue(cfg.state_dir / "catalogue.db")
            record = cat.meta("verify:last")
            seen, counted = self._verify_seen
            recount = record != seen or time.monotonic() - counted >= COVERAGE_EVERY
            observe_vault(cat, coverage=recount)
            if recount:
                self._verify_seen = (record, time.monotonic())
        except Exception as e:  # a busy or damaged catalogue: the next refresh tries again
            log.warning("vault metrics: %s", redact(str(e)))
        finally:
            if cat is not None:
                cat.close()

    def _count_stored_soon(self) -> None:
        """Count the vault's stored blobs in a thread of its own: one pass over the chunk index (minutes
        for a hundred million chunks) must not hold up READY=1, a reload or a run. Not a scheduler job:
        adding one from a run ending while the scheduler shuts down would deadlock it."""
        with self._lock:
            self._recount = True
            if self._counter is None:
                self._counter = threading.Thread(target=self._count_stored, name="vault-size", daemon=True)
                self._counter.start()

    def _count_stored(self) -> None:
        """Count until no count was asked for meanwhile."""
        while True:
            with self._lock:
                if not self._recount or self.stop.is_set():
                    self._counter = None
                    return
                self._recount, cfg = False, self.config
            cat = None
            try:
                cat = Catalogue(cfg.state_dir / "catalogue.db")
                observe_stored(cat)
            except Exception as e:  # a busy or damaged catalogue: the next run counts again
                log.warning("vault size: %s", redact(str(e)))
            finally:
                if cat is not None:
                    cat.close()

    def _schedule_maintenance(self, cat: Catalogue, now: datetime) -> None:
        """Daily: the immutability probe and, with [vault.immutability], retention extension. A day after
        the last probe (also one `replicator verify` made), or a minute after start if that is overdue."""
        last = last_probe(cat)
        observe_probe(last)
        due = datetime.fromtimestamp(last["time"], timezone.utc) + MAINTENANCE_EVERY if last else now
        self.scheduler.add_job(self._maintain, IntervalTrigger(seconds=MAINTENANCE_EVERY.total_seconds(), jitter=600,
                                                               timezone=timezone.utc),
                               id=MAINTENANCE, name=MAINTENANCE, replace_existing=True,
                               next_run_time=max(due, now + timedelta(seconds=60)))

    def _maintain(self) -> None:
        if self.stop.is_set():
            return
        with self._lock:
            cfg, vault = self.config, self.vault
        try:
            maintain(cfg, vault)
        except ReplicatorError as e:
            log.error("vault maintenance failed: %s", redact(str(e)))
        except Exception:
            log.exception("vault maintenance: unexpected failure")

    def _skipped(self, event) -> None:
        if event.job_id in INTERNAL:
            return
        metrics.JOB_RUNS.labels(event.job_id, "skipped_overlap").inc()
        log.warning("job %s: a run is still going; this scheduled run is skipped", event.job_id)

    # -- runs ---------------------------------------------------------------------

    def _run(self, name: str) -> None:
        if self.stop.is_set():
            return
        with self._lock:
            cfg, vault = self.config, self.vault
        try:
            job: JobConfig = cfg.job(name)
        except ReplicatorError:
            return  # removed by a reload
        lock = self.job_lock(name)
        while not lock.acquire(timeout=0.5):  # an event run of the job is going: it is short
            if self.stop.is_set():
                return
        self._running[name] = "running"
        self._status()
        try:
            outcome = run_one(cfg, vault, job, stop=self.stop)
            if outcome.stats is None:
                log.error("job %s: run failed: %s", name, outcome.error)
            elif not outcome.ok and not outcome.stats.stopped:
                log.error("job %s: run finished with errors: %s", name, "; ".join(outcome.stats.errors[:5]))
            if outcome.stats is not None and outcome.stats.copied:
                self._count_stored_soon()
        except ReplicatorError as e:
            log.error("job %s: run failed: %s", name, redact(str(e)))
        except Exception:
            log.exception("job %s: unexpected failure", name)
        finally:
            lock.release()
            self._running.pop(name, None)
            if name not in self._schedules:  # removed by a reload while it ran: its metrics go too
                metrics.forget_job(name)
            self._status()

    # -- event consumers (issue 9) ----------------------------------------------------------

    def _start_consumers(self, cfg: Config) -> None:
        for index, job in enumerate(cfg.jobs):
            if job.events is not None:
                c = EventConsumer(self, cfg, job, index)
                self._consumers[job.name] = c
                c.start()
        if self._consumers:
            log.info("consuming events for %s", ", ".join(sorted(self._consumers)))

    def _stop_consumers(self) -> None:
        consumers, self._consumers = list(self._consumers.values()), {}
        for c in consumers:
            c.halt.set()
        for c in consumers:
            c.join()

    def _status(self) -> None:
        jobs = self.scheduler.get_jobs() if self.scheduler.running else []
        nexts = []
        cat = None
        for j in jobs:
            if j.next_run_time and j.id not in INTERNAL:
                metrics.JOB_NEXT_RUN.labels(j.id).set(j.next_run_time.timestamp())
                nexts.append((j.next_run_time, j.id))
        if self._running:
            text = "running " + ", ".join(sorted(self._running))
        elif nexts:
            t, jid = min(nexts)
            text = f"idle; next: {jid} at {format_time(t)}"
        else:
            text = "idle"
        systemd.notify(f"STATUS={text}")
        try:  # `replicator status` (another process) reads the next run times from the catalogue
            cat = Catalogue(self.config.state_dir / "catalogue.db")
            for t, jid in nexts:
                cat.set_meta(f"next_run:{jid}", format_time(t))
        except ReplicatorError:
            pass
        finally:
            if cat is not None:
                cat.close()

    # -- metrics endpoint ------------------------------------------------------------

    def _start_metrics(self) -> None:
        listen = self.config.metrics_listen
        if not listen:
            return
        host, port = listen.rsplit(":", 1)
        try:
            self.http = ThreadingHTTPServer((host or "127.0.0.1", int(port)), _MetricsHandler)
        except OSError as e:
            raise ReplicatorError(f"metrics.listen: cannot listen on {listen}: {e.strerror}") from None
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics at http://%s/metrics", listen)


class EventConsumer(threading.Thread):
    """Receives one job's events, gathers them for the batch window, runs them, acks what a snapshot
    covers. On halt (reload) or stop (SIGTERM) it lets go of what it holds: those messages are
    delivered again at once, to this daemon's next consumer or the next start."""

    POLL = 2  # seconds of long poll while idle: how soon a halt or stop is noticed
    MAX_KEYS = 5000  # an event run covers at most this many keys; more wait for the next one
    RETRY = 5.0  # seconds to wait after a failure to reach the queue, doubling up to RETRY_MAX
    RETRY_MAX = 120.0

    def __init__(self, daemon: Daemon, cfg: Config, job: JobConfig, index: int):
        super().__init__(name=f"events-{job.name}", daemon=True)
        self.d, self.cfg, self.job, self.index = daemon, cfg, job, index
        self.halt = threading.Event()
        self.source = None
        self.failed_since: float | None = None  # oldest event time of a batch whose run failed (it comes back)

    def stopping(self) -> bool:
        return self.halt.is_set() or self.d.stop.is_set()

    def run(self) -> None:
        from replicator.events import open_events

        name = self.job.name
        gauge = metrics.EVENTS_OLDEST_PENDING.labels(name)
        gauge.set(0)
        failures = 0
        while not self.stopping():
            held = []
            try:
                if self.source is None:
                    self.source = open_events(self.job, self.index)
                held = self._gather()
                failures = 0
                if held:
                    self._handle(held)
                    held = []
            except _Stopping:
                break
            except ReplicatorError as e:
                failures += 1
                metrics.JOB_ERRORS.labels(name, "events").inc()
                log.error("job %s: events: %s", name, redact(str(e)))
                self.halt.wait(min(self.RETRY * 2 ** (failures - 1), self.RETRY_MAX))
            except Exception:
                failures += 1
                metrics.JOB_ERRORS.labels(name, "events").inc()
                log.exception("job %s: events: unexpected failure", name)
                self.halt.wait(min(self.RETRY * 2 ** (failures - 1), self.RETRY_MAX))
            finally:
                if held and self.source is not None:
                    self.source.release(held)
                gauge.set(self.failed_since or 0)  # a failed batch is still uncovered: the lag alert sees it

    def _gather(self) -> list:
        """The first messages (long poll), then whatever arrives within the batch window."""
        messages = self.source.receive(wait=self.POLL)
        if not messages:
            return []
        deadline = time.monotonic() + self.job.events.batch_window
        while not self.stopping() and sum(len(m.events) for m in messages) < self.MAX_KEYS:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = self.source.receive(wait=int(left))
            messages += more
            if not more:
                self.halt.wait(min(left, 0.1))
        return messages

    def _handle(self, messages: list) -> None:
        name = self.job.name
        events = [e for m in messages for e in m.events]
        metrics.EVENTS_RECEIVED.labels(name).inc(len(events))
        if not events:  # test events, other buckets or prefixes: nothing to do
            self.source.ack(messages)
            return
        times: dict[str, float] = {}
        for e in events:
            times[e.key] = max(times.get(e.key, 0.0), e.time)
        metrics.EVENTS_OLDEST_PENDING.labels(name).set(min(min(times.values()), self.failed_since or float("inf")))
        lock = self.d.job_lock(name)
        while not lock.acquire(timeout=0.5):  # a scheduled run of the job is going: the events wait
            if self.stopping():
                raise _Stopping
        try:
            if self.stopping():
                raise _Stopping
            with self.d._lock:
                cfg, vault = self.cfg, self.d.vault
            outcome = run_event_batch(cfg, vault, self.job, list(times), times, stop=self.d.stop)
        finally:
            lock.release()
        stats = outcome.stats
        if outcome.ok or (stats is not None and stats.breaker and stats.seq is not None):
            self.source.ack(messages)  # the snapshot covering them is in the vault (or nothing needed one)
            self.failed_since = None
            return
        if stats is not None and self.d.stop.is_set():
            raise _Stopping
        why = outcome.error or "; ".join(stats.errors[:3])
        log.error("job %s: event run failed (%s); its %d messages come back after the visibility timeout",
                  name, why, len(messages))
        self.failed_since = min(self.failed_since or float("inf"), min(times.values()))


class _Stopping(Exception):
    """Halted or stopped while holding messages: they are released."""


class _MetricsHandler(BaseHTTPRequestHandler):
    """/metrics only: no index, no config, no debug pages."""

    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = generate_latest(metrics.REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass
