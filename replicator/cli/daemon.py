"""`replicator daemon`: run jobs on their schedules until SIGTERM; serve metrics; notify systemd."""

from __future__ import annotations

from replicator import config as configmod


def add_parser(sub) -> None:
    p = sub.add_parser("daemon", help="run every job on its schedule until SIGTERM",
                       description="Run each job on its `schedule` (cron or interval), one run of a job at a time. "
                                   "SIGTERM/SIGINT stop gracefully; SIGHUP reloads the config (a bad one is rejected "
                                   "and the old one keeps running). Serves Prometheus metrics at [metrics].listen. "
                                   "Under systemd (Type=notify) it reports readiness, watchdog pings and status.")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.daemon import Daemon  # here: APScheduler's import costs every other command 0.2 s
    from replicator.stores import open_store
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    path = configmod.config_path(args.config)

    def open_vault(cfg) -> Vault:
        store = open_store(cfg.vault.url, configmod.resolve_secrets(cfg.vault.options, "vault.options"),
                           cfg.vault.bandwidth, cfg.vault.immutability)
        return Vault.open(store, load_key_file(cfg.vault.key_file))

    return Daemon(lambda: configmod.load(path), open_vault).serve()
