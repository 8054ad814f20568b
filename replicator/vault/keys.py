"""Key files and the keyring.

The key file holds one 256-bit master key. The master key opens a keyring stored in
the vault (`keys/<key_id>`), and the keyring holds the keys that do the work:
`data_kek` wraps each blob's data key, `id_key` makes blob names and job ids.
Rotating the master key re-wraps the keyring without touching any blob. In a
write-only vault content is sealed to an X25519 public key instead, and the
private key lives only in the keyring of a second, offline key file.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from replicator.errors import IntegrityError, VaultError, WrongKey
from replicator.redact import register as register_secret
from replicator.vault.crypto import Random, hkdf

KEY_FILE_PREFIX = "replicator-key-v1:"
SCRYPT_PREFIX = "replicator-key-v1-scrypt:"
SCRYPT_LOG_N = 17  # 128 MiB of memory per attempt: slow for guessing, a fraction of a second for us


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
    data_kek: bytes  # wraps data keys of blobs; in a write-only vault only of roots and records
    id_key: bytes  # keyed hashes: chunk ids, blob names, job ids
    # Write-only vaults (FORMAT.md §3): content is sealed to `recipient_pub`; the daemon's keyring
    # lacks `recipient_priv`, which only the offline key file's keyring holds.
    recipient_pub: bytes | None = None
    recipient_priv: bytes | None = None
    sign_seed: bytes | None = None  # Ed25519 seed that signs snapshot roots

    @property
    def write_only(self) -> bool:
        return self.recipient_pub is not None

    def without_private_key(self) -> "Keyring":
        return Keyring(self.data_kek, self.id_key, self.recipient_pub, None, self.sign_seed)

    def __repr__(self) -> str:
        return "Keyring(...)"


def create_key_file(path: Path, rng: Random = os.urandom, passphrase: str | None = None,
                    key: MasterKey | None = None) -> MasterKey:
    """Write a key file (a new random key, or `key`) with mode 0600; never overwrites an existing file."""
    key = key or MasterKey(rng(32))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as e:
        raise VaultError(f"cannot create key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(key_file_text(key, passphrase, rng))
        f.flush()
        os.fsync(f.fileno())
    return key


def replace_key_file(path: Path, key: MasterKey, passphrase: str | None = None, rng: Random = os.urandom) -> None:
    """Atomically write `key` over an existing key file (rotation, adding a passphrase)."""
    tmp = path.with_name(f".{path.name}.new")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_file_text(key, passphrase, rng))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise VaultError(f"cannot write key file {path}: {e.strerror}") from None


def key_file_text(key: MasterKey, passphrase: str | None = None, rng: Random = os.urandom) -> str:
    head = "# replicator vault key: keep it secret, keep a copy offline. Without it the vault cannot be read.\n"
    if passphrase is None:
        return head + f"{KEY_FILE_PREFIX}{base64.b64encode(key.secret).decode()}\n"
    salt, nonce = rng(16), rng(12)
    ct = AESGCM(_scrypt(passphrase, salt, SCRYPT_LOG_N)).encrypt(nonce, key.secret, SCRYPT_PREFIX.encode())
    fields = [base64.b64encode(salt).decode(), str(SCRYPT_LOG_N), "8", "1", base64.b64encode(nonce + ct).decode()]
    return head + "# protected by a passphrase (scrypt)\n" + SCRYPT_PREFIX + ":".join(fields) + "\n"


def load_key_file(path: Path, passphrase: Callable[[], str] | None = None) -> MasterKey:
    """Read a key file; refuse one that others can read, or that is not a key file.
    A passphrase-protected file asks `passphrase()` (default: $REPLICATOR_PASSPHRASE_FILE,
    $REPLICATOR_PASSPHRASE, or a prompt on a terminal)."""
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
        if line.startswith(SCRYPT_PREFIX):
            return _unlock(path, line[len(SCRYPT_PREFIX):], passphrase or default_passphrase)
    raise VaultError(f"{path} is not a replicator key file")


def is_protected(path: Path) -> bool:
    try:
        return SCRYPT_PREFIX in path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False


def default_passphrase() -> str:
    """$REPLICATOR_PASSPHRASE_FILE, $REPLICATOR_PASSPHRASE, or a prompt when attached to a terminal."""
    if os.environ.get("REPLICATOR_PASSPHRASE_FILE"):
        try:
            value = Path(os.environ["REPLICATOR_PASSPHRASE_FILE"]).read_text().rstrip("\n")
        except OSError as e:
            raise VaultError(f"cannot read $REPLICATOR_PASSPHRASE_FILE: {e.strerror}") from None
    elif "REPLICATOR_PASSPHRASE" in os.environ:
        value = os.environ["REPLICATOR_PASSPHRASE"]
    elif sys.stdin.isatty():
        value = getpass.getpass("passphrase for the vault key: ")
    else:
        raise VaultError("the key file is protected by a passphrase; set REPLICATOR_PASSPHRASE_FILE (or run on a terminal)")
    register_secret(value)
    return value


def _unlock(path: Path, fields: str, passphrase: Callable[[], str]) -> MasterKey:
    try:
        salt_b64, log_n, r, p, blob_b64 = fields.strip().split(":")
        salt, blob = base64.b64decode(salt_b64, validate=True), base64.b64decode(blob_b64, validate=True)
        log_n, r, p = int(log_n), int(r), int(p)
    except ValueError:
        raise VaultError(f"{path} is not a replicator key file (malformed passphrase line)") from None
    if not (10 <= log_n <= SCRYPT_LOG_N + 1 and r == 8 and p == 1 and len(salt) == 16 and len(blob) == 12 + 32 + 16):
        raise VaultError(f"{path}: unsupported passphrase parameters")
    try:
        secret = AESGCM(_scrypt(passphrase(), salt, log_n)).decrypt(blob[:12], blob[12:], SCRYPT_PREFIX.encode())
    except InvalidTag:
        raise WrongKey(f"wrong passphrase for key file {path}") from None
    return MasterKey(secret)


def _scrypt(passphrase: str, salt: bytes, log_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log_n, r=8, p=1).derive(passphrase.encode())


def paper_backup(key: MasterKey) -> str:
    """The master key as groups of base32 with a checksum, for writing down or printing."""
    raw = key.secret + hashlib.sha256(b"replicator paper v1" + key.secret).digest()[:4]
    text = base64.b32encode(raw).decode().rstrip("=")
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


def from_paper(text: str) -> MasterKey:
    cleaned = "".join(ch for ch in text.upper() if ch.isalnum())
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except ValueError:
        raise VaultError("not a paper key: expected groups of letters A-Z and digits 2-7") from None
    if len(raw) != 36 or hashlib.sha256(b"replicator paper v1" + raw[:32]).digest()[:4] != raw[32:]:
        raise VaultError("paper key checksum does not match: a group was mistyped")
    return MasterKey(raw[:32])


def new_keyring(rng: Random = os.urandom, write_only: bool = False) -> Keyring:
    if not write_only:
        return Keyring(data_kek=rng(32), id_key=rng(32))
    private = X25519PrivateKey.from_private_bytes(rng(32))
    return Keyring(data_kek=rng(32), id_key=rng(32), recipient_pub=private.public_key().public_bytes_raw(),
                   recipient_priv=private.private_bytes_raw(), sign_seed=rng(32))


_OPTIONAL = ("recipient_pub", "recipient_priv", "sign_seed")


def wrap_keyring(keyring: Keyring, master: MasterKey, vault_id: str, config_bytes: bytes,
                 rng: Random = os.urandom) -> bytes:
    """The `keys/<key_id>` object: the keyring and the config's hash, sealed under the master key."""
    fields = {
        "data_kek": base64.b64encode(keyring.data_kek).decode(),
        "id_key": base64.b64encode(keyring.id_key).decode(),
        "config_sha256": hashlib.sha256(config_bytes).hexdigest(),
    }
    for name in _OPTIONAL:
        if getattr(keyring, name) is not None:
            fields[name] = base64.b64encode(getattr(keyring, name)).decode()
    inner = json.dumps(fields).encode()
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
    try:
        return Keyring(base64.b64decode(inner["data_kek"]), base64.b64decode(inner["id_key"]),
                       **{name: base64.b64decode(inner[name]) for name in _OPTIONAL if name in inner})
    except (KeyError, ValueError, TypeError):
        raise IntegrityError(f"keys/{master.key_id}: malformed keyring") from None


def _aad(vault_id: str, key_id: str) -> bytes:
    return f"replicator keyring v1|{vault_id}|{key_id}".encode()
