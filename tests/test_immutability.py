"""Vaults the replicator itself cannot destroy: [vault.immutability], the probe, retention extension.

S3 tests run against the real moto server, which enforces Object Lock (COMPLIANCE/GOVERNANCE
refuse DeleteObject with VersionId, a bypass header lifts GOVERNANCE). The GCS and Azure tests
are REQUEST-SHAPE tests: fake-gcs-server ignores retention and Azurite answers 501 to immutability
calls, so no local server can prove those providers enforce anything. What they do prove: the
exact requests our code sends (captured from the real SDK/HTTP path where a server is involved,
or from a fake client object where marked), and that a bucket/container without retention
support is refused. On those providers the probe is the runtime safety net.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest

from project import Project, s3_fs, unique
from servers import free_port
from test_e2e_incident import fill

DAY = 86400.0


# -- helpers ---------------------------------------------------------------------------------


def s3_client(s3_server):
    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def immutability_table(mode: str | None, retain_days: int = 30, extend_before_days: int | None = None) -> str:
    if mode is None:
        return ""
    text = f'[vault.immutability]\nmode = "{mode}"\nretain_days = {retain_days}\n'
    if extend_before_days is not None:
        text += f"extend_before_days = {extend_before_days}\n"
    return text + "\n"


def project(tmp_path, s3_server, vault_url: str, vault_options: dict | None = None, mode: str | None = None,
            retain_days: int = 30, extend_before_days: int | None = None, objects: dict | None = None):
    fs = s3_fs(s3_server)
    src = unique("prod")
    fs.mkdir(src)
    fill(fs, src, objects if objects is not None else {f"obj/{i:03d}.bin": os.urandom(3000 + i) for i in range(12)})
    p = Project(tmp_path, vault_url, s3_server.fsspec_options() if vault_options is None else vault_options,
                jobs=[{"name": "prod", "source": f"s3://{src}/", "schedule": "15m",
                       "source_options": {"endpoint_url": s3_server.endpoint_url, "key": "testing", "secret": "testing"}}])
    p.write_config()
    set_immutability(p, mode, retain_days, extend_before_days)
    return p, fs, src


def set_immutability(p: Project, mode: str | None, retain_days: int = 30, extend_before_days: int | None = None) -> None:
    text = p.config.read_text()
    if "[vault.immutability]" in text:
        head, rest = text.split("[vault.immutability]", 1)
        text = head + "[state]" + rest.split("[state]", 1)[1]
    p.config.write_text(text.replace("[state]", immutability_table(mode, retain_days, extend_before_days) + "[state]", 1))


def locked_bucket(s3_server) -> str:
    bucket = unique("vault")
    s3_client(s3_server).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return bucket


def vault_versions(client, bucket: str, prefix: str = "replicator/") -> list[dict]:
    """Every version of the vault's objects, but canaries and writer leases (neither is history)."""
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += [v for v in page.get("Versions", []) if not v["Key"].startswith((prefix + "probe/", prefix + "leases/"))]
    return out


