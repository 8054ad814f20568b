"""ListObjectsV2 pages of an S3 source, the next one asked for before this one is parsed (issue 7).

Through s3fs a page is parsed by botocore on s3fs's event-loop thread before its continuation
token is known: measured here on a moto server, 20,000 keys took 4.6 s through botocore, 3.7 s
as plain presigned requests (the XML parsed with ElementTree: 0.08 s of it). So a page is asked
for directly (s3_direct.py), its token found in the raw answer, the next page requested at once
by a helper thread, and only then is this page parsed, while the server works on the next.

Each object comes out as botocore would give it, so planning compares like with like: the key
URL-decoded where the answer says EncodingType url (asked for, as botocore does: XML 1.0
cannot carry every byte a key may hold), the time as `%Y-%m-%dT%H:%M:%S.%fZ` in UTC, the ETag
without quotes. A page the endpoint refuses is asked for again through s3fs, whose retries and
errors are the real ones; if s3fs then succeeds where a direct request was refused (not merely
throttled), s3fs lists this source from then on.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Iterator
from urllib.parse import unquote_plus
from xml.sax.saxutils import unescape

from fsspec.asyn import sync

from replicator.s3_direct import DirectS3, error_code

BATCH = 1000  # keys per page (S3's maximum)

# (key, size, time, ETag): what the engine needs of a listed object
Listed = tuple[str, int, "str | None", "str | None"]

_TOKEN = re.compile(rb"<NextContinuationToken>([^<]*)</NextContinuationToken>")
_TRUNCATED = re.compile(rb"<IsTruncated>\s*true\s*</IsTruncated>")
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:Z|\+00:00)")
_ENTITIES = {"&quot;": '"', "&apos;": "'"}


class S3Pages:
    """The objects of one bucket, page by page, asked for directly where `direct` can."""

    def __init__(self, fs, bucket: str, direct: DirectS3):
        self.fs, self.bucket, self.direct = fs, bucket, direct

    def listed(self, prefix: str, start_after: str = "") -> Iterator[Listed]:
        """Every object whose key starts with `prefix` and sorts after `start_after`, in key order
        (memory: two pages)."""
        params = {"Prefix": prefix, "MaxKeys": BATCH, **({"StartAfter": start_after} if start_after else {})}
        ahead = ThreadPoolExecutor(1, thread_name_prefix="list")
        pending = ahead.submit(self._page, params)
        try:
            while pending is not None:
                page = pending.result()
                token = page.token()
                pending = ahead.submit(self._page, {**params, "ContinuationToken": token}) if token else None
                yield from page.objects()
        finally:
            if pending is not None:
                pending.cancel()  # the caller stopped early: the page asked for is not needed
            ahead.shutdown(wait=False)

    def _page(self, params: dict) -> "_XmlPage | _ParsedPage":
        http = self.direct.pool()
        if http is None:
            return self._s3fs_page(params)
        try:
            resp = self.direct.request(http, "GET", "list_objects_v2", self.bucket, None, {**params, "EncodingType": "url"})
            if resp.status == 200:
                try:
                    return _XmlPage(resp.read())
                finally:
                    resp.release_conn()
            refused = not (resp.status >= 500 or resp.status in (408, 429))  # not merely throttled
            error_code(resp)  # the answer read, so that its connection can serve the next request
        except Exception:  # a broken connection, a timeout: s3fs asks again, with its retries
            return self._s3fs_page(params)
        page = self._s3fs_page(params)
        if refused:  # refused directly, answered through s3fs: s3fs lists from now on
            self.direct.give_up()
        return page

    def _s3fs_page(self, params: dict) -> "_ParsedPage":
        return _ParsedPage(sync(self.fs.loop, self.fs._call_s3, "list_objects_v2", Bucket=self.bucket, **params))


class _XmlPage:
    """A ListObjectsV2 answer as it came: its token found at once, its objects parsed when wanted."""

    def __init__(self, body: bytes):
        self.body = body

    def token(self) -> str | None:
        if not _TRUNCATED.search(self.body):
            return None
        found = _TOKEN.search(self.body)
        if not found:  # a listing that stops here would record the rest as deleted
            raise OSError("ListObjectsV2 answered IsTruncated without a NextContinuationToken")
        return unescape(found.group(1).decode(), _ENTITIES)

    def objects(self) -> Iterator[Listed]:
        root = ET.fromstring(self.body)
        ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        encoded = (root.findtext(f"{ns}EncodingType") or "").lower() == "url"
        for c in root.iterfind(f"{ns}Contents"):
            key = c.findtext(f"{ns}Key") or ""
            yield (unquote_plus(key) if encoded else key, int(c.findtext(f"{ns}Size") or 0),
                   _time(c.findtext(f"{ns}LastModified")), (c.findtext(f"{ns}ETag") or "").strip('"') or None)


class _ParsedPage:
    """A ListObjectsV2 answer parsed by botocore (through s3fs)."""

    def __init__(self, out: dict):
        self.out = out

    def token(self) -> str | None:
        if not self.out.get("IsTruncated"):
            return None
        token = self.out.get("NextContinuationToken")
        if not token:
            raise OSError("ListObjectsV2 answered IsTruncated without a NextContinuationToken")
        return token

    def objects(self) -> Iterator[Listed]:
        for info in self.out.get("Contents", []):
            t = info.get("LastModified")
            yield (info["Key"], int(info["Size"]), _utc(t) if isinstance(t, datetime) else None,
                   (info.get("ETag") or "").strip('"') or None)


def _time(text: str | None) -> str | None:
    """An S3 timestamp as `%Y-%m-%dT%H:%M:%S.%fZ` in UTC: what botocore's datetime gives formatted."""
    if not text:
        return None
    m = _TIME.fullmatch(text.strip())
    if m:
        return f"{m.group(1)}.{(m.group(2) or '').ljust(6, '0')}Z"
    from botocore.utils import parse_timestamp  # another form (an offset, no seconds): botocore's own parser

    return _utc(parse_timestamp(text))


def _utc(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
