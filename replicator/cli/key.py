"""`replicator key ...`: rotate the vault key, protect it with a passphrase, paper backup and import."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from replicator.errors import StoreError, UsageError, VaultError


def add_parser(sub) -> None:
    p = sub.add_parser("key", help="rotate, protect, export or import the vault key",
                       description="Manage the vault key file ([vault].key_file). The key only unwraps the "
                                   "vault's keyring, so rotation rewrites one small object and no data blob.")
    ks = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    r = ks.add_parser("rotate", help="new key over key_file; the old key stops opening the vault",
                      description="Write a new random key over key_file and re-wrap the keyring under it. The old "
                                  "key's keyring object is then deleted from the vault, so a stolen copy of the old "
                                  "key file opens nothing (this one delete needs vault credentials that may delete; "
                                  "with --keep-old it is left for you to remove).")
    r.add_argument("--keep-old", action="store_true", help="do not delete the old keyring object")
    r.add_argument("--passphrase", action="store_true", help="protect the new key file with a passphrase")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=rotate)
    e = ks.add_parser("export", help="print the key as a paper backup",
                      description="Print the master key as groups of letters and digits with a checksum, to write "
                                  "down or print and keep offline. `replicator key import` reads it back.")
    e.add_argument("--json", action="store_true")
    e.set_defaults(handler=export)
    i = ks.add_parser("import", help="write key_file from a paper backup",
                      description="Read a paper backup (from FILE, or stdin with -) and write key_file (mode 0600). "
                                  "Refuses to overwrite an existing key file.")
    i.add_argument("file", metavar="FILE", help="a file holding the paper backup, or - for stdin")
    i.add_argument("--passphrase", action="store_true", help="protect the key file with a passphrase")
    i.add_argument("--json", action="store_true")
    i.set_defaults(handler=import_)
    pp = ks.add_parser("passphrase", help="add, change or remove the key file's passphrase",
                       description="Re-write key_file protected by a passphrase (scrypt, memory-hard), or with "
                                   "--remove without one. The key itself does not change.")
    pp.add_argument("--remove", action="store_true", help="store the key without a passphrase")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(handler=passphrase)


def rotate(args, ctx) -> int:
    from replicator.vault import keys
    from replicator.vault.vault import Vault

    cfg = ctx.config
    vault = ctx.open_vault()
    old = vault.master
    new = keys.MasterKey(vault.rng(32))
    vault.add_master_key(new)  # 1. the vault opens with either key
    vault = Vault.open(vault.store, new)  # 2. proven before anything is given up
    keys.replace_key_file(cfg.vault.key_file, new, _new_passphrase() if args.passphrase else None)  # 3.
    removed, note = False, ""
    if not args.keep_old:
        try:
            vault.remove_master_key(old)  # 4. the old key opens nothing
            removed = True
        except StoreError as e:
            note = f"; could not delete keys/{old.key_id} ({e}): remove it with credentials that may delete"
    ctx.emit({"old_key_id": old.key_id, "new_key_id": new.key_id, "old_keyring_removed": removed},
             f"key rotated: {old.key_id} -> {new.key_id}, written to {cfg.vault.key_file}"
             + ("; the old key no longer opens the vault" if removed else note or
                f"; keys/{old.key_id} kept: the old key still opens the vault until it is removed")
             + "\nmake a new offline copy: replicator key export")
    return 0 if removed or args.keep_old else 1


def export(args, ctx) -> int:
    from replicator.vault import keys

    cfg = ctx.config
    key = keys.load_key_file(cfg.vault.key_file)
    paper = keys.paper_backup(key)
    ctx.emit({"key_id": key.key_id, "paper": paper},
             f"replicator vault key {key.key_id}\n{paper}\n"
             "keep this offline; `replicator key import FILE` restores the key file from it")
    return 0


def import_(args, ctx) -> int:
    from replicator.vault import keys

    cfg = ctx.config
    text = sys.stdin.read() if args.file == "-" else _read(args.file)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lower().startswith(("replicator", "keep"))]
    key = keys.from_paper(" ".join(lines))
    if cfg.vault.key_file.exists():
        raise VaultError(f"key file {cfg.vault.key_file} already exists; refusing to overwrite it")
    keys.create_key_file(cfg.vault.key_file, key=key, passphrase=_new_passphrase() if args.passphrase else None)
    ctx.emit({"key_id": key.key_id, "key_file": str(cfg.vault.key_file)},
             f"key {key.key_id} written to {cfg.vault.key_file} (mode 0600)")
    return 0


def passphrase(args, ctx) -> int:
    from replicator.vault import keys

    cfg = ctx.config
    key = keys.load_key_file(cfg.vault.key_file)
    keys.replace_key_file(cfg.vault.key_file, key, None if args.remove else _new_passphrase())
    ctx.emit({"key_id": key.key_id, "protected": not args.remove},
             f"{cfg.vault.key_file}: " + ("passphrase removed" if args.remove else "now protected by a passphrase"))
    return 0


def _new_passphrase() -> str:
    """From $REPLICATOR_NEW_PASSPHRASE(_FILE), or asked twice on a terminal."""
    if os.environ.get("REPLICATOR_NEW_PASSPHRASE_FILE"):
        value = _read(os.environ["REPLICATOR_NEW_PASSPHRASE_FILE"]).rstrip("\n")
    elif "REPLICATOR_NEW_PASSPHRASE" in os.environ:
        value = os.environ["REPLICATOR_NEW_PASSPHRASE"]
    elif sys.stdin.isatty():
        value = getpass.getpass("new passphrase: ")
        if getpass.getpass("again: ") != value:
            raise UsageError("the passphrases differ")
    else:
        raise UsageError("set REPLICATOR_NEW_PASSPHRASE_FILE, or run on a terminal, to give the new passphrase")
    if len(value) < 8:
        raise UsageError("a passphrase needs at least 8 characters")
    return value


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
