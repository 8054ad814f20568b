"""`replicator prune`: apply each job's retention policy with credentials the daemon does not hold."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from replicator import config as configmod
from replicator.cli.context import human_bytes
from replicator.errors import ConfigError, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("prune", help="forget old snapshots by policy and delete unneeded blobs",
                       description="Apply each job's [jobs.retention] policy (keep_within, keep_daily, keep_weekly, "
                                   "keep_monthly; nothing younger than min_age, default 30d) using the provider's own "
                                   "write times. Forgotten snapshots are hidden; blobs no kept snapshot needs are "
                                   "deleted. Deleting needs --credentials FILE: vault credentials that may delete, "
                                   "which the daemon's config must not hold. The daemon never prunes.")
    p.add_argument("--job", action="append", metavar="NAME", help="only this job (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would be forgotten and deleted")
    p.add_argument("--credentials", metavar="FILE",
                   help="TOML file (mode 0600) with `options = {...}` for the vault, merged over [vault].options")
    p.add_argument("--key", metavar="PATH", help="key file to use instead of [vault].key_file (a write-only vault "
                                                 "needs its private key file: pruning reads the manifests)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.prune import prune
    from replicator.stores import open_store
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    cfg = ctx.config
    if not args.dry_run and not args.credentials:
        raise UsageError("prune deletes, so it needs --credentials FILE with vault credentials that may delete "
                         "(the daemon's should not); try --dry-run first")
    options = dict(cfg.vault.options)
    if args.credentials:
        options.update(_credentials(Path(args.credentials)))
    # Forget records and prune logs carry the vault's retention like every other object it writes.
    store = open_store(cfg.vault.url, configmod.resolve_secrets(options, "credentials.options"),
                       immutability=cfg.vault.immutability)
    vault = Vault.open(store, load_key_file(Path(args.key) if args.key else cfg.vault.key_file))
    names = args.job or [j.name for j in cfg.jobs]
    policies = {j.name: j.retention for j in cfg.jobs if j.name in names}
    r = prune(vault, policies, dry_run=args.dry_run)
    lines = []
    for plan in r.plans:
        if plan.job not in policies:
            lines.append(f"{plan.job}: not configured here; all {len(plan.kept)} snapshots kept")
            continue
        lines.append(f"{plan.job}: keep {len(plan.kept)} snapshots, "
                     f"{'would forget' if r.dry_run else 'forgot'} {len(plan.forget)}"
                     + (f" ({', '.join(map(str, plan.forget[:20]))}{'...' if len(plan.forget) > 20 else ''})" if plan.forget else ""))
    verb = "would delete" if r.dry_run else "deleted"
    lines.append(f"{verb} {r.blobs_deleted} blobs ({human_bytes(r.bytes_deleted)}); kept {r.blobs_too_young} unneeded "
                 f"blobs younger than min_age" + (f"; {r.blobs_protected} refused by the provider (immutable)"
                                                   if r.blobs_protected else ""))
    ctx.emit({"dry_run": r.dry_run, "jobs": [p.__dict__ for p in r.plans], "blobs_deleted": r.blobs_deleted,
              "bytes_deleted": r.bytes_deleted, "blobs_too_young": r.blobs_too_young,
              "blobs_protected": r.blobs_protected}, "\n".join(lines))
    return 0


def _credentials(path: Path) -> dict:
    try:
        st = os.stat(path)
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("--credentials", f"{path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError("--credentials", f"cannot read {path}: {e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("--credentials", f"{path} is accessible by others; run: chmod 600 {path}")
    options = data.get("options", {})
    if not isinstance(options, dict) or set(data) - {"options"}:
        raise ConfigError("--credentials", "expected only an `options = { ... }` table")
    return options
