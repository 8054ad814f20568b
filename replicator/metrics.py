"""Prometheus metrics: what operators scrape and alert on. Names are a contract (alerts, dashboard).

Everything here is numbers with a `job` label at most; no config, paths or secrets.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()  # no *_created series: they double the exposition and alert on nothing

REGISTRY = CollectorRegistry(auto_describe=True)


class OptionalGauge:
    """A gauge that is absent until first set: "never measured" must not read as 0 (an alert would fire)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry):
        self.name, self.documentation, self.value = name, documentation, None
        registry.register(self)

    def set(self, value: float) -> None:
        self.value = float(value)

    def collect(self):
        if self.value is not None:
            family = GaugeMetricFamily(self.name, self.documentation)
            family.add_metric([], self.exposed(self.value))
            yield family

    def exposed(self, value: float) -> float:
        return value

    def describe(self):
        return [GaugeMetricFamily(self.name, self.documentation)]


class AgeGauge(OptionalGauge):
    """Set to a unix time; each scrape reports how long ago that was."""

    def exposed(self, value: float) -> float:
        return max(0.0, time.time() - value)


_J = ["job"]
BUILD = Info("replicator_build", "Version of the running replicator", registry=REGISTRY)
JOB_LAST_SUCCESS = Gauge("replicator_job_last_success_timestamp_seconds",
                         "Unix time the job's last successful run finished (its snapshot is the last good copy)", _J, registry=REGISTRY)
JOB_LAST_RUN = Gauge("replicator_job_last_run_timestamp_seconds", "Unix time the job's last run finished", _J, registry=REGISTRY)
JOB_LAST_DURATION = Gauge("replicator_job_last_run_duration_seconds", "Duration of the job's last run", _J, registry=REGISTRY)
JOB_LAST_RESULT = Gauge("replicator_job_last_run_success", "1 if the job's last run succeeded, else 0", _J, registry=REGISTRY)
JOB_RUNS = Counter("replicator_job_runs_total", "Runs of the job by result (success, failure, skipped_overlap, "
                   "stopped: a graceful stop before the snapshot; the next run resumes)",
                   ["job", "result"], registry=REGISTRY)
JOB_OBJECTS_COPIED = Counter("replicator_job_objects_copied_total", "Objects copied into the vault", _J, registry=REGISTRY)
JOB_BYTES_COPIED = Counter("replicator_job_bytes_copied_total", "Bytes of source content copied into the vault", _J, registry=REGISTRY)
JOB_OBJECTS_UNCHANGED = Counter("replicator_job_objects_unchanged_total", "Objects listed and found unchanged (skipped)", _J, registry=REGISTRY)
JOB_TOMBSTONES = Counter("replicator_job_tombstones_total", "Objects recorded as gone from the source", _J, registry=REGISTRY)
JOB_ERRORS = Counter("replicator_job_errors_total", "Errors by kind (source, vault, changed_during_read, events, other)",
                     ["job", "kind"], registry=REGISTRY)
JOB_PENDING = Gauge("replicator_job_objects_pending", "Objects listed but not yet copied in the current or last run", _J, registry=REGISTRY)
JOB_SNAPSHOTS = Gauge("replicator_job_snapshots", "Snapshots of the job in the vault", _J, registry=REGISTRY)
JOB_LIVE_OBJECTS = Gauge("replicator_job_live_objects", "Objects in the job's latest snapshot", _J, registry=REGISTRY)
JOB_NEXT_RUN = Gauge("replicator_job_next_run_timestamp_seconds", "Unix time of the job's next scheduled run", _J, registry=REGISTRY)
JOB_BREAKER = Gauge("replicator_job_breaker_tripped", "1 while the job's mass-change breaker holds changes back", _J, registry=REGISTRY)
JOB_RUNNING = Gauge("replicator_job_running", "1 while a run of the job is in progress", _J, registry=REGISTRY)
VAULT_BYTES = OptionalGauge("replicator_vault_stored_bytes", "Bytes of the vault's content blobs (chunks and packs) that "
                            "the objects of every snapshot use, as the catalogue knows them; manifest pages not counted", registry=REGISTRY)
