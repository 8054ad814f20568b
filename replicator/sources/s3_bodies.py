"""GET bodies of S3 objects, read by the thread that wants the bytes (issue 7).

s3fs runs every request on its one event-loop thread: with 8 copy threads, every body funnels
through that thread, which also competes for the interpreter with the threads that hash, compress
and seal. Measured here on 40 objects of 8 MiB from a moto server: 0.69 s through s3fs, 0.30 s
through 8 threads with their own connections. So each GET is presigned by s3fs's own client (the
same credentials, endpoint and region, signature version 4; If-Match and Range travel as plain
headers) and fetched with urllib3 in the calling thread, which reads its socket with the
interpreter released.

Where something else must travel with the request, s3fs reads as before: an HTTP(S) proxy for the
endpoint, additional S3 arguments (SSE-C keys, requester pays, ...), or proxies or a client
certificate in config_kwargs.

Both kinds of body offer `fill(buf, n)` (append until buf holds n bytes or the body ends) and
`close()`. Errors of a direct GET: 412 (the object is no longer the listed one) is SourceChanged;
404 is FileNotFoundError; 5xx, 408 and 429 are S3StatusError with `.status` (the source's retry
rules retry them). Any other answer (a redirect to another region, a signature the endpoint
refuses, a denial) sends the request again through s3fs, whose errors are then the real ones; if
s3fs succeeds where the direct GET did not, s3fs reads this source from then on.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from typing import Any
from urllib.parse import urlparse, urlsplit

from fsspec.asyn import sync

from replicator.errors import SourceChanged

PIECE = 256 * 1024  # bytes read at a time (what a broken connection loses)
PRESIGN_SECONDS = 3600
_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_UNDECIDED = object()
_SIGV4_HANDLER = "replicator-presign-sigv4"


def _presign_with_sigv4(signature_version, **kwargs):
    """choose-signer handler: keep signature version 4 for presigned URLs (botocore's own handler
    would turn it into version 2); anything else (unsigned, v4a) is left to the next handler."""
    if isinstance(signature_version, str) and signature_version.startswith(("s3v4", "v4")) \
            and not signature_version.startswith("v4a"):
        return signature_version
    return None


class S3StatusError(OSError):
    """A direct GET answered 5xx, 408 or 429: retried by the source's backoff."""

    def __init__(self, status: int, code: str):
        super().__init__(f"GET failed: HTTP {status} {code}".rstrip())
        self.status = status