def one_line_error(r, key: str = "vault.immutability.mode") -> None:
    assert r.stderr.startswith(f"replicator: error: {key}:"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize("table, path, words", [
    ('mode = "forever"\nretain_days = 3', "vault.immutability.mode", "compliance"),
    ("retain_days = 3", "vault.immutability.mode", "missing"),
    ('mode = "governance"', "vault.immutability.retain_days", "missing"),
    ('mode = "governance"\nretain_days = 0', "vault.immutability.retain_days", "between"),
    ('mode = "governance"\nretain_days = 1.5', "vault.immutability.retain_days", "integer"),
    ('mode = "governance"\nretain_days = 10\nextend_before_days = 11', "vault.immutability.extend_before_days", "exceed"),
    ('mode = "governance"\nretain_days = 10\nretain = 3', "vault.immutability.retain", "unknown key"),
])
def test_config_errors_name_the_key_path(table, path, words):
    from replicator.config import parse
    from replicator.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse(f'[vault]\nurl = "s3://b/p"\n[vault.immutability]\n{table}\n', Path("."))
    assert str(e.value).startswith(f"{path}:") and words in str(e.value)


def test_config_defaults():
    from replicator.config import parse

    cfg = parse('[vault]\nurl = "s3://b/p"\n[vault.immutability]\nmode = "compliance"\nretain_days = 365\n', Path("."))
    assert (cfg.vault.immutability.mode, cfg.vault.immutability.retain_days, cfg.vault.immutability.extend_before_days) \
        == ("compliance", 365, 91)
    assert parse('[vault]\nurl = "s3://b/p"\n', Path(".")).vault.immutability is None


# -- S3 against moto: retention on every write, refusals, the probe ------------------------------------


@pytest.mark.parametrize("mode", ["compliance", "governance"])
def test_every_vault_object_version_carries_the_configured_retention(mode, tmp_path, s3_server):
    bucket = locked_bucket(s3_server)
    p, fs, src = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode=mode, retain_days=30)
    t0 = time.time()
    p.cli("init")
    p.cli("run")
    fill(fs, src, {"obj/000.bin": b"changed", "new.txt": b"new"})
    p.cli("run")
    t1 = time.time()
    client = s3_client(s3_server)
    versions = vault_versions(client, bucket)
    names = {v["Key"] for v in versions}
    assert "replicator/config" in names and any(n.startswith("replicator/keys/") for n in names)
    assert sum(n.startswith("replicator/snapshots/") for n in names) == 2 and sum(n.startswith("replicator/data/") for n in names) == 4  # a pack and a page per run
    for v in versions:
        head = client.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        assert head["ObjectLockMode"] == mode.upper(), v["Key"]
        until = head["ObjectLockRetainUntilDate"].timestamp()
        assert t0 + 30 * DAY - 5 <= until <= t1 + 30 * DAY + 5, (v["Key"], until - t0)

    # Deleting a locked version is refused, for blobs, snapshot roots and the config alike.
    for key in ("replicator/config", sorted(n for n in names if "/snapshots/" in n)[0],
                sorted(n for n in names if "/data/" in n)[0]):
        vid = next(v["VersionId"] for v in versions if v["Key"] == key)
        with pytest.raises(client.exceptions.ClientError) as e:
            client.delete_object(Bucket=bucket, Key=key, VersionId=vid)
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert client.head_object(Bucket=bucket, Key=key, VersionId=vid)["ContentLength"] > 0

    # The probe. COMPLIANCE: nothing our credentials do destroys the canary. GOVERNANCE: moto has no
    # IAM, so these credentials hold s3:BypassGovernanceRetention, and the probe proves they can use it.
    r = p.cli("verify", "--json", check=None)
    report = json.loads(r.stdout)
    prot = report["protection"]
    assert prot["lock"]["enabled"] is True and "Object Lock enabled" in prot["lock"]["summary"]
    assert prot["immutability"] == mode
    outcomes = {a["action"]: a["outcome"] for a in prot["attempts"]}
    assert outcomes["DeleteObject with VersionId"] == "refused"
    assert outcomes["PutObject over the canary (overwrite)"] == "survived"
    if mode == "compliance":
        assert r.returncode == 0 and report["ok"] and prot["protected"] is True
        assert "vault is protected" in p.cli("verify").stdout
    else:
        assert r.returncode == 1 and prot["protected"] is False
        assert outcomes["DeleteObject with VersionId and x-amz-bypass-governance-retention"] == "destroyed"
        assert any("not protected" in x and "bypass-governance" in x for x in report["problems"])
    if mode == "compliance":
        # The canary carries the configured mode (for a day); surviving canaries hide behind a delete marker.
        key = f"replicator/{prot['canary']}"
        heads = [client.head_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
                 for v in client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]]
        locked = [h for h in heads if h.get("ObjectLockMode") == "COMPLIANCE"]
        assert len(locked) == 1 and abs(locked[0]["ObjectLockRetainUntilDate"].timestamp() - (time.time() + DAY)) < 120
        assert not fs.find(f"{bucket}/replicator/probe/")  # listings stay clean
        # moto has no IAM: these credentials can add delete markers. Verify and check-config say so,
        # and a vault "deleted" that way is recognised, never offered to `init` again.
        assert any("can delete" in w and "delete marker" in w for w in report["warnings"]), report["warnings"]
        assert any("can delete" in w for w in p.json("check-config")["warnings"])
        for v in vault_versions(client, bucket):
            client.delete_object(Bucket=bucket, Key=v["Key"])
        for cmd in (("verify",), ("run",), ("init",)):
            r = p.cli(*cmd, check=2)
            assert "hidden behind delete markers" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_without_object_lock_init_run_and_check_config_refuse(tmp_path, s3_server):
    bucket = unique("vault")
    s3_client(s3_server).create_bucket(Bucket=bucket)
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="governance")
    for cmd in ("init", "check-config"):
        r = p.cli(cmd, check=2)
        one_line_error(r)
        assert "Object Lock is not enabled" in r.stderr
    assert not (tmp_path / "vault.key").exists()  # init refused before creating anything
    # A vault made without immutability; then the config asks for it: run refuses, writes nothing.
    set_immutability(p, None)
    p.cli("init")
    p.cli("run")
    before = vault_versions(s3_client(s3_server), bucket)
    set_immutability(p, "compliance")
    r = p.cli("run", check=2)
    one_line_error(r)
    assert vault_versions(s3_client(s3_server), bucket) == before


