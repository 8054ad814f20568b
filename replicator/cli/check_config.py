"""`replicator check-config`: validate the config and reach every endpoint read-only."""

from __future__ import annotations

from replicator import config as configmod
from replicator.errors import EXIT_OK, EXIT_PROBLEMS, ReplicatorError
from replicator.redact import redact
from replicator.sources import open_source
from replicator.vault.keys import load_key_file
from replicator.vault.vault import Vault


def add_parser(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config and reach every endpoint read-only",
                       description="Validate the config file, then reach the vault and every job's source "
                                   "read-only. Does not need an initialised vault (it says whether it is one).")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config  # a bad config raises ConfigError: exit 2 with the key path
    checks: list[dict] = []

    def check(what: str, fn) -> None:
        try:
            detail = fn()
            checks.append({"what": what, "ok": True, "detail": detail})
        except ReplicatorError as e:
            checks.append({"what": what, "ok": False, "detail": redact(str(e))})

    def vault_check() -> str:
        store = ctx.vault_store()
        if not store.exists():
            return "reachable; no vault yet (run `replicator init`)"
        if not Vault.exists(store):
            return "reachable; no vault yet (run `replicator init`)"
        if not cfg.vault.key_file.exists():
            return "vault exists; key file missing"
        Vault.open(store, load_key_file(cfg.vault.key_file))
        return "vault exists and the key file opens it"

    check(f"vault {cfg.vault.url}", vault_check)
    for i, job in enumerate(cfg.jobs):
        def source_check(job=job, i=i) -> str:
            src = open_source(job, configmod.resolve_secrets(job.source_options, f"jobs[{i}].source_options"))
            src.check()
            return "listable"

        check(f"job {job.name}: source {job.source}", source_check)
    lines = [f"config {cfg.path}: valid ({len(cfg.jobs)} jobs)"]
    lines += [f"{'ok  ' if c['ok'] else 'FAIL'} {c['what']}: {c['detail']}" for c in checks]
    ctx.emit({"config": str(cfg.path), "checks": checks, "ok": all(c["ok"] for c in checks)}, "\n".join(lines))
    failed = sum(not c["ok"] for c in checks)
    if failed == len(checks):
        return 2
    return EXIT_PROBLEMS if failed else EXIT_OK
