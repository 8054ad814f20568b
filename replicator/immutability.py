"""Keeping the vault protected over time: the retention extension pass, and the probe's record.

Extension. Every object a kept snapshot needs must stay protected while it is kept: its root,
its manifest pages, the chunk blobs of the versions live at it (held ones included), plus
`config`, the keyring of the key in use and the forget records of `replicator prune`. Chunks are
deduplicated, so a blob written a year ago may be needed by today's snapshot: its retention has
to be lengthened before it runs out. The catalogue's `retention` table tracks each such object
and the time its protection ends; a pass:

  1. brings the table up to date: the first time, and whenever the set of forget records has
     changed (prune ran), it is rebuilt from every manifest with references.py, exactly as prune
     decides what is still needed, so blobs that only forgotten snapshots needed drop out (their
     retention lapses and a later prune may delete them); otherwise only snapshots written since
     the last pass are read (remembered per job in the meta `retention:scanned:<job id>`);
  2. takes only the objects whose protection is unknown or ends within `extend_before_days`,
     reads their retention back from the provider (one HEAD), and lengthens it to now +
     `retain_days` where it ends too soon (retention is never shortened, the mode never weakened).

A steady-state pass costs one HEAD per object written since the last pass, plus a HEAD and a
retention update per object whose time is running out; objects keep their recorded end of
protection across rebuilds.

Probe. `run_probe` runs stores.immutable.probe and stores its result in the catalogue meta
`probe:last`, from which the `replicator_vault_protected` gauge is set (by the daemon and at its
start, also for probes made by `replicator verify`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from replicator import metrics
from replicator.catalogue import Catalogue
from replicator.errors import NotFound, ReplicatorError
from replicator.history import History, forgotten_seqs
from replicator.references import VersionTable
from replicator.stores.immutable import ProbeResult, find_immutable, probe
from replicator.units import format_time
from replicator.vault.format import CONFIG_NAME, data_name, key_name, snapshot_name
from replicator.vault.vault import Vault

log = logging.getLogger("replicator.immutability")
PROBE_META = "probe:last"
SCANNED_META = "retention:scanned:"  # + job id: the newest snapshot whose objects are tracked
FORGOTTEN_META = "retention:forgotten"  # digest of the forget records the table was built with
BATCH = 2000


# -- the probe ---------------------------------------------------------------------------------


def run_probe(store, cat: Catalogue | None) -> ProbeResult:
    result = probe(store)
    if cat is not None:
        cat.set_meta(PROBE_META, json.dumps(result.as_dict()))
    observe_probe(result.as_dict())
    return result


def observe_probe(d: dict | None) -> None:
    if d is not None:
        metrics.VAULT_PROTECTED.set(1 if d.get("protected") else 0)


def observe_retention(r: "ExtendReport") -> None:
    """The extension pass's outcome as metrics: alerts fire on failures and on protection nearing its end."""
    metrics.RETENTION_PROBLEMS.set(len(r.errors) + len(r.missing))
    if r.protected_until:
        metrics.RETENTION_UNTIL.set(datetime.strptime(r.protected_until, "%Y-%m-%dT%H:%M:%SZ")
                                    .replace(tzinfo=timezone.utc).timestamp())


def last_probe(cat: Catalogue) -> dict | None:
    text = cat.meta(PROBE_META)
    return json.loads(text) if text else None


# -- retention extension -------------------------------------------------------------------------


@dataclass
class ExtendReport:
    snapshots_scanned: int = 0
    tracked: int = 0  # objects the catalogue tracks after the pass
    due: int = 0  # objects whose protection was unknown or ended too soon
    checked: int = 0  # of those, read back and found protected long enough
    extended: int = 0  # of those, lengthened
    extended_to: str | None = None
    missing: list[str] = field(default_factory=list)  # referenced but absent (verify reports these too)
    errors: list[str] = field(default_factory=list)
    protected_until: str | None = None  # the earliest end of protection among tracked objects, after the pass

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.missing


def extend_retention(vault: Vault, cat: Catalogue, retain_days: int, extend_before_days: int,
                     now: datetime | None = None, workers: int = 16) -> ExtendReport:
    imm = find_immutable(vault.store)
    if imm is None:
        raise ReplicatorError("retention extension needs [vault.immutability] in the config")
    imm.require()  # ConfigError (exit 2) if the bucket cannot hold it
    now = now or datetime.now(timezone.utc)
    report = ExtendReport()
    _scan(vault, cat, report)
    horizon = (now + timedelta(days=extend_before_days)).timestamp()
    target = now + timedelta(days=retain_days)
    report.extended_to = format_time(target)

    def one(name: str) -> tuple[str, float | None, str]:
        try:
            current = imm.retention(name)
            if current is not None and current.until.timestamp() >= horizon:
                return name, current.until.timestamp(), "checked"
            return name, imm.extend(name, target).until.timestamp(), "extended"
        except NotFound:
            return name, None, "missing"
        except ReplicatorError as e:
            return name, None, f"{name}: {e}"

    after = ""
    with ThreadPoolExecutor(workers, thread_name_prefix="retention") as pool:
        while True:
            names = cat.retention_due(horizon, after, BATCH)
            if not names:
                break
            after = names[-1]
            done = []
            for name, until, what in pool.map(one, names):
                report.due += 1
                if until is not None:
                    done.append((name, until))
                    report.checked += what == "checked"
                    report.extended += what == "extended"
                elif what == "missing":
                    report.missing.append(name)
                else:
                    report.errors.append(what)
            cat.set_retention(done)
    report.tracked, earliest = cat.retention_summary()
    report.protected_until = format_time(datetime.fromtimestamp(earliest, timezone.utc)) if earliest else None
    return report


