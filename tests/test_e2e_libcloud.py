"""Replicate an S3 bucket into libcloud:// vaults (apache-libcloud drivers), verify, restore.

The same flow as tests/test_e2e_backends.py, through the CLI, with the vault behind a libcloud
driver: Provider.S3 against moto, Provider.AZURE_BLOBS against Azurite. Credentials come from
`env:` references in the `[vault] options` table. The store conformance suite runs the same two
drivers (tests/test_store_conformance.py, libcloud-*); a short check covers Provider.MINIO.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

import pytest

import servers
from project import UNUSUAL, read_dir, unique
from replicator.errors import AlreadyExists, NotFound, StoreError
from replicator.stores import open_store
from replicator.stores.libcloud_store import LibcloudStore
from test_e2e_incident import fill, make_project

VAULT_SECRET_ENV = "LIBCLOUD_VAULT_SECRET"


def _vault(kind: str, request) -> tuple[str, dict, str]:
    """(vault URL, [vault] options as written in the TOML, the secret the env reference names)."""
    if kind in ("s3", "minio"):
        endpoint = urlparse(request.getfixturevalue("s3_server").endpoint_url)
        options = {"key": "testing", "secret": f"env:{VAULT_SECRET_ENV}",
                   "host": endpoint.hostname, "port": endpoint.port, "secure": False}
        return f"libcloud://{kind}/{unique('vault')}/replicator", options, "testing"
    if kind == "azure_blobs":  # a custom host makes the driver use Azurite's /ACCOUNT/... paths
        endpoint = urlparse(request.getfixturevalue("azure_server").endpoint_url)
        options = {"key": servers.AZURITE_ACCOUNT, "secret": f"env:{VAULT_SECRET_ENV}",
                   "host": endpoint.hostname, "port": endpoint.port, "secure": False}
        return f"libcloud://azure_blobs/{unique('vault')}/replicator", options, servers.AZURITE_KEY
    raise AssertionError(kind)


def _vault_names(url: str, options: dict, secret: str) -> list[str]:
    """Every object the replicator wrote, as the provider lists it (read-only, straight from the driver)."""
    store = LibcloudStore(url, {**options, "secret": secret})
    return sorted(name for name, _ in store.list())


@pytest.mark.parametrize("kind", ["s3", "azure_blobs"])
def test_replicate_verify_restore_on_libcloud_vault(kind, request, tmp_path, s3_server):
    url, options, secret = _vault(kind, request)
    p, fs, bucket = make_project(tmp_path, s3_server, vault_url=url, vault_options=options)
    p.env[VAULT_SECRET_ENV] = secret
    objects = {**UNUSUAL, "large/object.bin": os.urandom(9 * 2**20 + 12345)}  # three 4 MiB chunks
    fill(fs, bucket, objects)

    assert "no vault yet" in p.cli("check-config").stdout
    p.cli("init")  # creates the container
    refused = p.cli("init", check=2)
    assert refused.stderr.count("\n") == 1  # refuses to touch the vault, in one line
    assert "key file opens it" in p.cli("check-config").stdout
    run = p.json("run")["jobs"][0]
    assert run["copied"] == len(objects)
    written = _vault_names(url, options, secret)
    assert written and any(n.startswith("data/") for n in written)

    # Change one object, add one: the second run copies exactly those.
    fs.pipe_file(f"{bucket}/plain.txt", b"second version")
    fs.pipe_file(f"{bucket}/new/object.txt", b"new")
    assert p.json("run")["jobs"][0]["copied"] == 2
    # Append-only: everything the first run wrote is still there, untouched.
    assert set(written) <= set(_vault_names(url, options, secret))

    v = p.json("verify", "--deep")
    assert v["ok"] and v["jobs"] == {"prod": 2} and v["chunks_checked"] >= len(objects)

    latest = {**objects, "plain.txt": b"second version", "new/object.txt": b"new"}
    out = tmp_path / "out"
    p.cli("restore", "prod", "--to", str(out))
    assert read_dir(out) == latest
    snaps = p.json("snapshots")["snapshots"]
    assert len(snaps) == 2
    for snap, expected in [(snaps[0], objects), (snaps[1], latest)]:
        target = tmp_path / f"out-{snap['time'].replace(':', '')}"
        p.cli("restore", "prod", "--to", str(target), "--at", snap["time"])
        assert read_dir(target) == expected

    # The vault secret never reaches the output, even though it came through the options table.
    for args in (("check-config",), ("status",)):
        r = p.cli(*args, check=None)
        assert secret not in r.stdout + r.stderr, args


def test_wrong_vault_secret_is_one_line_without_the_secret(request, tmp_path, s3_server):
    """Azurite checks Shared Key signatures (moto accepts any S3 credentials, so S3 is not tried)."""
    url, options, good = _vault("azure_blobs", request)
    p, _, _ = make_project(tmp_path, s3_server, vault_url=url, vault_options=options)
    p.env[VAULT_SECRET_ENV] = good
    p.cli("init")
    wrong = "V1JPTkdTRUNSRVQhV1JPTkdTRUNSRVQh"  # base64, as account keys are; distinctive
    p.env[VAULT_SECRET_ENV] = wrong
    r = p.cli("run", check=None)
    assert r.returncode != 0
    assert wrong not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    c = p.cli("check-config", check=None)
    assert c.returncode != 0 and "access denied" in c.stdout, c.stdout
    assert wrong not in c.stdout + c.stderr


def test_minio_driver_is_an_s3_vault_too(s3_server):
    """Provider.MINIO (another S3-API driver class, host required, no extra kwargs) on moto."""
    endpoint = urlparse(s3_server.endpoint_url)
    store = open_store(f"libcloud://MinIO/{unique('vault')}/v", {
        "key": "testing", "secret": "testing", "host": endpoint.hostname, "port": endpoint.port, "secure": False})
    assert store.exists() is False
    store.create()
    store.put("data/ab/x", b"payload")
    with pytest.raises(AlreadyExists):
        store.put("data/ab/x", b"other")
    assert store.get("data/ab/x", 2, 3) == b"ylo"
    assert sorted(store.list("data/")) == [("data/ab/x", 7)]
    with pytest.raises(NotFound):
        store.stat("data/ab/y")


SECRET = "Zq7-DISTINCTIVE-libcloud-s3cr3t"


@pytest.mark.parametrize(("url", "options", "expect"), [
    ("libcloud://no_such_cloud/c/p", {"key": "k", "secret": SECRET}, "unknown libcloud storage provider"),
    ("libcloud://minio/c", {"key": "k", "secret": SECRET}, "host argument is required"),  # MinIO needs a host
    ("libcloud://s3/c", {"key": "k", "secret": SECRET, "region": "mars-north-1"}, "bad options"),
    ("libcloud://azure_blobs/c", {"key": "acct", "secret": "DISTINCTIVEazureKEY"}, "bad options"),  # not base64
    ("libcloud://s3", {}, "expected libcloud://PROVIDER/CONTAINER"),
    ("libcloud://s3/c/../x", {}, "invalid prefix"),
])
def test_bad_url_or_options_is_one_line_without_the_secret(url, options, expect):
    with pytest.raises(StoreError) as e:
        open_store(url, options)
    text = str(e.value)
    assert expect in text and "\n" not in text, text
    assert SECRET not in text and "DISTINCTIVEazureKEY" not in text, text
    assert e.value.__cause__ is None


# -- driver quirks the adapter works around -------------------------------------------------


def _s3_options(s3_server, **extra) -> dict:
    endpoint = urlparse(s3_server.endpoint_url)
    return {"key": "testing", "secret": "testing", "host": endpoint.hostname, "port": endpoint.port,
            "secure": False, **extra}


def test_bucket_outside_us_east_1_is_created(s3_server):
    """S3StorageDriver(region=...) sends no LocationConstraint on its own; the adapter adds it."""
    store = open_store(f"libcloud://s3/{unique('vault')}/v", _s3_options(s3_server, region="eu-west-1"))
    store.create()
    assert store.exists()
    store.put("config", b"{}")
    assert store.get("config") == b"{}"


@pytest.mark.parametrize("mode", ["s3", "s3-unverified", "generic"])
def test_each_create_only_mode_refuses_an_existing_name(mode, s3_server, monkeypatch):
    """Through the S3 driver on moto: the AWS path (If-None-Match alone), the path for other S3 API
    endpoints (HEAD first, then If-None-Match; what the conformance suite runs, moto not being AWS)
    and the path for drivers without any precondition (check, then the driver's own upload)."""
    store = LibcloudStore(f"libcloud://s3/{unique('vault')}/v", _s3_options(s3_server))
    assert store._mode == "s3-unverified"  # a non-AWS host
    store.create()
    monkeypatch.setattr(store, "_mode", mode)
    store.put("data/ab/x", b"original")
    with pytest.raises(AlreadyExists):
        store.put("data/ab/x", b"replacement")
    assert store.get("data/ab/x") == b"original"
    store.put("empty", b"")
    assert sorted(store.list()) == [("data/ab/x", 8), ("empty", 0)]


def test_stalled_endpoint_times_out():
    """libcloud sends streaming requests (downloads) without a timeout; the adapter's `timeout`
    option covers them too. The endpoint accepts connections and never answers."""
    import socket
    import time

    from replicator.errors import StoreUnreachable

    with socket.socket() as sink:
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)
        options = {"key": "k", "secret": SECRET, "host": "127.0.0.1", "port": sink.getsockname()[1],
                   "secure": False, "timeout": 1}
        store = LibcloudStore("libcloud://s3/bucket/v", options)  # the adapter alone, without retries
        for call in (lambda: store.get("x"), lambda: store.get("x", 5, 5), lambda: store.put("x", b"1"),
                     lambda: list(store.list()), store.exists):
            t0 = time.monotonic()
            with pytest.raises(StoreUnreachable, match="timed out") as e:
                call()
            assert time.monotonic() - t0 < 5
            assert SECRET not in str(e.value)


