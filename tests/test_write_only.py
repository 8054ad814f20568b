"""Write-only vaults (issue 6): the daemon's host can fill, chain, sign and shallow-verify a vault
whose content it cannot read; restore and deep verify take the private key file kept offline."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from project import UNUSUAL, read_dir
from replicator.catalogue import Catalogue
from replicator.config import JobConfig
from replicator.engine import run_job
from replicator.history import History
from replicator.references import VersionTable
from replicator.errors import IntegrityError, PrivateKeyNeeded, StoreError
from replicator.restore import restore
from replicator.sources.objects import ObjectSource
from replicator.stores.faulty import FaultyStore
from replicator.stores.local import LocalStore
from replicator.targets import LocalTarget
from replicator.units import KeyFilter
from replicator.vault import crypto
from replicator.vault.format import encode_record
from replicator.vault.keys import MasterKey, load_key_file, unwrap_keyring
from replicator.vault.vault import Vault
from replicator.verify import verify
from test_e2e_incident import fill, ls_keys, make_project

# -- the public-key wrap --------------------------------------------------------------------------


def test_public_wrap_seals_what_only_the_private_key_opens():
    private = os.urandom(32)
    public = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    plaintext = os.urandom(200_000)
    blob = crypto.seal_with(plaintext, crypto.PublicWrap(public))
    header = crypto.parse_header(blob)
    assert header.wrap == crypto.WRAP_X25519 and header.key_id == crypto.recipient_id(public)
    with pytest.raises(PrivateKeyNeeded):
        crypto.PublicWrap(public).unwrap_dek(header)
    dek = crypto.PublicWrap(public, private).unwrap_dek(header)
    assert crypto.open_with_dek(blob, header, dek) == plaintext
    # Another private key, or an altered ephemeral public key, does not unwrap.
    with pytest.raises(IntegrityError):
        crypto.PublicWrap(public, os.urandom(32)).unwrap_dek(header)
    forged = bytearray(blob)
    forged[17] ^= 0x01  # inside the ephemeral public key
    with pytest.raises(IntegrityError):
        crypto.PublicWrap(public, private).unwrap_dek(crypto.parse_header(bytes(forged)))
    # The header is every segment's associated data: a re-wrapped header fails the segments.
    other = crypto.seal_with(b"x", crypto.PublicWrap(public))
    spliced = crypto.parse_header(other).raw + blob[header.size:]
    with pytest.raises(IntegrityError):
        h = crypto.parse_header(spliced)
        crypto.open_with_dek(spliced, h, crypto.PublicWrap(public, private).unwrap_dek(h))


# -- end to end through the CLI --------------------------------------------------------------------


def write_only_project(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    objects = dict(UNUSUAL)
    objects.update({f"data/{i:03d}.bin": os.urandom(500 + 37 * i) for i in range(30)})
    fill(fs, bucket, objects)
    out = p.json("init", "--write-only", "--private-key", "offline.key")
    assert out["write_only"] is True and out["private_key_id"] != out["key_id"]
    for name in ("vault.key", "offline.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    return p, fs, bucket, objects


def test_write_only_run_verify_restore(tmp_path, s3_server):
    p, fs, bucket, objects = write_only_project(tmp_path, s3_server)
    assert p.json("run")["jobs"][0]["copied"] == len(objects)

    # The daemon's key: shallow verify works and checks every blob from the blob lists.
    v = p.json("verify")
    data_blobs = [f for f in (tmp_path / "vault" / "data").rglob("*") if f.is_file()]
    assert v["ok"] and v["blobs_referenced"] == len(data_blobs) and v["unreferenced_blobs"] == 0
    assert [s["seq"] for s in p.json("snapshots")["snapshots"]] == [0]  # roots are readable

    # ... but nothing that reads content: each refusal is one clear line, exit 2.
    for args in (("verify", "--deep"), ("restore", "prod", "--to", str(tmp_path / "nope")), ("ls", "prod")):
        r = p.cli(*args, check=2)
        assert "write-only" in r.stderr and "--key" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "nope").exists() or not any((tmp_path / "nope").iterdir())

    # The private key file, kept offline, reads everything.
    assert ls_keys(p, "--key", "offline.key") == sorted(objects)
    p.cli("restore", "prod", "--to", str(tmp_path / "out"), "--key", "offline.key")
    assert read_dir(tmp_path / "out") == objects
    deep = p.json("verify", "--deep", "--key", "offline.key")
    assert deep["ok"] and deep["chunks_checked"] >= len(objects)

    # Later runs: changes and tombstones, still verifiable without the private key.
    fill(fs, bucket, {"data/000.bin": b"changed", "new.txt": b"new"})
    fs.rm_file(f"{bucket}/data/001.bin")
    second = p.json("run")["jobs"][0]
    assert (second["copied"], second["tombstones"]) == (2, 1)
    assert p.json("verify")["ok"]

    # Shallow verify without the private key still notices a truncated content blob.
    victim = max(data_blobs, key=lambda f: f.stat().st_size)  # the pack holding the objects
    victim.chmod(0o600)
    victim.write_bytes(victim.read_bytes()[:-16])
    r = p.cli("verify", check=1)
    assert any(victim.name in line and "expected" in line for line in r.stdout.splitlines() if line.startswith("problem:"))


def test_daemon_key_holds_no_private_key_and_opens_no_content(tmp_path, s3_server):
    p, _, _, objects = write_only_project(tmp_path, s3_server)
    p.cli("run")
    store = LocalStore(str(tmp_path / "vault"))
    daemon = Vault.open(store, load_key_file(tmp_path / "vault.key"))
    offline = Vault.open(store, load_key_file(tmp_path / "offline.key"))
    assert daemon.keyring.recipient_priv is None and offline.keyring.recipient_priv is not None
    # The daemon's keyring object, opened with its own key, has no private key in it at all.
    master = load_key_file(tmp_path / "vault.key")
    raw = store.get(f"keys/{master.key_id}")
    config = store.get("config")
    assert unwrap_keyring(raw, master, daemon.vault_id, config).recipient_priv is None
    assert "recipient_priv" not in json.dumps(json.loads(config))
    jid = daemon.job_id("prod")
    root, _ = daemon.read_snapshot(jid, 0)  # roots: yes
    assert root.blobs and root.stats["live"] == len(objects)
    with pytest.raises(PrivateKeyNeeded):
        daemon.read_chunk(root.pages[0])  # manifest pages: no
    assert offline.read_chunk(root.pages[0])


def test_roots_must_be_signed(tmp_path, s3_server):
    p, _, _, _ = write_only_project(tmp_path, s3_server)
    p.cli("run")
    store = LocalStore(str(tmp_path / "vault"))
    vault = Vault.open(store, load_key_file(tmp_path / "offline.key"))
    jid = vault.job_id("prod")
    root, _ = vault.read_snapshot(jid, 0)
    name = f"snapshots/{jid}/{0:010d}"
    path = tmp_path / "vault" / name
    path.chmod(0o600)
    # Sealed with the right key but unsigned: refused.
    path.write_bytes(vault.seal(encode_record(root.to_json())))
    r = p.cli("verify", check=1)
    assert "signed" in r.stdout
    # Signed by another signing key: refused.
    other = Vault(store, vault.master, vault.keyring.__class__(vault.keyring.data_kek, vault.keyring.id_key,
                  vault.keyring.recipient_pub, None, os.urandom(32)), vault.config)
    path.write_bytes(other.seal_snapshot(jid, root))
    r = p.cli("verify", check=1)
    assert "signature does not verify" in r.stdout


def test_lost_catalogue_is_rebuilt_with_the_private_key(tmp_path, s3_server):
    p, fs, bucket, objects = write_only_project(tmp_path, s3_server)
    p.cli("run")
    fill(fs, bucket, {"late.txt": b"late"})
    shutil.rmtree(tmp_path / "state")
    r = p.cli("run", check=2)
    assert "private key" in r.stderr and "--key" in r.stderr
    again = p.json("run", "--key", "offline.key")["jobs"][0]
    assert again["copied"] == 1 and again["unchanged"] == len(objects)
    assert p.json("run")["jobs"][0]["copied"] == 0  # and the daemon's key carries on
    assert p.json("verify")["ok"]


def test_rotate_the_daemon_key_of_a_write_only_vault(tmp_path, s3_server):
    p, fs, bucket, objects = write_only_project(tmp_path, s3_server)
    p.cli("run")
    old = (tmp_path / "vault.key").read_text()
    p.cli("key", "rotate")
    assert (tmp_path / "vault.key").read_text() != old
    fill(fs, bucket, {"after-rotate.txt": b"x"})
    assert p.json("run")["jobs"][0]["copied"] == 1
    p.cli("restore", "prod", "--to", str(tmp_path / "out"), "--key", "offline.key")
    assert read_dir(tmp_path / "out") == {**objects, "after-rotate.txt": b"x"}


def test_init_write_only_needs_a_new_private_key_file(tmp_path, s3_server):
    p, _, _ = make_project(tmp_path, s3_server)
    assert "--private-key" in p.cli("init", "--write-only", check=2).stderr
    (tmp_path / "taken.key").write_text("x")
    assert "already exists" in p.cli("init", "--write-only", "--private-key", "taken.key", check=2).stderr
    assert "another file" in p.cli("init", "--write-only", "--private-key", "vault.key", check=2).stderr
    assert not (tmp_path / "vault" / "config").exists()


def test_a_root_lost_after_the_catalogue_commit_is_put_by_the_next_run_without_the_private_key(tmp_path):
    """The catalogue commits the sealed root before the vault holds it; the next run puts those very
    bytes, so the host of a write-only vault recovers without reading any manifest back."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(100 + i))
    daemon_key, private_key = MasterKey(os.urandom(32)), MasterKey(os.urandom(32))
    inner = LocalStore(str(tmp_path / "vault"))
    Vault.create(inner, daemon_key, private_master=private_key)
    faulty = FaultyStore(inner, {"put snapshots/": [StoreError("injected: connection refused")]})
    vault = Vault.open(faulty, daemon_key)
    cat = Catalogue(tmp_path / "catalogue.db")
    cat.bind(vault.vault_id)
    job = JobConfig(name="j", source=f"file://{src}")

    def source():
        return ObjectSource(job.source, {}, KeyFilter(("**",), ()))

    with pytest.raises(StoreError):
        run_job(vault, cat, job, source())
    faulty.assert_all_hit()
    assert not list(inner.list("snapshots/")) and cat.head("j")[0] == 0
    pending = verify(vault, cat, ["j"])  # not a rollback: the root waits in the catalogue
    assert pending.ok and any("not in the vault yet" in w for w in pending.warnings), pending.warnings
    stats = run_job(vault, cat, job, source())  # puts root 0, then writes root 1
    assert stats.seq == 1 and stats.copied == 0
    assert sorted(inner.list("snapshots/"))[0][0].endswith("/0000000000")
    assert verify(vault, cat, ["j"]).ok
    full = Vault.open(inner, private_key)
    assert verify(full, cat, ["j"], deep=True).ok
    r = restore_all(full, tmp_path / "out")
    assert r == {f"f{i}": (src / f"f{i}").read_bytes() for i in range(5)}


def restore_all(vault, out):
    r = restore(vault, "j", LocalTarget(str(out)), None, "")
    assert not r.errors
    return read_dir(out)


def test_prune_keeps_the_blob_lists(tmp_path, s3_server):
    """Blob lists are pages: every root keeps needing them, or verify without the key breaks."""
    p, fs, bucket, objects = write_only_project(tmp_path, s3_server)
    p.cli("run")
    fill(fs, bucket, {"data/000.bin": b"changed"})
    p.cli("run")
    store = LocalStore(str(tmp_path / "vault"))
    vault = Vault.open(store, load_key_file(tmp_path / "offline.key"))
    history = History.for_job(vault, "prod")
    lists = {ref.blob for root in history.roots() for ref in root.blobs}
    assert len(lists) == 2
    table = VersionTable(tmp_path / "versions.db")
    table.add_job(history, {0})  # even with snapshot 0 forgotten
    assert lists <= {ref.blob for ref in table.referenced()}