def _scan(vault: Vault, cat: Catalogue, report: ExtendReport) -> None:
    """Bring the table up to date with the snapshots: incrementally while the set of forget records
    is unchanged, by a full rebuild (the first time, and after `replicator prune`) otherwise."""
    forgotten = sorted(n for n, _ in vault.store.list("forgotten/"))
    base = [CONFIG_NAME, key_name(vault.master.key_id)] + forgotten
    signature = hashlib.sha256("\n".join(forgotten).encode()).hexdigest()
    seqs_by_job = vault.snapshot_seqs()
    if cat.meta(FORGOTTEN_META) != signature:
        try:
            _rebuild(vault, cat, seqs_by_job, base, report)
        except ReplicatorError as e:
            report.errors.append(f"rebuilding the set of referenced objects: {e}")
            return
        cat.set_meta(FORGOTTEN_META, signature)
        return
    cat.track_retention(base)
    for jid, seqs in sorted(seqs_by_job.items()):
        mark = f"{SCANNED_META}{jid}"
        done = int(cat.meta(mark) or -1)
        history = History(vault, jid, seqs)
        for seq in (s for s in seqs if s > done):  # new snapshots: kept, since prune has not run since
            try:
                root, _ = history.root(seq)
                cat.track_retention([snapshot_name(jid, seq)] + [data_name(p.blob) for p in root.pages + root.held + root.blobs])
                refs = (data_name(blob) for blob in history.referenced_blobs(root))
                while batch := list(itertools.islice(refs, BATCH)):
                    cat.track_retention(batch)
            except ReplicatorError as e:
                report.errors.append(f"snapshot {seq} of job {jid[:8]}: {e}")
                break  # scanned again next time
            cat.set_meta(mark, str(seq))
            report.snapshots_scanned += 1


def _rebuild_from_blob_lists(vault: Vault, cat: Catalogue, seqs_by_job: dict[str, list[int]], base: list[str],
                             report: ExtendReport) -> None:
    """_rebuild for a write-only vault without its private key: every root and page, and the blobs the
    blob lists of kept snapshots name (a blob carried over from a forgotten snapshot may lapse early;
    run `verify --extend-retention --key PATH` after a prune to compute it exactly)."""
    def names():
        yield from base
        for jid, seqs in sorted(seqs_by_job.items()):
            history = History(vault, jid, seqs)
            hidden = forgotten_seqs(vault, jid, history)
            for seq in seqs:
                root, _ = history.root(seq)
                yield snapshot_name(jid, seq)
                yield from (data_name(p.blob) for p in root.pages + root.held + root.blobs)
                if seq not in hidden:
                    yield from (data_name(blob) for blob in history.referenced_blobs(root))
            report.snapshots_scanned += len(seqs)
    cat.replace_retention(names())
    for jid, seqs in seqs_by_job.items():
        cat.set_meta(f"{SCANNED_META}{jid}", str(seqs[-1]))


def _rebuild(vault: Vault, cat: Catalogue, seqs_by_job: dict[str, list[int]], base: list[str],
             report: ExtendReport) -> None:
    """Exactly the objects the kept snapshots need (references.py, as prune computes them): every
    root and manifest page (never deleted), and the chunks of versions live at a kept snapshot.
    Blobs only forgotten snapshots needed drop out, so their retention lapses and prune can delete them."""
    if not vault.can_read_content:
        _rebuild_from_blob_lists(vault, cat, seqs_by_job, base, report)
        return
    with tempfile.TemporaryDirectory(prefix="replicator-retention-") as tmp:
        table = VersionTable(Path(tmp) / "versions.db")
        try:
            for jid, seqs in sorted(seqs_by_job.items()):
                history = History(vault, jid, seqs)
                table.add_job(history, forgotten_seqs(vault, jid, history))
                report.snapshots_scanned += len(seqs)
            roots = (snapshot_name(jid, seq) for jid, seqs in seqs_by_job.items() for seq in seqs)
            cat.replace_retention(itertools.chain(base, roots, (data_name(r.blob) for r in table.referenced())))
        finally:
            table.close()
    for jid, seqs in seqs_by_job.items():
        cat.set_meta(f"{SCANNED_META}{jid}", str(seqs[-1]))


# -- the daemon's daily work ---------------------------------------------------------------------


def maintain(cfg, vault: Vault) -> None:
    """Probe the vault and, with [vault.immutability], extend retention. Logs; raises nothing expected."""
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    imm = cfg.vault.immutability
    try:
        cat.bind(vault.vault_id)
        result = run_probe(vault.store, cat)
        if result.protected:
            log.info("probe: %s", result.line())
        elif imm is not None:
            log.error("probe: %s", result.line())
        else:
            log.warning("probe: %s ([vault.immutability] is not configured)", result.line())
        if imm is not None:
            # One pass a day (plus jitter): look a day further ahead, so that protection ending just
            # after this pass's horizon is not left to a next pass that comes too late.
            r = extend_retention(vault, cat, imm.retain_days, imm.extend_before_days + 1)
            observe_retention(r)
            level = logging.INFO if r.ok else logging.ERROR
            log.log(level, "retention: %d objects tracked, %d due, %d extended to %s, %d still protected long enough, "
                    "%d missing, %d errors; earliest end of protection %s", r.tracked, r.due, r.extended,
                    r.extended_to, r.checked, len(r.missing), len(r.errors), r.protected_until)
            for e in r.errors[:5]:
                log.error("retention: %s", e)
    finally:
        cat.close()
