"""`replicator init`: create the vault and, if missing, the key file."""

from __future__ import annotations

from pathlib import Path

from replicator.errors import UsageError, VaultError
from replicator.redact import redact


def add_parser(sub) -> None:
    p = sub.add_parser("init", help="create the vault (config, keyring) and the key file",
                       description="Create the vault at [vault].url. Creates key_file (mode 0600) if it does not "
                                   "exist, or uses the existing one. Refuses to touch an existing vault. With "
                                   "[vault.immutability], a missing S3 bucket is created with Object Lock enabled, and "
                                   "a bucket or container that cannot hold the retention is refused. "
                                   "--write-only makes a vault the daemon can fill but not read: key_file can only "
                                   "seal content (to a public key) and sign snapshots; the private key goes to "
                                   "--private-key PATH, to be kept offline and given to restore and verify --deep.")
    p.add_argument("--write-only", action="store_true",
                   help="the daemon's key file cannot decrypt the vault; needs --private-key")
    p.add_argument("--private-key", metavar="PATH",
                   help="with --write-only: where to create the private key file (mode 0600); move it off this host")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=run)


def run(args, ctx) -> int:
    from replicator.stores.immutable import find_immutable, require_protection
    from replicator.vault.keys import create_key_file, load_key_file
    from replicator.vault.vault import Vault

    cfg = ctx.config
    if args.write_only != bool(args.private_key):
        raise UsageError("--write-only and --private-key PATH go together")
    private_path = Path(args.private_key) if args.private_key else None
    if private_path is not None and private_path.exists():
        raise VaultError(f"key file {private_path} already exists; refusing to overwrite it")
    if private_path is not None and private_path.resolve() == cfg.vault.key_file.resolve():
        raise UsageError("--private-key must be another file than [vault].key_file")
    store = ctx.vault_store()
    if store.exists() and Vault.exists(store):
        raise VaultError(f"a vault already exists at {cfg.vault.url}; refusing to touch it")
    if find_immutable(store) is not None:  # before the key file: refuse without leaving anything behind
        if not store.exists():
            store.create()  # S3: with Object Lock enabled; GCS/Azure: refused with how to create one
        require_protection(store)
    created_key = not cfg.vault.key_file.exists()
    key = create_key_file(cfg.vault.key_file) if created_key else load_key_file(cfg.vault.key_file)
    private = create_key_file(private_path) if private_path is not None else None
    try:
        vault = Vault.create(store, key, private_master=private)
    except BaseException:
        if private_path is not None:
            private_path.unlink()  # it protects nothing yet; a retry needs the name free
        raise
    data = {"vault": redact(cfg.vault.url), "vault_id": vault.vault_id, "key_file": str(cfg.vault.key_file),
            "key_created": created_key, "key_id": key.key_id, "write_only": private is not None}
    human = (f"vault created at {redact(cfg.vault.url)} (id {vault.vault_id})\n"
             f"key file {cfg.vault.key_file} ({'created, mode 0600' if created_key else 'existing, used'}); ")
    if private is None:
        human += "keep a copy offline: without it the vault cannot be read"
    else:
        data.update(private_key=str(private_path), private_key_id=private.key_id)
        human += ("it can write and verify this vault, not read it\n"
                  f"private key {private_path} (created, mode 0600): move it off this host and keep copies offline; "
                  "restore and verify --deep need it (--key PATH), and without it the vault cannot be read")
    ctx.emit(data, human)
    return 0
