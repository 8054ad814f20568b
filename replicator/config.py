"""TOML config -> frozen dataclasses. Every problem is a ConfigError naming the key path.

Secret references (`env:NAME`, `file:/path`, `raw:literal`) in option maps are kept
as written here and resolved only when a store or source is opened, so a config
object can be printed or logged without leaking anything.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from datetime import timedelta
from typing import Any

from replicator import schedules
from replicator.breaker import Safety
from replicator.policy import Policy
from replicator.errors import ConfigError, SecretError
from replicator.redact import register as register_secret
from replicator.units import glob_to_regex, parse_duration

DEFAULT_PATH = "/etc/replicator/config.toml"
DEFAULT_STATE_DIR = "/var/lib/replicator"
KINDS = ("objects", "git", "svn")
_SECRET_NAME = re.compile(r"key|secret|password|token|credential|connection_string|sas", re.I)
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Immutability:
    """[vault.immutability]: every object the replicator writes is retained by the provider for
    `retain_days`; retention of what live snapshots still reference is extended `extend_before_days`
    before it runs out (stores/immutable.py, replicator/immutability.py)."""
    mode: str  # "compliance" | "governance"
    retain_days: int
    extend_before_days: int


@dataclass(frozen=True)
class VaultConfig:
    url: str
    key_file: Path
    options: dict[str, Any] = field(default_factory=dict)
    bandwidth: str | tuple[str, ...] | None = None  # "50MiB/s" or ("08:00-18:00 10MiB/s", "50MiB/s")
    immutability: Immutability | None = None


@dataclass(frozen=True)
class InventoryConfig:
    """`[jobs.inventory]`: list an S3 source from its newest S3 Inventory report (CSV or Parquet)."""

    location: str  # s3://DEST-BUCKET/PREFIX/SOURCE-BUCKET/CONFIG-ID/ (where the dated reports are)
    options: dict[str, Any] | None = None  # None: the job's source_options
    max_age: timedelta = timedelta(days=2)  # an older report is not used: the run lists instead


@dataclass(frozen=True)
class EventsConfig:
    """`[jobs.events]` (issue 9): where the source announces changes (replicator/events/)."""
    kind: str  # "sqs"
    queue_url: str
    options: dict[str, Any] | None = None  # None: the job's source_options
    batch_window: float = 1.0  # seconds to gather events after the first one, before an event run
    visibility_timeout: int = 300  # seconds a received message stays hidden before it is delivered again


@dataclass(frozen=True)
class JobConfig:
    name: str
    source: str
    kind: str = "objects"
    schedule: str = "1h"
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    source_options: dict[str, Any] = field(default_factory=dict)
    repositories: tuple[str, ...] = ()  # git jobs: repository URLs captured besides those under `source`
    safety: Safety = field(default_factory=Safety)
    retention: Policy = field(default_factory=Policy)
    history: str = "current"  # "all": also import the source's versions (S3 versioning, GCS generations)
    list_partitions: int = 1  # S3 sources: key ranges listed in parallel, each resumable (issue 9)
    events: EventsConfig | None = None  # issue 9: event-driven replication between scheduled runs
    inventory: "InventoryConfig | None" = None  # issue 9: list from S3 Inventory reports


@dataclass(frozen=True)
class NotifyConfig:
    webhook: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    """Where copies run (issue 9): threads in this process, or tasks on a Dask cluster."""

    kind: str = "local"  # "local" | "dask"
    scheduler: str | None = None  # dask: the scheduler's address, tcp://HOST:8786
    batch: int = 64  # dask: objects per task
    connect_timeout: float = 10.0  # dask: seconds to reach the scheduler before the run fails
    processes: int | None = None  # local: worker processes for local-to-local copies (None: auto, 0: never)


ENGINE_KINDS = ("local", "dask")


@dataclass(frozen=True)
class Config:
    vault: VaultConfig
    state_dir: Path
    metrics_listen: str | None
    jobs: tuple[JobConfig, ...]
    path: Path | None = None
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def job(self, name: str) -> JobConfig:
        for j in self.jobs:
            if j.name == name:
                return j
        raise ConfigError("", f"no job named {name!r} in the config (jobs: {', '.join(j.name for j in self.jobs) or 'none'})")


def config_path(cli_value: str | None) -> Path:
    return Path(cli_value or os.environ.get("REPLICATOR_CONFIG") or DEFAULT_PATH)


def load(path: Path) -> Config:
    """Read and validate a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} not found (use --config PATH or REPLICATOR_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("", f"cannot read config file {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, base_dir=path.parent.resolve(), path=path)


def parse(text: str, base_dir: Path, path: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError("", "not valid TOML: nested too deeply") from None
    r = _Reader(data, "")
    vault = _vault(r.table("vault", required=True), base_dir)
    state = r.table("state")
    state_dir = state.path("dir", base_dir, default=os.environ.get("STATE_DIRECTORY") or DEFAULT_STATE_DIR)
    state.done()
    metrics = r.table("metrics")
    listen = metrics.string("listen", default=None)
    if listen is not None and not (re.fullmatch(r"[^\s:]*:\d{1,5}", listen) and int(listen.rsplit(":", 1)[1]) <= 65535):
        raise ConfigError("metrics.listen", f"expected HOST:PORT, got {listen!r}")
    metrics.done()
    notify = r.table("notify")
    webhook = notify.string("webhook", default=None)
    if webhook is not None and not re.fullmatch(r"https?://\S+", webhook):
        raise ConfigError("notify.webhook", f"expected an http:// or https:// URL, got {webhook!r}")
    notify.done()
    engine = _engine(r.table("engine"))
    jobs = tuple(_job(j) for j in r.array_of_tables("jobs"))
    seen: set[str] = set()
    for i, j in enumerate(jobs):
        if j.name in seen:
            raise ConfigError(f"jobs[{i}].name", f"duplicate job name {j.name!r}")
        seen.add(j.name)
    r.done()
    return Config(vault=vault, state_dir=state_dir, metrics_listen=listen, jobs=jobs, path=path,
                  notify=NotifyConfig(webhook), engine=engine)


def _engine(t: "_Reader") -> EngineConfig:
    kind = t.string("kind", default="local")
    if kind not in ENGINE_KINDS:
        raise ConfigError(t.key("kind"), f'must be "local" or "dask", got {kind!r}')
    scheduler = t.string("scheduler", default=None)
    if kind == "dask" and not scheduler:
        raise ConfigError(t.key("scheduler"), 'kind = "dask" needs the scheduler\'s address, e.g. "tcp://HOST:8786"')
    if scheduler is not None and not re.fullmatch(r"(tcp|tls|ws|wss|inproc)://\S+", scheduler):
        raise ConfigError(t.key("scheduler"), f"expected an address like tcp://HOST:8786, got {scheduler!r}")
    batch = int(t.number("batch", 64, 1, 100_000, integer=True))
    try:
        timeout = parse_duration(t.string("connect_timeout", default="10s")).total_seconds()
    except ValueError as e:
        raise ConfigError(t.key("connect_timeout"), str(e)) from None
    processes = t.number("processes", None, 0, 256, integer=True)
    t.done()
    return EngineConfig(kind, scheduler, batch, timeout, None if processes is None else int(processes))


def _vault(t: "_Reader", base_dir: Path) -> VaultConfig:
    url = t.string("url", required=True)
    if not url:
        raise ConfigError(t.key("url"), "must not be empty")
    v = VaultConfig(url=url, key_file=t.path("key_file", base_dir, default="/etc/replicator/vault.key"),
                    options=t.options("options"), bandwidth=_bandwidth(t),
                    immutability=_immutability(t.table("immutability")) if "immutability" in t.data else None)
    t.done()
    return v


IMMUTABILITY_MODES = ("compliance", "governance")


def _immutability(t: "_Reader") -> Immutability:
    mode = t.string("mode", required=True)
    if mode not in IMMUTABILITY_MODES:
        raise ConfigError(t.key("mode"), f'must be "compliance" or "governance", got {mode!r}')
    if "retain_days" not in t.data:
        raise ConfigError(t.key("retain_days"), "missing (required): how many days each object stays protected")
    days = int(t.number("retain_days", 0, 1, 36500, integer=True))
    before = t.number("extend_before_days", max(1, days // 4), 1, 36500, integer=True)
    if before > days:
        raise ConfigError(t.key("extend_before_days"), f"must not exceed retain_days ({days}), got {before}")
    t.done()
    return Immutability(mode=mode, retain_days=days, extend_before_days=int(before))


def _bandwidth(t: "_Reader") -> str | tuple[str, ...] | None:
    from replicator.stores.throttle import BandwidthSchedule

    v = t._get("bandwidth", False)
    if v is None:
        return None
    if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
        raise ConfigError(t.key("bandwidth"), 'expected "50MiB/s" or a list like ["08:00-18:00 10MiB/s", "50MiB/s"]')
    try:
        BandwidthSchedule.parse(v)
    except ValueError as e:
        raise ConfigError(t.key("bandwidth"), str(e)) from None
    return v if isinstance(v, str) else tuple(v)


def _job(t: "_Reader") -> JobConfig:
    name = t.string("name", required=True)
    if not _JOB_NAME.fullmatch(name):  # fullmatch: `$` alone would let "name\n" through
        raise ConfigError(t.key("name"), f"{name!r} is not a valid job name (letters, digits, . _ -; at most 64)")
    kind = t.string("kind", default="objects")
    if kind not in KINDS:
        raise ConfigError(t.key("kind"), f"must be one of {', '.join(KINDS)}, got {kind!r}")
    repositories = t.strings("repositories")
    if repositories and kind != "git":
        raise ConfigError(t.key("repositories"), 'only a job with kind = "git" has repositories')
    source = t.string("source", required=not repositories, default="")
    if not source and not repositories:
        raise ConfigError(t.key("source"), "must not be empty")
    schedule = t.string("schedule", default="1h")
    try:
        schedules.validate(schedule)
    except ValueError as e:
        raise ConfigError(t.key("schedule"), str(e)) from None
    include = t.globs("include", default=("**",))
    exclude = t.globs("exclude", default=())
    history = _history(t, kind, source)
    list_partitions = int(t.number("list_partitions", 1, 1, 256, integer=True))
    events = _events(t.table("events"), kind, source, history) if "events" in t.data else None
    inventory = _inventory(t.table("inventory"), kind, source, history) if "inventory" in t.data else None
    job = JobConfig(name=name, source=source, kind=kind, schedule=schedule, include=include,
                    exclude=exclude, source_options=t.options("source_options"), repositories=repositories,
                    safety=_safety(t.table("safety")), retention=_retention(t.table("retention")), history=history,
                    list_partitions=list_partitions, events=events, inventory=inventory)
    t.done()
    return job


def _retention(t: "_Reader") -> Policy:
    def duration(name: str, default):
        text = t.string(name, default=None)
        if text is None:
            return default
        try:
            return parse_duration(text)
        except ValueError as e:
            raise ConfigError(t.key(name), str(e)) from None

    counts = {k: int(t.number(k, 0, 0, 10**6, integer=True)) for k in ("keep_daily", "keep_weekly", "keep_monthly")}
    policy = Policy(keep_within=duration("keep_within", None), min_age=duration("min_age", Policy().min_age), **counts)
    t.done()
    return policy


EVENT_KINDS = ("sqs",)  # next: GCS Pub/Sub, Azure Event Grid (docs/OPERATIONS.md)
EVENT_OPTIONS = ("endpoint_url", "key", "secret", "token", "region")


def _events(t: "_Reader", kind: str, source: str, history: str) -> EventsConfig:
    """`[jobs.events]`: kind = "sqs" needs an objects job on s3:// and the queue's URL."""
    ev_kind = t.string("kind", required=True)
    if ev_kind not in EVENT_KINDS:
        raise ConfigError(t.key("kind"), f'must be "sqs" (GCS Pub/Sub and Azure Event Grid are not supported yet), got {ev_kind!r}')
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if kind != "objects" or scheme not in ("s3", "s3a"):
        raise ConfigError(t.key("kind"), f'"sqs" events need an objects job whose source is s3://, got {source or kind!r}')
    if history == "all":
        raise ConfigError(t.key("kind"), 'events are not supported with history = "all" (versions are imported by scheduled runs)')
    url = t.string("queue_url", required=True)
    if not re.fullmatch(r"https?://[^/\s]+/\S+", url):
        raise ConfigError(t.key("queue_url"), f"expected the queue's URL as SQS gives it (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), got {url!r}")
    options = t.options("options") if "options" in t.data else None
    for k in options or {}:
        if k not in EVENT_OPTIONS:
            raise ConfigError(f"{t.key('options')}.{k}", f"unknown option (known: {', '.join(EVENT_OPTIONS)})")
    window = float(t.number("batch_window", 1.0, 0.0, 60.0))
    visibility = int(t.number("visibility_timeout", 300, 10, 43200, integer=True))
    t.done()
    return EventsConfig(kind=ev_kind, queue_url=url, options=options, batch_window=window, visibility_timeout=visibility)


def _inventory(t: "_Reader", kind: str, source: str, history: str) -> InventoryConfig:
    """`[jobs.inventory]`: location of the reports (s3://), options, max_age."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if kind != "objects" or scheme not in ("s3", "s3a") or history == "all":
        raise ConfigError(t.key("location"), "an inventory lists an objects job whose source is s3:// (history = "
                                             f'"current"), got {source or kind!r}')
    location = t.string("location", required=True)
    if not re.fullmatch(r"s3a?://[^/\s]+/\S*", location):
        raise ConfigError(t.key("location"), f"expected s3://BUCKET/PREFIX/SOURCE-BUCKET/CONFIG-ID/, got {location!r}")
    options = t.options("options") if "options" in t.data else None
    text = t.string("max_age", default="2d")
    try:
        max_age = parse_duration(text)
    except ValueError as e:
        raise ConfigError(t.key("max_age"), str(e)) from None
    t.done()
    return InventoryConfig(location, options, max_age)


HISTORY_MODES = ("current", "all")
HISTORY_SCHEMES = ("s3", "s3a", "gs", "gcs")


def _history(t: "_Reader", kind: str, source: str) -> str:
    """`history`: "current" (default) or "all" (import the source's versions; S3 and GCS sources)."""
    history = t.string("history", default="current")
    if history not in HISTORY_MODES:
        raise ConfigError(t.key("history"), f'must be "current" or "all", got {history!r}')
    if history == "all":
        scheme = source.split("://", 1)[0].lower() if "://" in source else ""
        if kind != "objects" or scheme not in HISTORY_SCHEMES:
            raise ConfigError(t.key("history"), '"all" needs an objects job whose source is s3:// or gs:// '
                                                f"(a bucket with versioning), got {source or kind!r}")
    return history


def _safety(t: "_Reader") -> Safety:
    d = Safety()
    fractions = {k: t.number(k, getattr(d, k), 0.0, 1.0) for k in
                 ("max_deleted_fraction", "max_rewritten_fraction", "max_suspicious_fraction")}
    counts = {k: int(t.number(k, getattr(d, k), 0, 10**12, integer=True)) for k in ("max_deleted", "min_objects")}
    enabled = t.boolean("enabled", d.enabled)
    t.done()
    return Safety(enabled=enabled, **fractions, **counts)


class _Reader:
    """Walks one TOML table, remembering which keys were used so unknown ones are refused."""

    def __init__(self, data: Any, prefix: str):
        if not isinstance(data, dict):
            raise ConfigError(prefix, f"expected a table, got {type(data).__name__}")
        self.data, self.prefix, self.used = data, prefix, set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _get(self, name: str, required: bool):
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(self.key(name), "missing (required)")
            return None
        return self.data[name]

    def table(self, name: str, required: bool = False) -> "_Reader":
        v = self._get(name, required)
        return _Reader({} if v is None else v, self.key(name))

    def array_of_tables(self, name: str) -> list["_Reader"]:
        v = self._get(name, False)
        if v is None:
            v = []
        if not isinstance(v, list):
            raise ConfigError(self.key(name), "expected an array of tables ([[jobs]])")
        return [_Reader(item, f"{self.key(name)}[{i}]") for i, item in enumerate(v)]

    def string(self, name: str, required: bool = False, default: str | None = None) -> str | None:
        v = self._get(name, required)
        if v is None:
            return default
        if not isinstance(v, str):
            raise ConfigError(self.key(name), f"expected a string, got {_kind(v)}")
        if "\0" in v:  # no path, URL, name or schedule holds one; the OS would refuse it much later
            raise ConfigError(self.key(name), "must not contain a NUL character")
        return v

    def strings(self, name: str) -> tuple[str, ...]:
        """An optional list of non-empty strings (default: empty)."""
        v = self._get(name, False)
        if v is None:
            return ()
        if not isinstance(v, list):
            raise ConfigError(self.key(name), f"expected a list of strings, got {_kind(v)}")
        for i, x in enumerate(v):
            if not isinstance(x, str) or not x or "\0" in x:
                raise ConfigError(f"{self.key(name)}[{i}]", "expected a non-empty string without NUL characters")
        return tuple(v)

    def number(self, name: str, default: float, lo: float, hi: float, integer: bool = False) -> float:
        v = self._get(name, False)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise ConfigError(self.key(name), f"expected {'an integer' if integer else 'a number'}, got {_kind(v)}")
        if not lo <= v <= hi:
            raise ConfigError(self.key(name), f"must be between {lo:g} and {hi:g}, got {v}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        v = self._get(name, False)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {_kind(v)}")
        return v

    def path(self, name: str, base_dir: Path, default: str) -> Path:
        try:
            p = Path(self.string(name, default=default)).expanduser()
        except RuntimeError as e:  # ~nosuchuser
            raise ConfigError(self.key(name), str(e)) from None
        return p if p.is_absolute() else base_dir / p

    def globs(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self._get(name, False)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(self.key(name), "expected a list of glob strings")
        for i, p in enumerate(v):
            try:
                glob_to_regex(p)
            except ValueError as e:
                raise ConfigError(f"{self.key(name)}[{i}]", str(e)) from None
        return tuple(v)

    def options(self, name: str) -> dict[str, Any]:
        v = self._get(name, False)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ConfigError(self.key(name), f"expected a table, got {_kind(v)}")
        return v

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def _kind(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "a table"}.get(type(v), type(v).__name__)


def resolve_secrets(options: dict[str, Any], path: str) -> dict[str, Any]:
    """Replace `env:NAME` / `file:/path` / `raw:x` string values (recursively) by what they name."""

    def one(v: Any, p: str) -> Any:
        if isinstance(v, dict):
            out = {k: one(x, f"{p}.{k}") for k, x in v.items()}
            for k, x in out.items():
                if _SECRET_NAME.search(k) and isinstance(x, str):
                    register_secret(x)  # a literal secret in the config is masked too
            return out
        if isinstance(v, list):
            return [one(x, f"{p}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, str):
            return v
        if v.startswith("env:"):
            name = v[4:]
            if name not in os.environ:
                raise SecretError(p, f"environment variable {name} is not set")
            register_secret(os.environ[name])
            return os.environ[name]
        if v.startswith("file:"):
            try:
                value = Path(v[5:]).read_text(encoding="utf-8").strip()
                register_secret(value)
                return value
            except OSError as e:
                raise SecretError(p, f"cannot read secret file {v[5:]}: {e.strerror}") from None
            except UnicodeDecodeError:
                raise SecretError(p, f"secret file {v[5:]} is not UTF-8 text") from None
        if v.startswith("raw:"):
            return v[4:]
        return v

    return one(dict(options), path)


def parse_option_pairs(pairs: list[str], path: str) -> dict[str, Any]:
    """`KEY=VALUE` strings from the command line (`--to-option`) -> an options map."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(path, f"expected KEY=VALUE, got {p.split('=')[0]!r}")
        k, v = p.split("=", 1)
        out[k.strip()] = _scalar(v)
    return out


def _scalar(text: str) -> Any:
    """Command-line option values: true/false, integers and JSON lists are typed; the rest are strings."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.startswith("["):
        import json

        try:
            return json.loads(text)
        except ValueError:
            pass
    return text
