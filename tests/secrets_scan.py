"""The secrets scan: no credential or key used by a test may appear in any CLI output or log.

tests/project.py records every CLI output of the session (project.CAPTURED) with the key files
and environment its project had; background runs leave their logs as popen-N.{out,err} in the
project directory. What counts as a secret of a project:

- each master key in its key files, as base64 (standard, url-safe, unpadded) and hex;
- the keyring keys it unlocks in a local vault (`<project>/vault`), in the same encodings;
- environment values of the project whose names say secret, key, token, pass or credential (secret
  references resolve from there), and the values in
  DISTINCTIVE (tests add theirs), except words too common to mean anything (moto's `testing`).

Metrics scrapes (project.SCRAPED, recorded by the daemon tests) are scanned for every key and
DISTINCTIVE secret of the session.

tests/conftest.py imports the session fixture `scan_outputs_for_secrets` (autouse), so every
session is scanned at its end; `problems()` scans at any time.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import project

DISTINCTIVE: set[str] = set()  # secrets tests configure; added by the tests that use them
COMMON = {"testing", "S3RVER", "anon", "test"}
_SECRET_NAMES = ("SECRET", "KEY", "TOKEN", "PASS", "CREDENTIAL")
_scanned = 0


def encodings(raw: bytes) -> set[str]:
    b64 = base64.b64encode(raw).decode()
    return {b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper()}


def key_secrets(dir: Path, key_text: str) -> set[str]:
    from replicator.vault import keys

    out: set[str] = set()
    for line in key_text.splitlines():
        if not line.startswith(keys.KEY_FILE_PREFIX):
            continue
        try:
            raw = base64.b64decode(line[len(keys.KEY_FILE_PREFIX):].strip(), validate=True)
        except ValueError:
            continue
        out |= encodings(raw)
        master = keys.MasterKey(raw)
        try:  # the keyring of the project's local vault, if this key opens it
            import json

            config = (dir / "vault" / "config").read_bytes()
            ring = keys.unwrap_keyring((dir / "vault" / "keys" / master.key_id).read_bytes(), master,
                                       json.loads(config)["vault_id"], config)
            for secret in (ring.data_kek, ring.id_key, ring.recipient_priv, ring.sign_seed):
                if secret is not None:
                    out |= encodings(secret)
        except Exception:
            pass
    return out


def problems(records=None) -> list[str]:
    """Every (project, secret) that shows up in recorded outputs or in background logs."""
    records = project.CAPTURED if records is None else records
    found = []
    logs_read: set[Path] = set()
    for dir, text, key_text, env in records:
        secrets = key_secrets(dir, key_text) | DISTINCTIVE | {
            v for k, v in env.items() if isinstance(v, str) and any(w in k.upper() for w in _SECRET_NAMES)}
        secrets = {s for s in secrets if len(s) >= 8 and s not in COMMON}
        texts = [text]
        if dir not in logs_read:
            logs_read.add(dir)
            texts += [f.read_text(errors="replace") for f in sorted(dir.glob("popen-*.*")) if f.is_file()]
        for t in texts:
            for s in secrets:
                if s in t:
                    found.append(f"{dir}: secret {s[:4]}... appears in output: ...{t[max(0, t.index(s) - 60):t.index(s)]}")
    every = DISTINCTIVE | {s for dir, _, key_text, env in records for s in key_secrets(dir, key_text)}
    every = {s for s in every if len(s) >= 8 and s not in COMMON}
    for t in project.SCRAPED:
        found += [f"a metrics scrape: secret {s[:4]}... appears" for s in every if s in t]
    return found


@pytest.fixture(scope="session", autouse=True)
def scan_outputs_for_secrets():
    """At the end of the session: nothing recorded since the last scan shows a secret."""
    yield
    global _scanned
    records, _scanned = project.CAPTURED[_scanned:], len(project.CAPTURED)
    found = problems(records)
    assert not found, "secrets leaked:\n" + "\n".join(found[:20])