_PRECONDITION_FAILED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>PreconditionFailed</Code>"
                        b"<Message>At least one of the pre-conditions you specified did not hold.</Message></Error>")


class _FakeGCS:
    """Records requests the Google Storage driver sends (through it as an HTTP proxy); the first
    PUT of a name succeeds, later ones fail their precondition with 412, as GCS answers."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, dict, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: bytes = b"") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                if code == 200:
                    self.send_header("ETag", '"0123"')
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self):
                fake.requests.append(("HEAD", self.path, dict(self.headers), b""))
                self._reply(200)

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                taken = any(r[0] == "PUT" and r[1] == self.path for r in fake.requests)
                fake.requests.append(("PUT", self.path, dict(self.headers), body))
                self._reply(412, _PRECONDITION_FAILED) if taken else self._reply(200)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_google_storage_put_carries_the_generation_precondition():
    """No emulator speaks the XML/HMAC API the Google Storage driver uses: check the requests it
    sends instead. (A `host` option breaks that driver -- libcloud passes it positionally as
    auth_type -- so the fake is reached as an HTTP proxy.)"""
    import base64
    import hashlib

    fake = _FakeGCS()
    try:
        store = open_store("libcloud://google_storage/bkt/vault", {
            "key": "GOOG1EXAMPLEEXAMPLEEXAMPLE", "secret": SECRET, "secure": False, "proxy_url": fake.url})
        assert store.exists()
        store.put("data/ab/x y", b"hello")
        with pytest.raises(AlreadyExists):
            store.put("data/ab/x y", b"other")
    finally:
        fake.close()
    puts = [r for r in fake.requests if r[0] == "PUT"]
    assert [p[1] for p in puts] == ["http://storage.googleapis.com/bkt/vault/data/ab/x%20y"] * 2
    for (_, _, headers, body), sent in zip(puts, [b"hello", b"other"]):
        assert body == sent
        assert headers["x-goog-if-generation-match"] == "0"
        assert headers["Content-MD5"] == base64.b64encode(hashlib.md5(sent).digest()).decode()
        assert headers["Authorization"].startswith("GOOG1 GOOG1EXAMPLEEXAMPLEEXAMPLE:")
        assert SECRET not in str(headers)


@pytest.mark.parametrize("kind", ["s3", "azure_blobs"])
def test_list_times_reports_the_providers_write_times(kind, request):
    """What prune orders snapshots by: the write time each provider's listing carries."""
    from datetime import datetime, timedelta, timezone

    url, options, secret = _vault(kind, request)
    store = LibcloudStore(url, {**options, "secret": secret})
    store.create()
    store.put("snapshots/j/0000000001", b"1")
    store.put("data/ab/x", b"xx")
    now = datetime.now(timezone.utc)
    got = sorted(store.list_times())
    assert [(n, s) for n, s, _ in got] == [("data/ab/x", 2), ("snapshots/j/0000000001", 1)]
    for _, _, t in got:
        assert t.tzinfo is not None and abs(t - now) < timedelta(minutes=2), t
    assert [n for n, _, _ in store.list_times("snapshots/")] == ["snapshots/j/0000000001"]
