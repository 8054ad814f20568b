"""`replicator init`: create the vault and, if missing, the key file."""

from __future__ import annotations

from replicator.errors import VaultError
from replicator.stores.immutable import find_immutable, require_protection
from replicator.vault.keys import create_key_file, load_key_file
from replicator.vault.vault import Vault


def add_parser(sub) -> None:
    p = sub.add_parser("init", help="create the vault (config, keyring) and the key file",
                       description="Create the vault at [vault].url. Creates key_file (mode 0600) if it does not "
                                   "exist, or uses the existing one. Refuses to touch an existing vault. With "
                                   "[vault.immutability], a missing S3 bucket is created with Object Lock enabled, and "
                                   "a bucket or container that cannot hold the retention is refused.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    cfg = ctx.config
    store = ctx.vault_store()
    if store.exists() and Vault.exists(store):
        raise VaultError(f"a vault already exists at {cfg.vault.url}; refusing to touch it")
    if find_immutable(store) is not None:  # before the key file: refuse without leaving anything behind
        if not store.exists():
            store.create()  # S3: with Object Lock enabled; GCS/Azure: refused with how to create one
        require_protection(store)
    created_key = not cfg.vault.key_file.exists()
    key = create_key_file(cfg.vault.key_file) if created_key else load_key_file(cfg.vault.key_file)
    vault = Vault.create(store, key)
    ctx.emit({"vault": cfg.vault.url, "vault_id": vault.vault_id, "key_file": str(cfg.vault.key_file),
              "key_created": created_key, "key_id": key.key_id},
             f"vault created at {cfg.vault.url} (id {vault.vault_id})\n"
             f"key file {cfg.vault.key_file} ({'created, mode 0600' if created_key else 'existing, used'}); "
             f"keep a copy offline: without it the vault cannot be read")
    return 0