VAULT_BLOBS = OptionalGauge("replicator_vault_blobs", "Content blobs (chunks and packs) in the vault that the objects of every "
                            "snapshot use, as the catalogue knows them", registry=REGISTRY)
VERIFY_LAST = OptionalGauge("replicator_verify_last_timestamp_seconds", "Unix time the last verify finished", registry=REGISTRY)
VERIFY_LAST_RESULT = OptionalGauge("replicator_verify_last_success", "1 if the last verify found no problem, else 0", registry=REGISTRY)
VERIFY_PROBLEMS = OptionalGauge("replicator_verify_problems", "Problems found by the last verify", registry=REGISTRY)
VERIFY_COVERAGE = OptionalGauge("replicator_verify_coverage_ratio", "Fraction of referenced blobs read by deep verify in the coverage window", registry=REGISTRY)
VERIFY_OLDEST_UNVERIFIED = AgeGauge("replicator_verify_oldest_unverified_age_seconds", "Age of the oldest unverified byte: time since the referenced blob least recently read in full by deep verify was read (never read: first seen)", registry=REGISTRY)
RETENTION_UNTIL = OptionalGauge("replicator_retention_protected_until_timestamp_seconds", "Unix time the earliest "
                                "provider retention among the objects kept snapshots need ends, after the last extension pass "
                                "([vault.immutability])", registry=REGISTRY)
RETENTION_PROBLEMS = OptionalGauge("replicator_retention_last_pass_problems", "Objects the last retention extension pass could "
                                   "not extend (errors) or found missing", registry=REGISTRY)
VAULT_PROTECTED = OptionalGauge("replicator_vault_protected", "1 if the immutability probe found the vault protected against our own credentials, 0 if not, absent if never probed", registry=REGISTRY)
DAEMON_START = Gauge("replicator_daemon_start_timestamp_seconds", "Unix time the daemon started", registry=REGISTRY)
CONFIG_RELOADS = Counter("replicator_config_reloads_total", "Config reloads by result (success, failure)", ["result"], registry=REGISTRY)
# issue 9: event-driven replication (replicator/events/, daemon consumers)
EVENTS_RECEIVED = Counter("replicator_events_received_total", "Source change events received from the job's queue", _J, registry=REGISTRY)
EVENT_RUNS = Counter("replicator_event_runs_total", "Event runs by result (success: snapshot written, unchanged: nothing to record, failure)",
                     ["job", "result"], registry=REGISTRY)
REPLICATION_LAG = Histogram("replicator_replication_lag_seconds",
                            "Seconds from a change in the source (the event's time) to the vault snapshot recording it",
                            _J, buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY)
REPLICATION_LAG_LAST = Gauge("replicator_replication_lag_last_seconds",
                             "Largest replication lag (source change to vault snapshot) in the job's last event run that recorded a change",
                             _J, registry=REGISTRY)
EVENTS_OLDEST_PENDING = Gauge("replicator_events_oldest_pending_timestamp_seconds",
                              "Source time of the oldest event received and not yet covered by a snapshot; 0 when none waits",
                              _J, registry=REGISTRY)
EVENTS_MISSED = Counter("replicator_events_missed_total",
                        "Objects a scheduled (reconciliation) run of a job with events copied or tombstoned: changes the events missed or had not yet delivered",
                        _J, registry=REGISTRY)


def forget_job(job: str) -> None:
    """Drop every series of a job removed from the config, so no alert fires for a job that is gone."""
    for m in list(globals().values()):
        if isinstance(m, MetricWrapperBase):
            if "job" not in m._labelnames:
                continue
            at = m._labelnames.index("job")
            for values in [v for v in list(m._metrics) if v[at] == job]:  # remove_by_labels needs >= 0.23
                m.remove(*values)
