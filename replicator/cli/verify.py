"""`replicator verify`: prove the vault complete, intact and authentic; exit 1 naming each problem."""

from __future__ import annotations

import json
import time

from replicator import notify
from replicator.cli.context import human_bytes
from replicator.errors import EXIT_OK, EXIT_PROBLEMS, UsageError
from replicator.verify import verify


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="prove the vault complete, intact and authentic",
                       description="Check every snapshot of every job in the vault: present, authentic, chained; "
                                   "every referenced blob present with its recorded size. --deep also downloads, "
                                   "decrypts and checks the content hash of each blob.")
    p.add_argument("--job", metavar="NAME", help="only this job")
    p.add_argument("--deep", action="store_true", help="download and check every blob's content")
    p.add_argument("--sample", type=float, metavar="PCT", help="with --deep, read only this percentage of blobs")
    p.add_argument("--against-source", action="store_true", help=argparse_suppress())
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the immutability probe (it writes a canary under probe/ and tries to delete it)")
    p.add_argument("--extend-retention", action="store_true",
                   help="with [vault.immutability]: also lengthen the retention of every object live snapshots "
                        "reference whose protection ends within extend_before_days (the daemon does this daily)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=run)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def run(args, ctx) -> int:
    if args.sample is not None and not (0 < args.sample <= 100):
        raise UsageError("--sample must be a percentage between 0 and 100")
    if args.against_source:
        raise UsageError("--against-source is not available yet")
    cfg = ctx.config
    if args.extend_retention and cfg.vault.immutability is None:
        raise UsageError("--extend-retention needs [vault.immutability] in the config")
    vault = ctx.open_vault(args.key)
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
                     "snapshot (left by an interrupted run; harmless)")
    lines.append("vault OK" if r.ok else f"vault has {len(r.problems)} problems")
    if cat is not None:  # the daemon's metrics and `status` show the last verify
        cat.set_meta("verify:last", json.dumps({"time": time.time(), "ok": r.ok, "problems": len(r.problems),
                                                "deep": r.deep, "blobs": r.blobs_referenced}))
    if not r.ok:
        notify.send(cfg.notify.webhook, "verify_failed", problems=r.problems[:20], count=len(r.problems))
    ctx.emit({"ok": r.ok, **r.__dict__, **extra}, "\n".join(lines))
    return EXIT_OK if r.ok else EXIT_PROBLEMS


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
        elif imm is not None:
            r.problems.append(probe.line())
        else:
            r.warnings.append(f"{probe.line()} (no [vault.immutability] configured)")
    if args.extend_retention:
        ext = extend_retention(vault, cat if cat is not None else _catalogue(cfg, vault), imm.retain_days, imm.extend_before_days)
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
