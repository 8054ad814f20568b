"""`replicator check-config`: validate the config and reach every endpoint read-only."""

from __future__ import annotations

from replicator import config as configmod
from replicator.errors import EXIT_OK, EXIT_PROBLEMS, ReplicatorError
from replicator.redact import redact


def add_parser(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config and reach every endpoint read-only",
                       description="Validate the config file, then reach the vault and every job's source "
                                   "read-only. Does not need an initialised vault (it says whether it is one). "
                                   "The one write: unless --no-probe, a canary object under probe/ in the vault, "
                                   "which it tries to delete and overwrite, to warn when the vault credentials can "
                                   "destroy data. With [vault.immutability], a bucket that cannot honour it is "
                                   "refused (exit 2).")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--no-probe", action="store_true",
                   help="do not probe whether the vault credentials can delete (the probe writes a canary under probe/)")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.sources import open_source
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    cfg = ctx.config  # a bad config raises ConfigError: exit 2 with the key path
    checks: list[dict] = []

    def check(what: str, fn) -> None:
        try:
            detail = fn()
            checks.append({"what": what, "ok": True, "detail": detail})
        except ReplicatorError as e:
            checks.append({"what": what, "ok": False, "detail": redact(str(e))})

    reached: dict = {}

    def vault_check() -> str:
        store = ctx.vault_store()
        if not store.exists():
            return "reachable; no vault yet (run `replicator init`)"
        reached["store"] = store
        if not Vault.exists(store):
            return "reachable; no vault yet (run `replicator init`)"
        if not cfg.vault.key_file.exists():
            return "vault exists; key file missing"
        Vault.open(store, load_key_file(cfg.vault.key_file))
        return "vault exists and the key file opens it"

    check(f"vault {redact(cfg.vault.url)}", vault_check)
    if cfg.engine.kind == "dask":
        def engine_check() -> str:
            from replicator.dask_engine import connect

            client = connect(cfg.engine.scheduler, cfg.engine.connect_timeout)
            try:
                workers = client.nthreads()
                return f"reachable; {len(workers)} workers, {sum(workers.values())} threads"
            finally:
                client.close()

        check(f"engine dask {cfg.engine.scheduler}", engine_check)
    protection, warnings = _protection(reached.get("store"), args.no_probe)
    for i, job in enumerate(cfg.jobs):
        def source_check(job=job, i=i) -> str:
            src = open_source(job, configmod.resolve_secrets(job.source_options, f"jobs[{i}].source_options"))
            src.check()
            if getattr(src, "inventory", None) is not None:
                report, why = src.inventory.usable(None)
                return "listable; " + (f"inventory report of {report.time:%Y-%m-%dT%H:%MZ}" if report else why)
            return "listable"

        check(f"job {job.name}: source {redact(job.source)}", source_check)
        if job.events is not None:
            def events_check(job=job, i=i) -> str:
                from replicator.events import open_events

                return open_events(job, i).check()

            check(f"job {job.name}: events {job.events.kind} {job.events.queue_url}", events_check)
    lines = [f"config {cfg.path}: valid ({len(cfg.jobs)} jobs)"]
    lines += [f"{'ok  ' if c['ok'] else 'FAIL'} {c['what']}: {c['detail']}" for c in checks]
    if protection and protection["lock"] and protection["lock"].get("summary"):
        lines.append(f"lock configuration: {protection['lock']['summary']}")
    lines += [f"warn {w}" for w in warnings]
    ctx.emit({"config": str(cfg.path), "checks": checks, "ok": all(c["ok"] for c in checks),
              "protection": protection, "warnings": warnings}, "\n".join(lines))
    failed = sum(not c["ok"] for c in checks)
    if failed == len(checks):
        return 2
    return EXIT_PROBLEMS if failed else EXIT_OK


def _protection(store, no_probe: bool) -> tuple[dict | None, list[str]]:
    """[vault.immutability] the bucket cannot honour: ConfigError (exit 2, naming vault.immutability.mode).
    Vault credentials that can delete or overwrite: a warning, never a failure."""
    from replicator.stores.immutable import probe, require_protection

    if store is None:  # unreachable, or no bucket yet: the vault check says so
        return None, []
    require_protection(store)
    if no_probe:
        return None, []
    result = probe(store)
    if result.protected is False:
        return result.as_dict(), [f"the vault credentials can delete or overwrite vault objects: {result.how}"]
    if result.protected is None:
        return result.as_dict(), [result.line()]
    return result.as_dict(), [result.can_hide] if result.can_hide else []
