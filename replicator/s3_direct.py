"""S3 requests made by the calling thread, not by s3fs's event loop (issue 7).

s3fs runs every request on its one event-loop thread: with 8 copy threads every body, and every
hash botocore takes of a body it sends (the SigV4 payload hash over plain HTTP, the CRC32 it adds
to each PUT), funnels through that thread, which also competes for the interpreter with the
threads that hash, compress and seal. So a request is presigned by s3fs's own client (the same
credentials, endpoint and region, signature version 4) and sent with urllib3 by the thread that
wants it, which reads and writes its socket with the interpreter released. If-Match and Range
travel as plain headers; a PUT's If-None-Match and CRC32 are signed (they are presign parameters).

Where something else must travel with the request, s3fs makes it as before (`DirectS3.pool()` is
None): an HTTP(S) proxy for the endpoint, additional S3 arguments (SSE-C keys, requester pays,
...), or proxies or a client certificate in config_kwargs. Users: sources/s3_bodies.py (GETs of
source objects), sources/s3_listing.py (the source's ListObjectsV2 pages) and
stores/fsspec_store.py (PUTs and GETs of vault blobs).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from typing import Any
from urllib.parse import urlparse, urlsplit

from fsspec.asyn import sync

PRESIGN_SECONDS = 3600
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_UNDECIDED = object()
_SIGV4_HANDLER = "replicator-presign-sigv4"


class S3StatusError(OSError):
    """An answer to a direct request that a retry may fix (5xx, 408, 429, ...): the source's backoff
    and the store's retries read it as any transient OSError; `.status` is the HTTP status."""

    def __init__(self, method: str, status: int, code: str):
        super().__init__(f"{method} failed: HTTP {status} {code}".rstrip())
        self.status = status


class DirectS3:
    """Presigned requests to one S3 filesystem's endpoint, sent by the calling thread."""

    def __init__(self, fs):
        self.fs = fs
        self._http: Any = _UNDECIDED  # urllib3 pool, or None: s3fs makes the requests (decided at the first)
        self._lock = threading.Lock()

    def pool(self):
        """The connection pool, or None where requests must go through s3fs (see above)."""
        with self._lock:
            if self._http is _UNDECIDED:
                self._http = _new_pool(self.fs) if _direct(self.fs) else None
            return self._http

    def give_up(self) -> None:
        """The endpoint refused a direct request that s3fs then made: s3fs makes them from now on."""
        with self._lock:
            self._http = None

    def request(self, http, method: str, operation: str, bucket: str, key: str | None, params: dict | None = None,
                headers: dict | None = None, body: Any = None):
        """Send `operation` (a botocore operation name: get_object, put_object, list_objects_v2: no
        key) presigned through `http`
        (what pool() returned: another thread may give up meanwhile), with these extra headers and
        body; the urllib3 response, its body not yet read."""
        url = sync(self.fs.loop, self._presign, operation, bucket, key, params or {})
        # The target exactly as signed: a request by URL would resolve `.` and `..` in it, and keys may hold those.
        u = urlsplit(url)
        conn = http.connection_from_host(u.hostname, u.port, u.scheme)
        return conn.urlopen(method, f"{u.path}?{u.query}", body=body, headers=headers or {}, preload_content=False,
                            retries=False, redirect=False, decode_content=False, assert_same_host=False)

    async def _presign(self, operation: str, bucket: str, key: str | None, params: dict) -> str:
        await self.fs.set_session()
        client = await self.fs.get_s3(bucket)
        # botocore presigns S3 URLs with signature version 2 where a region still takes it; AWS
        # refuses that for newer buckets and KMS-encrypted objects, others (B2, R2) altogether.
        client.meta.events.register_first("choose-signer.s3", _presign_with_sigv4, unique_id=_SIGV4_HANDLER)
        named = {"Bucket": bucket} if key is None else {"Bucket": bucket, "Key": key}
        return await client.generate_presigned_url(operation, Params={**named, **params}, ExpiresIn=PRESIGN_SECONDS)


def error_code(resp) -> str:
    """The S3 error code of an answer that is not a success (its body read; the connection kept
    for the next request if that was all of it)."""
    try:
        found = _CODE.search(resp.read(4096) or b"")
    finally:
        if resp.length_remaining == 0:
            resp.release_conn()
        else:
            resp.close()  # an error's body may be longer than what was read: not for the next request
    return found.group(1).decode(errors="replace") if found else ""


def _presign_with_sigv4(signature_version, **kwargs):
    """choose-signer handler: keep signature version 4 for presigned URLs (botocore's own handler
    would turn it into version 2); anything else (unsigned, v4a) is left to the next handler."""
    if isinstance(signature_version, str) and signature_version.startswith(("s3v4", "v4")) \
            and not signature_version.startswith("v4a"):
        return signature_version
    return None


def _direct(fs) -> bool:
    """Whether a presigned request from this thread is the same request s3fs would make: nothing
    else to send (no additional S3 arguments) and no proxy between here and the endpoint."""
    if getattr(fs, "s3_additional_kwargs", None) or getattr(fs, "req_kw", None):
        return False
    config = getattr(fs, "config_kwargs", None) or {}
    if any(config.get(k) for k in ("proxies", "proxies_config", "client_cert")):
        return False
    host = urlparse(_endpoint(fs) or "https://s3.amazonaws.com").hostname or ""
    return not urllib.request.getproxies() or bool(urllib.request.proxy_bypass(host))


def _endpoint(fs) -> str | None:
    return fs.client_kwargs.get("endpoint_url") or getattr(fs, "endpoint_url", None)


def _new_pool(fs):
    """urllib3 connections verified as botocore verifies them: `verify` in client_kwargs (False, or
    a CA bundle), else the session's ca_bundle ($AWS_CA_BUNDLE, the profile), else botocore's own."""
    import urllib3
    from botocore.httpsession import get_cert_path

    verify: Any = fs.client_kwargs.get("verify", True)
    timeout = urllib3.Timeout(connect=_config(fs, "connect_timeout", 60), read=_config(fs, "read_timeout", 60))
    if verify is False:
        return urllib3.PoolManager(maxsize=32, cert_reqs="CERT_NONE", timeout=timeout)
    session = getattr(fs, "session", None)  # its ca_bundle: $AWS_CA_BUNDLE or the profile's setting
    configured = session.get_config_variable("ca_bundle") if session is not None else os.environ.get("AWS_CA_BUNDLE")
    bundle = verify if isinstance(verify, str) else configured or get_cert_path(True)
    return urllib3.PoolManager(maxsize=32, cert_reqs="CERT_REQUIRED", ca_certs=bundle, timeout=timeout)


def _config(fs, name: str, default: float) -> float:
    value = (getattr(fs, "config_kwargs", None) or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else default
