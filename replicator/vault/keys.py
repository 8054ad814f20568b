"""Key files and the keyring.

The key file holds one 256-bit master key. The master key opens a keyring stored in
the vault (`keys/<key_id>`), and the keyring holds the keys that do the work:
`data_kek` wraps each blob's data key, `id_key` makes blob names and job ids.
Rotating the master key re-wraps the keyring without touching any blob, and a
write-only (public-key) mode can later replace `data_kek` by a key pair.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from replicator.errors import IntegrityError, VaultError, WrongKey
from replicator.vault.crypto import Random, hkdf

KEY_FILE_PREFIX = "replicator-key-v1:"


@dataclass(frozen=True)
class MasterKey:
    secret: bytes

    @property
    def key_id(self) -> str:
        """Public fingerprint of the master key: names its keyring object, detects a wrong key file."""
        return hkdf(self.secret, b"replicator v1 key-id", 8).hex()

    def wrapping_key(self) -> bytes:
        return hkdf(self.secret, b"replicator v1 keyring-wrap")

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id})"


@dataclass(frozen=True)
class Keyring:
    data_kek: bytes
    id_key: bytes

    def __repr__(self) -> str:
        return "Keyring(...)"


def create_key_file(path: Path, rng: Random = os.urandom) -> MasterKey:
    """Write a new key file with mode 0600; never overwrites an existing file."""
    key = MasterKey(rng(32))
    text = ("# replicator vault key: keep it secret, keep a copy offline. Without it the vault cannot be read.\n"
            f"{KEY_FILE_PREFIX}{base64.b64encode(key.secret).decode()}\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise VaultError(f"cannot create key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return key


def load_key_file(path: Path) -> MasterKey:
    """Read a key file; refuse one that others can read, or that is not a key file."""
    try:
        st = os.stat(path)
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise VaultError(f"key file {path} not found (run `replicator init`, or restore it from your offline copy)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VaultError(f"cannot read key file {path}: {getattr(e, 'strerror', None) or 'not a text file'}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(f"key file {path} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    for line in text.splitlines():
        if line.startswith(KEY_FILE_PREFIX):  # the first such line, and only it (docs/FORMAT.md §3)
            try:
                secret = base64.b64decode(line[len(KEY_FILE_PREFIX):].strip(), validate=True)
            except ValueError:
                break
            if len(secret) == 32:
                return MasterKey(secret)
            break
    raise VaultError(f"{path} is not a replicator key file")


def new_keyring(rng: Random = os.urandom) -> Keyring:
    return Keyring(data_kek=rng(32), id_key=rng(32))


def wrap_keyring(keyring: Keyring, master: MasterKey, vault_id: str, config_bytes: bytes,
                 rng: Random = os.urandom) -> bytes:
    """The `keys/<key_id>` object: the keyring and the config's hash, sealed under the master key."""
    inner = json.dumps({
        "data_kek": base64.b64encode(keyring.data_kek).decode(),
        "id_key": base64.b64encode(keyring.id_key).decode(),
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
    }).encode()
    nonce = rng(12)
    ct = AESGCM(master.wrapping_key()).encrypt(nonce, inner, _aad(vault_id, master.key_id))
    return json.dumps({"version": 1, "key_id": master.key_id, "alg": "AES-256-GCM",
                       "nonce": base64.b64encode(nonce).decode(),
                       "keyring": base64.b64encode(ct).decode()}, indent=1).encode()


def unwrap_keyring(data: bytes, master: MasterKey, vault_id: str, config_bytes: bytes) -> Keyring:
    try:
        outer = json.loads(data)
        version = outer["version"]
        nonce = base64.b64decode(outer["nonce"])
        ct = base64.b64decode(outer["keyring"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"keys/{master.key_id}: malformed keyring object") from None
    if type(version) is not int or version != 1:
        raise WrongKey(f"keys/{master.key_id}: keyring version {str(version)[:20]} is not supported by this replicator")
    try:
        inner = json.loads(AESGCM(master.wrapping_key()).decrypt(nonce, ct, _aad(vault_id, master.key_id)))
    except (InvalidTag, ValueError):
        raise WrongKey(f"keys/{master.key_id}: the key file does not open this vault's keyring") from None
    if inner.get("config_sha256") != hashlib.sha256(config_bytes).hexdigest():
        raise IntegrityError("the vault's config object was altered (its hash does not match the keyring)")
    return Keyring(base64.b64decode(inner["data_kek"]), base64.b64decode(inner["id_key"]))


def _aad(vault_id: str, key_id: str) -> bytes:
    return f"replicator keyring v1|{vault_id}|{key_id}".encode()
