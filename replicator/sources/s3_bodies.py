"""GET bodies of S3 objects, read by the thread that wants the bytes (issue 7; s3_direct.py).

Measured here on 40 objects of 8 MiB from a moto server: 0.69 s through s3fs's event loop, 0.30 s
through 8 threads with their own connections. Each GET asks for the listed version (VersionId,
If-Match its ETag). Where s3_direct.py cannot make a request itself, s3fs reads as before.

Both kinds of body offer `fill(buf, n)` (append until buf holds n bytes or the body ends) and
`close()`. Errors of a direct GET: 412 (the object is no longer the listed one) is SourceChanged;
404 is FileNotFoundError; 5xx, 408 and 429 are S3StatusError (s3_direct.py) with `.status` (the source's retry
rules retry them). Any other answer (a redirect to another region, a signature the endpoint
refuses, a denial) sends the request again through s3fs, whose errors are then the real ones; if
s3fs succeeds where the direct GET did not, s3fs reads this source from then on.
"""

from __future__ import annotations

from fsspec.asyn import sync

from replicator.errors import SourceChanged
from replicator.s3_direct import DirectS3, S3StatusError, error_code

PIECE = 256 * 1024  # bytes read at a time (what a broken connection loses)


class S3Bodies:
    """Opens GET bodies of one bucket's objects, in the calling thread where it can (see above)."""

    def __init__(self, fs, bucket: str):
        self.fs, self.bucket = fs, bucket
        self.direct = DirectS3(fs)

    def open(self, key: str, etag: str | None, version: str | None, byte_range: str | None):
        """The body of a GET of the listed version (its VersionId, If-Match its ETag) of `key`, from
        `byte_range` (`bytes=START-` or `bytes=START-END`) or whole; SourceChanged if it changed."""
        http = self.direct.pool()
        if http is None:
            return self._s3fs_body(key, etag, version, byte_range)
        headers = {}
        if etag:
            headers["If-Match"] = f'"{etag}"'
        if byte_range:
            headers["Range"] = byte_range
        resp = self.direct.request(http, "GET", "get_object", self.bucket, key, {"VersionId": version} if version else {},
                                   headers)
        if resp.status < 300:
            return _ThreadBody(resp)
        code = error_code(resp)
        if resp.status in (404, 412) or resp.status >= 500 or resp.status in (408, 429):
            _raise(resp.status, code, key, etag)
        # Anything else (a redirect to another region, a signature this endpoint refuses, a denial
        # the provider explains only to its own client): ask s3fs, whose errors are the real ones;
        # where s3fs succeeds, it reads this source from now on.
        body = self._s3fs_body(key, etag, version, byte_range)
        self.direct.give_up()
        return body

    def _s3fs_body(self, key: str, etag: str | None, version: str | None, byte_range: str | None) -> "_LoopBody":
        return _LoopBody(self.fs.loop, sync(self.fs.loop, self._s3fs_get, key, etag, version, byte_range))

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
    raise S3StatusError("GET", status, code)


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