class S3Bodies:
    """Opens GET bodies of one bucket's objects, in the calling thread where it can (see above)."""

    def __init__(self, fs, bucket: str):
        self.fs, self.bucket = fs, bucket
        self._http: Any = _UNDECIDED  # urllib3 pool, or None: s3fs reads (decided at the first GET)
        self._lock = threading.Lock()

    def open(self, key: str, etag: str | None, version: str | None, byte_range: str | None):
        """The body of a GET of the listed version (its VersionId, If-Match its ETag) of `key`, from
        `byte_range` (`bytes=START-` or `bytes=START-END`) or whole; SourceChanged if it changed."""
        http = self._pool()
        if http is None:
            return self._s3fs_body(key, etag, version, byte_range)
        url = sync(self.fs.loop, self._presign, key, version)
        headers = {}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        if byte_range:
            headers["Range"] = byte_range
        # The target exactly as signed: a request by URL would resolve `.` and `..` in it, and keys may hold those.
        u = urlsplit(url)
        pool = http.connection_from_host(u.hostname, u.port, u.scheme)
        resp = pool.urlopen("GET", f"{u.path}?{u.query}", headers=headers, preload_content=False, retries=False,
                            redirect=False, decode_content=False, assert_same_host=False)
        if resp.status < 300:
            return _ThreadBody(resp)
        try:
            found = _CODE.search(resp.read(4096) or b"")
        finally:
            resp.close()  # an error's body may be longer than what was read: not for the next request
        code = found.group(1).decode(errors="replace") if found else ""
        if resp.status in (404, 412) or resp.status >= 500 or resp.status in (408, 429):
            _raise(resp.status, code, key, etag)
        # Anything else (a redirect to another region, a signature this endpoint refuses, a denial
        # the provider explains only to its own client): ask s3fs, whose errors are the real ones;
        # where s3fs succeeds, it reads this source from now on.
        body = self._s3fs_body(key, etag, version, byte_range)
        self._http = None
        return body

    def _pool(self):
        with self._lock:
            if self._http is _UNDECIDED:
                self._http = _new_pool(self.fs) if _direct(self.fs) else None
            return self._http

    def _s3fs_body(self, key: str, etag: str | None, version: str | None, byte_range: str | None) -> "_LoopBody":
        return _LoopBody(self.fs.loop, sync(self.fs.loop, self._s3fs_get, key, etag, version, byte_range))

    async def _presign(self, key: str, version: str | None) -> str:
        await self.fs.set_session()
        client = await self.fs.get_s3(self.bucket)
        # botocore presigns S3 URLs with signature version 2 where a region still takes it; AWS
        # refuses that for newer buckets and KMS-encrypted objects, others (B2, R2) altogether.
        client.meta.events.register_first("choose-signer.s3", _presign_with_sigv4, unique_id=_SIGV4_HANDLER)
        params = {"Bucket": self.bucket, "Key": key}
        if version:
            params["VersionId"] = version
        return await client.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)

    async def _s3fs_get(self, key: str, etag: str | None, version: str | None, byte_range: str | None):
        kw: dict[str, str] = {}
        if etag:
            kw["IfMatch"] = f'"{etag}"'
        if version:
            kw["VersionId"] = version
        if byte_range:
            kw["Range"] = byte_range
        try:
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=key, **kw)
        except OSError as e:
            if status_of(e) == 412:
                _raise(412, "", key, etag)
            raise
        return resp["Body"]


def _raise(status: int, code: str, key: str, etag: str | None):
    if status == 412:
        raise SourceChanged(f"{key!r} changed while it was read (its ETag is no longer {etag})")
    if status == 404:
        raise FileNotFoundError(f"{key!r}: not found ({code or 'HTTP 404'})")
    raise S3StatusError(status, code)


def status_of(e: BaseException) -> int | None:
    """The HTTP status of the answer behind a provider error: botocore's ClientError (s3fs keeps it
    as the cause), or the error's own status (aiohttp, gcsfs, adlfs, S3StatusError). A cause's `code`
    is not one: aiohttp's payload errors carry a ContentLengthError(400) that no server sent."""
    for x in (e, e.__cause__):
        resp = getattr(x, "response", None)
        if isinstance(resp, dict):
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    for attr in ("status", "code", "status_code"):
        code = getattr(e, attr, None)
        if isinstance(code, int) and 100 <= code < 600:
            return code
    return None


class _ThreadBody:
    """A urllib3 response, read by the calling thread."""

    def __init__(self, resp):
        self.resp = resp

    def fill(self, buf: bytearray, n: int) -> None:
        while len(buf) < n:  # what has arrived, piece by piece: a connection that breaks loses nothing read
            piece = self.resp.read1(min(PIECE, n - len(buf)))
            if not piece:
                return
            buf += piece

    def close(self) -> None:
        if self.resp.length_remaining == 0:  # read to the end: the connection serves the next GET
            self.resp.release_conn()
        else:
            self.resp.close()


class _LoopBody:
    """An aiobotocore body, read on s3fs's event loop: a whole fill per hop to its thread."""

    def __init__(self, loop, body):
        self.loop, self.body = loop, body

    def fill(self, buf: bytearray, n: int) -> None:
        sync(self.loop, _fill, self.body, buf, n)

    def close(self) -> None:
        self.body.close()


async def _fill(body, buf: bytearray, n: int) -> None:
    while len(buf) < n:
        piece = await body.read(min(PIECE, n - len(buf)))
        if not piece:
            return
        buf += piece


def _direct(fs) -> bool:
    """Whether a presigned GET in this thread is the same request s3fs would make: nothing else to
    send (no additional S3 arguments) and no proxy between here and the endpoint."""
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
