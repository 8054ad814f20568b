"""Operations files: systemd units, Prometheus alerts, Grafana dashboard.

The tools are part of the test setup (scripts/setup: Debian `systemd` gives systemd-analyze,
`prometheus` gives promtool); a missing tool fails these tests, it never skips them.

systemd-analyze verify returns 0 even for unknown keys, so any stderr is a failure. It also
insists that ExecStart= names an existing executable, and /usr/local/bin/replicator (where
docs/OPERATIONS.md installs it) is not on a test machine: the units are checked in a copy
whose ExecStart= points at this venv's `replicator` instead, nothing else changed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replicator import metrics

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "replicator-dashboard.json"
INSTALLED_BINARY = "/usr/local/bin/replicator"
UNIT_FILES = ["replicator.service", "replicator-verify.service", "replicator-verify.timer"]
# systemd-analyze security --offline=yes: the issue demands 1.5 or better for the daemon.
EXPOSURE_LIMITS = {"replicator.service": 1.5, "replicator-verify.service": 2.0}
ALERT_NAMES = {"ReplicatorCopyStale", "ReplicatorRunFailing", "ReplicatorVerifyFailing", "ReplicatorVerifyStale",
               "ReplicatorVaultUnprotected", "ReplicatorRetentionAtRisk", "ReplicatorDown", "ReplicatorBreakerTripped", "ReplicatorReplicationLagHigh",
               "ReplicatorVerifyCoverageStale"}
NOT_OURS = {"up"}  # Prometheus' own series


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install the Debian package `{package}` (scripts/setup does)")
    return path


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory) -> Path:
    """The units, with ExecStart= pointing at an executable that exists here (see the module doc)."""
    binary = Path(sys.executable).parent / "replicator"
    assert binary.exists(), f"{binary} missing: the venv has no `replicator` entry point (pip install -e .)"
    out = tmp_path_factory.mktemp("units")
    for name in UNIT_FILES:
        text = (UNITS / name).read_text()
        copy = text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={binary} ")
        assert copy.count(str(binary)) == text.count(f"ExecStart={INSTALLED_BINARY} ")
        (out / name).write_text(copy)
    return out


# ---------------------------------------------------------------------------------------------
# systemd units
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNIT_FILES)
def test_unit_passes_systemd_analyze_verify_without_a_word(unit_dir, name):
    r = run(tool("systemd-analyze", "systemd"), "verify", "--man=no", str(unit_dir / name))
    assert r.stderr.strip() == "" and r.returncode == 0, f"systemd-analyze verify {name}:\n{r.stderr}"


def test_shipped_units_differ_from_the_checked_copies_only_by_the_missing_binary():
    """Verify the files as shipped too: the only complaint allowed is a missing /usr/local/bin/replicator."""
    r = run(tool("systemd-analyze", "systemd"), "verify", "--man=no", *[str(UNITS / n) for n in UNIT_FILES])
    other = [line for line in r.stderr.splitlines()
             if not re.fullmatch(rf"\S+\.service: Command {re.escape(INSTALLED_BINARY)} is not executable: "
                                 r"No such file or directory", line)]
    assert other == [], "\n".join(other)


@pytest.mark.parametrize("name", sorted(EXPOSURE_LIMITS))
def test_unit_security_exposure(unit_dir, name):
    limit = EXPOSURE_LIMITS[name]
    r = run(tool("systemd-analyze", "systemd"), "security", "--offline=yes", f"--threshold={round(limit * 10)}",
            "--no-pager", str(unit_dir / name))
    m = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+(?:\.\d+)?)", r.stdout)
    assert m, f"no exposure level in:\n{r.stdout}\n{r.stderr}"
    assert float(m.group(1)) <= limit, f"{name} exposure {m.group(1)} > {limit}:\n{r.stdout}"
    assert r.returncode == 0, r.stderr


def _settings(name: str) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in (UNITS / name).read_text().splitlines()
            if "=" in line and not line.startswith("#")]


def test_daemon_unit_matches_what_the_daemon_does():
    s = _settings("replicator.service")
    d = dict(s)
    assert d["Type"] == "notify" and d["NotifyAccess"] == "main"
    assert d["ExecStart"] == f"{INSTALLED_BINARY} --config /etc/replicator/config.toml daemon"
    assert d["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert d["WatchdogSec"] and d["TimeoutStopSec"] and d["Restart"] == "on-failure"
    assert d["CapabilityBoundingSet"] == "" and d["AmbientCapabilities"] == ""
    assert ("SystemCallFilter", "@system-service") in s and ("SystemCallFilter", "~@privileged @resources") in s


def test_verify_service_shares_identity_state_and_credentials_with_the_daemon():
    """The timer's verify writes its result into the daemon's catalogue (the metrics read it there):
    same dynamic user, same state directory, same credentials at the same path, same sandbox."""
    daemon, verify = _settings("replicator.service"), _settings("replicator-verify.service")
    shared = {"DynamicUser", "User", "Group", "StateDirectory", "LoadCredential", "BindReadOnlyPaths", "UMask"}
    sandbox = lambda s: [kv for kv in s if kv[0].startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability",
                                                             "NoNewPrivileges", "MemoryDeny", "LockPersonality"))]
    assert [kv for kv in daemon if kv[0] in shared] == [kv for kv in verify if kv[0] in shared]
    assert sandbox(daemon) == sandbox(verify)
    d = dict(verify)
    assert d["Type"] == "oneshot"
    assert d["ExecStart"] == f"{INSTALLED_BINARY} --config /etc/replicator/config.toml verify --deep --sample 25"
    timer = dict(_settings("replicator-verify.timer"))
    assert timer["OnCalendar"] == "weekly" and timer["Persistent"] == "true" and timer["RandomizedDelaySec"]


def test_the_verify_timer_reads_every_blob_within_the_coverage_window():
    """A weekly --sample PCT reads every blob once in ceil(100/PCT) weeks (least recently verified
    first); that cycle must fit in the window replicator_verify_coverage_ratio measures, or a healthy
    vault's ratio sits far below 1 for ever. The stale-coverage alert allows one week more."""
    import math

    from replicator import coverage

    sample = float(dict(_settings("replicator-verify.service"))["ExecStart"].split("--sample ")[1].split()[0])
    cycle_days = math.ceil(100 / sample) * 7
    assert cycle_days <= coverage.WINDOW_DAYS, (cycle_days, coverage.WINDOW_DAYS)
    rule = next(r for r in _rules() if r["alert"] == "ReplicatorVerifyCoverageStale")
    assert rule["expr"] == f"replicator_verify_oldest_unverified_age_seconds > {cycle_days + 7} * 86400", rule["expr"]