def test_init_creates_a_missing_bucket_with_object_lock(tmp_path, s3_server):
    bucket = unique("vault")
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="compliance", retain_days=2)
    p.cli("init")
    client = s3_client(s3_server)
    assert client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert client.head_object(Bucket=bucket, Key="replicator/config")["ObjectLockMode"] == "COMPLIANCE"


def test_probe_on_an_unprotected_vault(tmp_path, s3_server):
    """No Object Lock, no [vault.immutability]: verify warns (exit 0), check-config warns (exit 0)."""
    bucket = unique("vault")
    s3_client(s3_server).create_bucket(Bucket=bucket)
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator")
    p.cli("init")
    p.cli("run")
    report = p.json("verify")
    assert report["ok"] and report["protection"]["protected"] is False
    assert report["protection"]["lock"]["enabled"] is False
    assert any(w.startswith("vault is not protected: PutObject over the canary (overwrite) destroyed")
               for w in report["warnings"])
    out = p.cli("check-config").stdout
    assert "warn the vault credentials can delete or overwrite vault objects" in out
    assert "lock configuration: S3 Object Lock is not enabled" in out
    quiet = p.json("verify", "--no-probe")
    assert quiet["protection"] is None and not any("protected" in w for w in quiet["warnings"])
    # The last probe is recorded in the catalogue, for the daemon's replicator_vault_protected gauge.
    from replicator.catalogue import Catalogue

    cat = Catalogue(tmp_path / "state" / "catalogue.db")
    assert json.loads(cat.meta("probe:last"))["protected"] is False
    cat.close()


def test_probe_of_a_local_vault_and_refusal_of_immutability_there(tmp_path, s3_server):
    p, _, _ = project(tmp_path, s3_server, str(tmp_path / "vault"), vault_options={})
    p.cli("init")
    report = p.json("verify")
    assert report["ok"] and report["protection"]["protected"] is False
    assert report["protection"]["attempts"] == [{"action": "delete", "outcome": "destroyed", "detail": "it succeeded"}]
    assert not any((tmp_path / "vault" / "probe").iterdir())
    set_immutability(p, "compliance")
    for cmd in ("check-config", "run"):
        r = p.cli(cmd, check=2)
        one_line_error(r)
        assert "file vaults have no provider-enforced retention" in r.stderr


# -- retention extension ---------------------------------------------------------------------------


def test_retention_extension_keeps_live_blobs_protected(tmp_path, s3_server):
    from replicator.catalogue import Catalogue
    from replicator.config import load
    from replicator.immutability import extend_retention
    from replicator.stores import open_store
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    bucket = locked_bucket(s3_server)
    p, fs, src = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="compliance", retain_days=30,
                         extend_before_days=10)
    p.cli("init")
    p.cli("run")
    first = p.json("verify", "--extend-retention")["retention"]
    assert first["extended"] == 0 and first["snapshots_scanned"] == 1
    # config + keyring + root + page + the one pack of the 12 small objects, all written moments ago:
    # read back, not rewritten
    assert first["tracked"] == first["checked"] == 5 and not first["errors"]

    cfg = load(p.config)
    vault = Vault.open(open_store(cfg.vault.url, cfg.vault.options, None, cfg.vault.immutability),
                       load_key_file(cfg.vault.key_file))
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    cat.bind(vault.vault_id)
    client = s3_client(s3_server)

    def until(key: str) -> float:
        return client.head_object(Bucket=bucket, Key=f"replicator/{key}")["ObjectLockRetainUntilDate"].timestamp()

    blob = next(n for n, _ in vault.store.list("data/"))
    root = next(n for n, _ in vault.store.list("snapshots/"))
    # 15 days on: nothing ends within 10 days yet, so nothing is touched.
    later = datetime.now(timezone.utc) + timedelta(days=15)
    r = extend_retention(vault, cat, 30, 10, now=later)
    assert (r.due, r.extended) == (0, 0)
    # 25 days on, the blob is still live: it is extended to "then + 30 days", as are the root and the pages.
    # Somebody with the replicator's credentials puts garbage on top of the blob first: the
    # version the replicator wrote (the oldest) is the one lengthened, not theirs.
    before = until(blob)
    ours = client.list_object_versions(Bucket=bucket, Prefix=f"replicator/{blob}")["Versions"][0]["VersionId"]
    client.put_object(Bucket=bucket, Key=f"replicator/{blob}", Body=b"garbage on top")
    later = datetime.now(timezone.utc) + timedelta(days=25)
    r = extend_retention(vault, cat, 30, 10, now=later)
    assert r.ok and r.due == r.extended == 5
    for key in (root, "config"):
        assert abs(until(key) - (later.timestamp() + 30 * DAY)) < 5
    mine = client.head_object(Bucket=bucket, Key=f"replicator/{blob}", VersionId=ours)["ObjectLockRetainUntilDate"]
    assert abs(mine.timestamp() - (later.timestamp() + 30 * DAY)) < 5 and mine.timestamp() > before + 20 * DAY
    garbage = client.head_object(Bucket=bucket, Key=f"replicator/{blob}")
    assert "ObjectLockRetainUntilDate" not in garbage  # the bucket has no default retention here
    # The next pass touches nothing: the catalogue knows how long each object is protected.
    r = extend_retention(vault, cat, 30, 10, now=later)
    assert (r.due, r.extended) == (0, 0)
    # A new snapshot that reuses old chunks: only its new objects are read back.
    fill(fs, src, {"extra.bin": b"x" * 100})
    p.cli("run")
    r = extend_retention(vault, cat, 30, 10)
    assert r.snapshots_scanned == 1 and r.due == 3 and r.checked == 3 and r.extended == 0  # root, page, pack
    cat.close()


