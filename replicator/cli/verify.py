"""`replicator verify`: prove the vault complete, intact and authentic; exit 1 naming each problem."""

from __future__ import annotations

import json
import time

from replicator.cli.context import human_bytes
from replicator.errors import EXIT_OK, EXIT_PROBLEMS, PrivateKeyNeeded, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="prove the vault complete, intact and authentic",
                       description="Check every snapshot of every job in the vault: present, authentic, chained; "
                                   "every referenced blob present with its recorded size. --deep also downloads, "
                                   "decrypts and checks the content hash of each blob.")
    p.add_argument("--job", metavar="NAME", help="only this job")
    p.add_argument("--deep", action="store_true", help="download and check every blob's content")
    p.add_argument("--sample", type=float, metavar="PCT",
                   help="with --deep, read only this percentage of blobs: the least recently verified ones, so that "
                        "100/PCT runs read everything (remembered in the catalogue; random without one)")
    p.add_argument("--against-source", action="store_true",
                   help="compare each objects job's latest snapshot with its live source (missing, changed, gone); "
                        "exit 1 on drift that one schedule interval does not explain")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file (for --deep on a "
                                                 "write-only vault: its private key file)")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the immutability probe (it writes a canary under probe/ and tries to delete it)")
    p.add_argument("--extend-retention", action="store_true",
                   help="with [vault.immutability]: also lengthen the retention of every object live snapshots "
                        "reference whose protection ends within extend_before_days (the daemon does this daily)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    if args.sample is not None and not (0 < args.sample <= 100):
        raise UsageError("--sample must be a percentage between 0 and 100")
    if args.sample is not None and not args.deep and not args.against_source:
        raise UsageError("--sample chooses which blobs --deep reads: use it with --deep")
    if args.against_source:
        if args.deep or args.sample is not None or args.extend_retention:
            raise UsageError("--against-source compares with the source only; run --deep or --extend-retention separately")
        return _against_source(args, ctx)
    from replicator import notify
    from replicator.verify import verify

    cfg = ctx.config
    if args.extend_retention and cfg.vault.immutability is None:
        raise UsageError("--extend-retention needs [vault.immutability] in the config")
    vault = ctx.open_vault(args.key)
    if args.deep and not vault.can_read_content:
        raise PrivateKeyNeeded("verify --deep reads content, and this vault is write-only: give its private key "
                               "file with --key PATH (verify without --deep needs no private key)")
    cat = ctx.catalogue() if (cfg.state_dir / "catalogue.db").exists() else None
    if cat is not None:
        cat.bind(vault.vault_id)
    r = verify(vault, cat, [j.name for j in cfg.jobs], only_job=args.job, deep=args.deep, sample=args.sample)
    extra, notes = _protection(args, cfg, vault, cat, r)
    lines = [f"problem: {p}" for p in r.problems] + [f"warning: {w}" for w in r.warnings] + notes
    jobs = ", ".join(f"{j} ({n} snapshots)" for j, n in sorted(r.jobs.items())) or "no jobs"
    lines.append(f"checked {jobs}; {r.blobs_referenced} blobs referenced"
                 + (f", {r.blobs_read} read and {r.chunks_checked} chunks hashed" if r.deep else "")
                 + (f", {r.repositories_checked} repositories rebuilt" if getattr(r, "repositories_checked", 0) else ""))
    if r.unreferenced_blobs:
        lines.append(f"{r.unreferenced_blobs} blobs ({human_bytes(r.unreferenced_bytes)}) are not referenced by any "
                     "snapshot" + (" (left by an interrupted run; harmless)" if r.ok else
                                   " (left by an interrupted run, or needed by a snapshot reported above)"))
    lines += _issue10_notes(r, cat)
    lines.append("vault OK" if r.ok else f"vault has {len(r.problems)} problems")
    if cat is not None:  # the daemon's metrics and `status` show the last verify
        cat.set_meta("verify:last", json.dumps({"time": time.time(), "ok": r.ok, "problems": len(r.problems),
                                                "deep": r.deep, "blobs": r.blobs_referenced,
                                                "sample": args.sample, "blobs_read": r.blobs_read}))
    if not r.ok:
        notify.send(cfg.notify.webhook, "verify_failed", problems=r.problems[:20], count=len(r.problems))
    ctx.emit({"ok": r.ok, **r.__dict__, **extra}, "\n".join(lines))
    return EXIT_OK if r.ok else EXIT_PROBLEMS


def _issue10_notes(r, cat) -> list[str]:
    """Provider checksums and deep-verify coverage, in words."""
    from replicator import coverage

    lines = []
    if r.checksums_compared is None:
        lines.append("provider checksums: this vault's store keeps none (only --deep reads content)")
    elif cat is None:
        lines.append("provider checksums: no catalogue on this host, nothing recorded to compare with")
    else:
        lines.append(f"provider checksums: {r.checksums_compared} compared with those recorded at write time, "
                     "without downloading" + (f"; {r.checksums_adopted} recorded for the first time" if r.checksums_adopted else ""))
    if r.sample_mode == "random":
        lines.append("sample: no catalogue on this host, so the blobs were chosen at random and coverage is not remembered")
    elif r.sample_mode == "rotating":
        lines.append(f"sample: {r.blobs_read} least recently verified blobs read")
    if cat is not None and r.coverage is not None:
        lines.append(coverage.human(r.coverage))
    return lines


def _against_source(args, ctx) -> int:
    """`verify --against-source [--job NAME]`: drift between each objects job's latest snapshot and its source."""
    from replicator import config as configmod, notify
    from replicator.drift import JobDrift, against_source
    from replicator.errors import ReplicatorError
    from replicator.sources import open_source

    cfg = ctx.config
    jobs = [cfg.job(args.job)] if args.job else list(cfg.jobs)
    vault = ctx.open_vault(args.key)
    cat = ctx.catalogue() if (cfg.state_dir / "catalogue.db").exists() else None
    reports, lines = [], []
    for job in jobs:
        if job.kind != "objects":
            lines.append(f"{job.name}: a {job.kind} job; compared by `verify --deep`, not against the source")
            continue
        index = cfg.jobs.index(job)
        try:
            opts = configmod.resolve_secrets(job.source_options, f"jobs[{index}].source_options")
            source = open_source(job, opts, state_dir=cfg.state_dir, catalogue=cat)
            r = against_source(vault, job, source)
        except ReplicatorError as e:
            r = JobDrift(job=job.name, error=str(e))
        reports.append(r)
        lines.append(r.summary())
        for item in r.items:
            if not item["in_flight"]:
                lines.append(f"  drift: {item['kind']}: {item['key']}: {item['detail']}")
        flight = [i for i in r.items if i["in_flight"]]
        for item in flight[:20]:
            lines.append(f"  in flight: {item['kind']}: {item['key']}")
        if len(flight) > 20:
            lines.append(f"  ... and {len(flight) - 20} more in flight")
    ok = all(r.error is None and not r.drifted for r in reports)
    lines.append("source and vault agree (up to changes in flight)" if ok else
                 "drift: the vault does not hold what the source holds (see above)")
    if not ok:
        notify.send(cfg.notify.webhook, "drift", jobs={r.job: (r.error or r.drift) for r in reports})
    ctx.emit({"ok": ok, "against_source": True, "jobs": [r.as_dict() for r in reports]}, "\n".join(lines))
    return EXIT_OK if ok else EXIT_PROBLEMS


def _protection(args, cfg, vault, cat, r) -> tuple[dict, list[str]]:
    """The immutability probe and, if asked, retention extension. With [vault.immutability] an
    unprotected vault is a problem (exit 1); without, a warning: nobody promised protection."""
    from replicator.immutability import extend_retention, run_probe

    extra: dict = {"protection": None}
    notes: list[str] = []
    imm = cfg.vault.immutability
    if not args.no_probe:
        probe = run_probe(vault.store, cat)
        extra["protection"] = probe.as_dict()
        if probe.lock and probe.lock.get("summary"):
            notes.append(f"lock configuration: {probe.lock['summary']}")
        if probe.protected:
            notes.append(probe.line())
            if probe.can_hide:
                r.warnings.append(probe.can_hide)
        elif imm is not None:
            r.problems.append(probe.line())
        else:
            r.warnings.append(f"{probe.line()} (no [vault.immutability] configured)")
    if args.extend_retention:
        ext = extend_retention(vault, cat if cat is not None else _catalogue(cfg, vault), imm.retain_days,
                               imm.extend_before_days)
        extra["retention"] = ext.as_dict()
        r.problems.extend(f"retention: {e}" for e in ext.errors)
        r.problems.extend(f"retention: {m} is referenced but missing" for m in ext.missing[:20])
        notes.append(f"retention: {ext.tracked} objects tracked, {ext.extended} extended to {ext.extended_to}, "
                     f"{ext.checked} still protected long enough; earliest end of protection {ext.protected_until}")
    return extra, notes


def _catalogue(cfg, vault):
    from replicator.catalogue import Catalogue

    cat = Catalogue(cfg.state_dir / "catalogue.db")
    cat.bind(vault.vault_id)
    return cat