# ---------------------------------------------------------------------------------------------
# Prometheus alerts
# ---------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check():
    r = run(tool("promtool", "prometheus"), "check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_unit_tests_pass():
    r = run(tool("promtool", "prometheus"), "test", "rules", str(ALERTS_TEST), cwd=ALERTS_TEST.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _rules() -> list[dict]:
    return [rule for g in yaml.safe_load(ALERTS.read_text())["groups"] for rule in g["rules"]]


def test_every_alert_is_there_with_severity_summary_description_and_a_unit_test():
    rules = _rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    tested = {t["alertname"] for test in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
              for t in test["alert_rule_test"] if t["exp_alerts"]}
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert r["alert"] in tested, f"{r['alert']} is never shown firing in alerts_test.yml"


# ---------------------------------------------------------------------------------------------
# Metric names used by alerts and dashboard: only those replicator.metrics exports
# ---------------------------------------------------------------------------------------------

_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right",
                 "inf", "nan"}


def exported_names() -> set[str]:
    """Series names in the exposition of replicator.metrics.REGISTRY (labelled metrics included)."""
    suffixes = {"counter": ["_total"], "info": ["_info"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["", "_sum", "_count"], "stateset": [""], "enum": [""], "unknown": [""]}
    names = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + s for s in suffixes[family.type])
    # Gauges that are absent until first measured (metrics.OptionalGauge) still describe themselves.
    names.update(n for n in metrics.REGISTRY._names_to_collectors if n.startswith("replicator_"))
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                          # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)                                      # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                     # range and subquery selectors
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.start() and (e[m.start() - 1].isdigit() or e[m.start() - 1] in ".$"):
            continue                                                      # 5m, 1e3, $var
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in _PROMQL_WORDS:
            continue                                                      # function, aggregation, keyword
        names.add(m.group(0))
    return names


def test_metric_name_extraction():
    assert metric_names('sum by (job, kind) (increase(replicator_job_errors_total{job=~"$job"}[1h])) > 0') \
        == {"replicator_job_errors_total"}
    assert metric_names("time() - a_seconds > 2 * 3600 and (b > 0 or time() - c offset 5m > 8e3)") == {"a_seconds", "b", "c"}
    assert metric_names('x{a="}"} * on(instance) group_left(v) y_info') == {"x", "y_info"}


def _dashboard_exprs(d: dict) -> list[str]:
    exprs = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            exprs.append(t["expr"])
    return exprs


def test_alerts_use_only_exported_metrics():
    known = exported_names() | NOT_OURS
    for r in _rules():
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= known, f"{r['alert']}: unknown metrics {sorted(used - known)}"


def test_dashboard_uses_only_exported_metrics_and_shows_what_operators_need():
    d = json.loads(DASHBOARD.read_text())
    known = exported_names() | NOT_OURS
    used = set()
    for expr in _dashboard_exprs(d):
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"{expr}: unknown metrics {sorted(names - known)}"
        used |= names
    for v in d["templating"]["list"]:
        for q in re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", json.dumps(v.get("query", ""))):
            assert q in known, q
    needed = {"replicator_job_last_success_timestamp_seconds", "replicator_job_last_run_success", "replicator_job_runs_total",
              "replicator_job_objects_copied_total", "replicator_job_bytes_copied_total", "replicator_job_tombstones_total",
              "replicator_job_errors_total", "replicator_job_objects_pending", "replicator_job_snapshots",
              "replicator_vault_stored_bytes", "replicator_verify_last_success", "replicator_verify_last_timestamp_seconds",
              "replicator_verify_coverage_ratio", "replicator_vault_protected", "replicator_replication_lag_seconds_bucket",
              "replicator_events_oldest_pending_timestamp_seconds", "replicator_events_missed_total"}
    assert needed <= used, f"dashboard lacks {sorted(needed - used)}"


def test_dashboard_is_importable_grafana_json(tmp_path):
    d = json.loads(DASHBOARD.read_text())
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["job"]["query"]["query"] == "label_values(replicator_job_last_success_timestamp_seconds, job)"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"] and all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    # Every query is valid PromQL: promtool parses them as recording rules, Grafana variables filled in.
    fill = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d", "$job": ".*", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(_dashboard_exprs(d)):
        for k, v in fill.items():
            expr = expr.replace(k, v)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query{i}", "expr": expr})
    f = tmp_path / "dashboard_rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run(tool("promtool", "prometheus"), "check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