def test_extension_protects_objects_written_before_immutability_was_configured(tmp_path, s3_server):
    bucket = locked_bucket(s3_server)  # Object Lock on, but no default retention and no mode configured
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator")
    p.cli("init")
    p.cli("run")
    client = s3_client(s3_server)
    assert all("ObjectLockMode" not in client.head_object(Bucket=bucket, Key=v["Key"])
               for v in vault_versions(client, bucket))
    set_immutability(p, "compliance", retain_days=7)
    report = p.json("verify", "--extend-retention")
    assert report["ok"] and report["retention"]["extended"] == report["retention"]["tracked"] == 5
    for v in vault_versions(client, bucket):
        head = client.head_object(Bucket=bucket, Key=v["Key"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(head["ObjectLockRetainUntilDate"].timestamp() - (time.time() + 7 * DAY)) < 120


def test_extension_never_shortens_or_weakens():
    """Unit test of the rule (a fake S3 call surface; moto itself would allow shortening)."""
    from replicator.stores.immutable import Retention
    from replicator.stores.retention import S3Retention

    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    calls = []

    class FakeS3Store:
        root, url = "bkt/vault", "s3://bkt/vault"

        class fs:
            @staticmethod
            def call_s3(method, **kw):
                calls.append((method, kw))
                if method == "head_object":
                    return {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": now + timedelta(days=50)}
                if method == "list_object_versions":  # newest first: an overwrite on top of ours ("v1")
                    return {"Versions": [{"Key": "vault/data/x", "VersionId": "v2"},
                                         {"Key": "vault/data/x", "VersionId": "v1"}]}
                return {}

        def _path(self, name):
            return f"{self.root}/{name}"

        def _errors(self, name):
            import contextlib
            return contextlib.nullcontext()

    b = S3Retention(FakeS3Store())
    assert b.extend("data/x", Retention("governance", now + timedelta(days=40))) == Retention("compliance", now + timedelta(days=50))
    assert [c[0] for c in calls] == ["list_object_versions", "head_object"]
    assert calls[-1][1]["VersionId"] == "v1"
    calls.clear()
    assert b.extend("data/x", Retention("governance", now + timedelta(days=60))) == Retention("compliance", now + timedelta(days=60))
    assert calls[-1] == ("put_object_retention", {"Bucket": "bkt", "Key": "vault/data/x", "VersionId": "v1", "Retention": {
        "Mode": "COMPLIANCE", "RetainUntilDate": now + timedelta(days=60)}})


# -- the daemon ------------------------------------------------------------------------------------


def test_daemon_gauge_follows_the_last_probe_and_maintenance_is_scheduled(tmp_path, s3_server):
    from test_daemon import scrape

    bucket = locked_bucket(s3_server)
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="compliance", retain_days=3)
    port = free_port()
    p.config.write_text(p.config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    p.cli("init")
    p.cli("run")  # the catalogue, where verify records its probe
    assert p.json("verify")["protection"]["protected"] is True
    proc = p.popen("daemon")
    try:
        deadline = time.monotonic() + 30
        m = {}
        while time.monotonic() < deadline:  # the gauge exists (0) from the start; 1 once the record is read
            try:
                m = scrape(port)
                if m.get(("replicator_vault_protected", ())) == 1.0:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert m.get(("replicator_vault_protected", ())) == 1.0
        assert not any(k[0] == "replicator_job_next_run_timestamp_seconds" and ("job", "@vault-maintenance") in k[1]
                       for k in m)
    finally:
        proc.terminate()
        p.finish(proc)


def test_daemon_maintenance_probes_and_extends(tmp_path, s3_server):
    """The daily job's work, run in-process: probe result recorded, gauge set, retention extended."""
    from replicator import metrics
    from replicator.catalogue import Catalogue
    from replicator.config import load
    from replicator.daemon import MAINTENANCE, Daemon
    from replicator.immutability import maintain
    from replicator.stores import open_store
    from replicator.vault.keys import load_key_file
    from replicator.vault.vault import Vault

    bucket = locked_bucket(s3_server)
    p, _, _ = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="governance", retain_days=3)
    p.cli("init")
    p.cli("run")
    cfg = load(p.config)

    def open_vault(c):
        return Vault.open(open_store(c.vault.url, c.vault.options, None, c.vault.immutability), load_key_file(c.vault.key_file))

    vault = open_vault(cfg)
    metrics.VAULT_PROTECTED.set(1)
    maintain(cfg, vault)
    assert metrics.REGISTRY.get_sample_value("replicator_vault_protected") == 0  # governance bypass works on moto
    cat = Catalogue(cfg.state_dir / "catalogue.db")
    last = json.loads(cat.meta("probe:last"))
    assert last["protected"] is False and "bypass-governance" in last["how"]
    assert cat.retention_summary()[0] == 5  # config, keyring, root, page, pack
    cat.close()
    # the pass's outcome, for the ReplicatorRetentionAtRisk alert: nothing failed, and protection
    # (3 days here) ends when the earliest object's does
    assert metrics.REGISTRY.get_sample_value("replicator_retention_last_pass_problems") == 0
    until = metrics.REGISTRY.get_sample_value("replicator_retention_protected_until_timestamp_seconds")
    assert abs(until - (time.time() + 3 * DAY)) < 600, until - time.time()
    d = Daemon(lambda: cfg, open_vault)
    d._schedule(cfg, first=True)
    job = d.scheduler.get_job(MAINTENANCE)
    assert job is not None and job.trigger.interval == timedelta(days=1)
    assert job.next_run_time > datetime.now(timezone.utc) + timedelta(hours=23)  # a day after the last probe


# -- Azure: request shapes (Azurite cannot enforce immutability) -----------------------------------


def azure_store(azure_server, container: str | None = None):
    from replicator.stores.fsspec_store import FsspecStore

    store = FsspecStore(f"az://{container or unique('vault')}/replicator", {"connection_string": azure_server.connection_string})
    store.create()
    return store


def test_azure_put_and_extend_send_version_level_immutability_requests(azure_server):
    """REQUEST SHAPE against Azurite: the real adlfs + azure-storage-blob path, headers captured by the
    SDK's raw_request_hook. Azurite accepts and ignores the Put Blob headers, and answers 501 to
    Set Blob Immutability Policy, so enforcement is NOT proven here."""
    from replicator.errors import StoreError
    from replicator.stores.immutable import Retention
    from replicator.stores.retention import AzureRetention

    store = azure_store(azure_server)
    backend = AzureRetention(store)
    sent = []
    backend.sdk_kwargs = {"raw_request_hook": lambda r: sent.append((r.http_request.method, r.http_request.url,
                                                                      dict(r.http_request.headers)))}
    until = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    backend.put("data/ab/blob", b"payload", Retention("compliance", until))
    method, url, headers = sent[-1]
    assert method == "PUT" and url.split("?")[0].endswith("/replicator/data/ab/blob")
    assert headers["x-ms-immutability-policy-until-date"] == "Tue, 06 May 2031 07:08:09 GMT"
    assert headers["x-ms-immutability-policy-mode"] == "Locked"
    assert headers["If-None-Match"] == "*"  # still create-only
    assert store.get("data/ab/blob") == b"payload"
    backend.put("data/ab/gov", b"x", Retention("governance", until))
    assert sent[-1][2]["x-ms-immutability-policy-mode"] == "Unlocked"

    sent.clear()
    with pytest.raises(StoreError):  # Azurite: 501 not implemented
        backend.extend("data/ab/blob", Retention("compliance", until + timedelta(days=31)))
    method, url, headers = sent[-1]
    assert method == "PUT" and "comp=immutabilityPolicies" in url
    assert headers["x-ms-immutability-policy-until-date"] == "Fri, 06 Jun 2031 07:08:09 GMT"
    assert headers["x-ms-immutability-policy-mode"] == "Locked"


def test_azure_container_without_version_level_immutability_is_refused(tmp_path, s3_server, azure_server):
    """Real Azurite: its containers report no version-level immutability, so init refuses (exit 2);
    without [vault.immutability] the probe deletes its canary there and says so."""
    container = unique("vault")
    azure_store(azure_server, container)
    p, _, _ = project(tmp_path, s3_server, f"az://{container}/replicator",
                      vault_options={"connection_string": azure_server.connection_string}, mode="compliance")
    r = p.cli("init", check=2)
    one_line_error(r)
    assert "version-level immutability not enabled" in r.stderr and "--enable-vlw" in r.stderr
    set_immutability(p, None)
    p.cli("init")
    report = p.json("verify")
    assert report["protection"]["protected"] is False and report["protection"]["lock"]["provider"] == "azure"


class _FakeBlob:
    """A FAKE Azure blob client (not Azurite): versioning + version-level WORM as documented."""

    def __init__(self, world, name):
        self.world, self.name = world, name

    async def __aenter__(self):
        return self

    async def __aexit__(self, *a):
        return False

    def _rec(self, method, *args, **kw):
        kw.pop("raw_request_hook", None)
        self.world.calls.append((method, self.name, args, kw))

    async def get_blob_properties(self, **kw):
        from types import SimpleNamespace

        self._rec("get_blob_properties", **kw)
        pol = self.world.policy
        return SimpleNamespace(version_id="v1", immutability_policy=SimpleNamespace(
            expiry_time=pol[1] if pol else None, policy_mode=pol[0] if pol else None))

    async def set_immutability_policy(self, policy, **kw):
        self._rec("set_immutability_policy", policy.expiry_time, policy.policy_mode, **kw)
        self.world.policy = (policy.policy_mode, policy.expiry_time)

    async def upload_blob(self, data, **kw):
        self._rec("upload_blob", **kw)  # a new version on top; v1 keeps its bytes

    async def delete_blob(self, **kw):
        from azure.core.exceptions import HttpResponseError

        self._rec("delete_blob", **kw)
        if kw.get("version_id") == "v1":
            if self.world.policy:
                raise HttpResponseError(message="This operation is not permitted as the blob is immutable due to a policy.")
            self.world.data = None  # the version is gone

    async def delete_immutability_policy(self, **kw):
        self._rec("delete_immutability_policy", **kw)
        if self.world.policy and self.world.policy[0] == "Locked":
            from azure.core.exceptions import HttpResponseError
            raise HttpResponseError(message="locked")
        self.world.policy = None

    async def download_blob(self, **kw):
        from azure.core.exceptions import ResourceNotFoundError

        self._rec("download_blob", **kw)
        world = self.world
        if world.data is None:
            raise ResourceNotFoundError("The specified blob does not exist.")

        class D:
            async def readall(self):
                return world.data
        return D()


class _FakeService:
    def __init__(self, policy):
        self.calls, self.policy, self.data = [], policy, b""

    def get_blob_client(self, container, blob):
        return _FakeBlob(self, f"{container}/{blob}")


@pytest.mark.parametrize("policy_mode, protected", [("Locked", True), ("Unlocked", False)])
def test_azure_extend_and_probe_logic_with_a_fake_blob_client(policy_mode, protected, monkeypatch):
    """FAKE blob client (no server): which calls extension and the probe make, and what they conclude.
    Unlocked (governance) is unprotected when our credentials may delete the policy."""
    from replicator.stores.fsspec_store import FsspecStore
    from replicator.stores.immutable import Retention
    from replicator.stores.retention import AzureRetention

    store = FsspecStore("az://ctr/replicator", {"connection_string": "DefaultEndpointsProtocol=http;AccountName=a;"
                        "AccountKey=YWJj;BlobEndpoint=http://127.0.0.1:9/a;"})
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    fake = _FakeService((policy_mode, now + timedelta(days=10)))
    monkeypatch.setattr(store.fs, "service_client", fake)
    b = AzureRetention(store)
    mode = "compliance" if policy_mode == "Locked" else "governance"
    assert b.retention("data/x") == Retention(mode, now + timedelta(days=10))
    assert b.extend("data/x", Retention(mode, now + timedelta(days=5))) == Retention(mode, now + timedelta(days=10))
    assert not any(c[0] == "set_immutability_policy" for c in fake.calls)  # never shortened
    b.extend("data/x", Retention(mode, now + timedelta(days=40)))
    assert fake.calls[-1][0] == "set_immutability_policy" and fake.calls[-1][2] == (now + timedelta(days=40), policy_mode)

    fake.calls.clear()
    fake.data = b"canary"
    attempts = b.probe("probe/c", b"canary")
    actions = {a.action: a.outcome for a in attempts}
    assert actions["Put Blob over the canary (overwrite)"] == "survived"
    assert actions["Delete Blob on the canary's version"] == "refused"
    assert ("delete_blob", "ctr/replicator/probe/c", (), {"version_id": "v1"}) in fake.calls
    if protected:
        assert "Delete Blob Immutability Policy (Unlocked) and delete" not in actions
        assert fake.data == b"canary"
    else:
        assert actions["Delete Blob Immutability Policy (Unlocked) and delete"] == "destroyed"
        assert ("delete_immutability_policy", "ctr/replicator/probe/c", (), {"version_id": "v1"}) in fake.calls


# -- GCS: request shapes (fake-gcs-server ignores retention) ------------------------------------------


def gcs_store(gcs_server):
    from replicator.stores.fsspec_store import FsspecStore

    store = FsspecStore(f"gs://{unique('vault')}/replicator", gcs_server.fsspec_options())
    store.create()
    return store


def test_gcs_put_and_extend_send_object_retention(gcs_server, monkeypatch):
    """REQUEST SHAPE against fake-gcs-server, through gcsfs, with the calls our code makes recorded.
    fake-gcs stores an object's `retention` and returns it, but enforces nothing (deletes and
    overwrites succeed), and it refuses *any* change to Locked retention, where GCS documents that
    Locked retention can be lengthened: enforcement is NOT proven here."""
    from replicator.errors import AlreadyExists, StoreError
    from replicator.stores.immutable import Retention
    from replicator.stores.retention import GCSRetention

    store = gcs_store(gcs_server)
    backend = GCSRetention(store)
    sent = []
    real = store.fs.call

    def recording(method, path, *args, **kw):
        sent.append((method, path, args, kw))
        return real(method, path, *args, **kw)

    monkeypatch.setattr(store.fs, "call", recording)
    until = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    backend.put("data/ab/blob", b"payload", Retention("compliance", until))
    method, path, _, kw = sent[-1]
    assert method == "POST" and path.endswith(f"/upload/storage/v1/b/{backend.bucket}/o")
    assert kw["uploadType"] == "multipart" and kw["ifGenerationMatch"] == "0"
    meta = json.loads(kw["data"].split(b"\n\n", 1)[1].split(b"\n--==0==", 1)[0])
    assert meta == {"name": "replicator/data/ab/blob",
                    "retention": {"mode": "Locked", "retainUntilTime": "2031-05-06T07:08:09.000000Z"}}
    assert store.get("data/ab/blob") == b"payload"
    assert backend.retention("data/ab/blob") == Retention("compliance", until)  # stored and read back
    with pytest.raises(AlreadyExists):
        backend.put("data/ab/blob", b"other", Retention("compliance", until))

    # Lengthening: a PATCH of `retention` alone, never with overrideUnlockedRetention.
    backend.put("data/ab/gov", b"x", Retention("governance", until))
    sent.clear()
    assert backend.extend("data/ab/gov", Retention("governance", until + timedelta(days=1))) == \
        Retention("governance", until + timedelta(days=1))
    method, path, args, kw = [x for x in sent if x[0] == "PATCH"][0]
    assert args == (backend.bucket, "replicator/data/ab/gov")
    assert kw["json"] == {"retention": {"mode": "Unlocked", "retainUntilTime": "2031-05-07T07:08:09.000000Z"}}
    assert "overrideUnlockedRetention" not in kw
    assert backend.retention("data/ab/gov") == Retention("governance", until + timedelta(days=1))
    # Never shorter, never weaker: a shorter governance request on a Locked object sends nothing.
    sent.clear()
    assert backend.extend("data/ab/blob", Retention("governance", until - timedelta(days=1))) == Retention("compliance", until)
    assert [x[0] for x in sent] == ["GET"]
    with pytest.raises(StoreError):  # fake-gcs: "Object has a locked retention policy and cannot be modified"
        backend.extend("data/ab/blob", Retention("governance", until + timedelta(days=1)))
    assert [x for x in sent if x[0] == "PATCH"][-1][3]["json"]["retention"]["mode"] == "Locked"


def test_gcs_bucket_without_object_retention_is_refused(tmp_path, s3_server, gcs_server):
    """Real fake-gcs-server: its buckets report no objectRetention, so run refuses (exit 2)."""
    store = gcs_store(gcs_server)
    p, _, _ = project(tmp_path, s3_server, store.url, vault_options=gcs_server.fsspec_options())
    p.cli("init")
    report = p.json("verify")
    assert report["protection"]["protected"] is False and "overwrite" in report["protection"]["how"]
    set_immutability(p, "governance")
    r = p.cli("run", check=2)
    one_line_error(r)
    assert "object retention not enabled" in r.stderr and "--enable-per-object-retention" in r.stderr


def test_gcs_lock_status_reads_the_bucket_resource():
    """FAKE gcsfs call surface: how the documented bucket fields are read."""
    from replicator.stores.retention import GCSRetention

    class FakeStore:
        root, url = "bkt/v", "gs://bkt/v"

        class fs:
            @staticmethod
            def call(method, path, *args, **kw):
                assert (method, path, args) == ("GET", "b/{}", ("bkt",))
                return {"objectRetention": {"mode": "Enabled"}, "versioning": {"enabled": True},
                        "retentionPolicy": {"retentionPeriod": str(90 * 86400), "isLocked": True},
                        "softDeletePolicy": {"retentionDurationSeconds": "604800"}}

        def _errors(self, name):
            import contextlib
            return contextlib.nullcontext()

    s = GCSRetention(FakeStore()).lock_status()
    assert s.enabled and s.details == {"object_retention": True, "versioning": True, "soft_delete_seconds": 604800,
                                       "bucket_retention_policy": {"seconds": 90 * 86400, "locked": True}}
    assert "bucket retention policy 90 days (locked)" in s.summary


def test_after_prune_blobs_only_forgotten_snapshots_needed_are_no_longer_tracked(tmp_path, s3_server):
    """Extension keeps what *kept* snapshots need. Once prune forgets a snapshot, the blobs only it
    needed drop out (their retention lapses, a later prune deletes them); roots and pages stay."""
    from replicator.catalogue import Catalogue

    bucket = locked_bucket(s3_server)
    p, fs, src = project(tmp_path, s3_server, f"s3://{bucket}/replicator", mode="compliance",
                         objects={"a": os.urandom(600_000), "b": os.urandom(2000)})  # "a": above the pack threshold
    p.config.write_text(p.config.read_text() + '\n[jobs.retention]\nkeep_daily = 1\nmin_age = "0s"\n')
    p.cli("init")
    p.cli("run")
    fill(fs, src, {"a": os.urandom(2000)})
    p.cli("run")
    assert p.json("verify", "--extend-retention")["retention"]["tracked"] == 9  # config, keyring, 2 roots, 2 pages, 3 chunks

    def tracked() -> set[str]:
        cat = Catalogue(tmp_path / "state" / "catalogue.db")
        try:
            return {r[0] for r in cat.db.execute("SELECT name FROM retention")}
        finally:
            cat.close()

    before = tracked()
    creds = tmp_path / "prune.toml"
    creds.write_text(f'options = {{ endpoint_url = "{s3_server.endpoint_url}", key = "testing", secret = "testing" }}\n')
    creds.chmod(0o600)
    pruned = p.json("prune", "--credentials", str(creds))
    # The first version of "a" is no longer needed. In a versioned (Object Lock) bucket prune's DeleteObject
    # only adds a delete marker: the locked version stays until its retention lapses.
    assert pruned["jobs"][0]["forget"] == [0] and pruned["blobs_deleted"] + pruned["blobs_protected"] == 1
    client = s3_client(s3_server)
    written = [v for v in vault_versions(client, bucket) if v["Key"].startswith(("replicator/forgotten/", "replicator/prune/"))]
    assert written and all(client.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                           .get("ObjectLockMode") == "COMPLIANCE" for v in written)  # prune's writes are locked too
    report = p.json("verify", "--extend-retention")
    assert report["ok"], report["problems"]
    after = tracked()
    gone, new = before - after, after - before
    assert len(gone) == 1 and next(iter(gone)).startswith("data/")  # the first version of "a"
    assert len(new) == 1 and next(iter(new)).startswith("forgotten/")
    assert {n for n in after if n.startswith("snapshots/")} == {n for n in before if n.startswith("snapshots/")}
