"""Objects from any fsspec URL: s3://bucket/prefix, gs://, az://, file://, sftp://, ..."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from replicator.backoff import Backoff
from replicator.errors import SourceChanged, SourceError
from replicator.redact import first_line, redact
from replicator.sources.base import SourceItem
from replicator.sources.s3_bodies import S3Bodies, status_of
from replicator.sources.s3_listing import S3Pages

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402
from fsspec.asyn import sync  # noqa: E402


class ObjectSource:
    # history = "all" (issue 10): list the current versions by version id (set by history_import)
    list_versions = False
    inventory = None  # [jobs.inventory] (issue 9): an InventoryListing, set by open_source

    def __init__(self, url: str, options: dict[str, Any], accept: Callable[[str], bool], backoff: Backoff | None = None):
        self.url = url
        self.accept = accept
        self.backoff = backoff or Backoff(attempts=8)  # a resumed read keeps what it got: more tries are cheap
        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except ImportError as e:
            raise SourceError(f"{url}: support for this kind of URL is not installed ({e})") from None
        except (ValueError, TypeError) as e:
            raise SourceError(f"{url}: bad URL or options: {redact(str(e))}") from None
        self.root = root.rstrip("/")
        proto = self.fs.protocol
        self.protocol = proto[0] if isinstance(proto, (tuple, list)) else proto
        self._bodies = S3Bodies(self.fs, self.root.partition("/")[0]) if self.protocol in _S3 else None
        self._pages = S3Pages(self.fs, self._bodies.bucket, self._bodies.direct) if self._bodies else None

    def check(self) -> None:
        with _errors(self.url):
            next(iter(self._raw_list()), None)  # a real request: fs.exists() hides connection errors

    def list(self) -> Iterator[SourceItem]:
        with _errors(self.url):
            for item in self._raw_list():
                if self.accept(item.key):
                    yield item

    def _raw_list(self) -> Iterator[SourceItem]:
        if self.protocol in ("s3", "s3a") and self.list_versions:
            yield from self._list_s3_current_versions()
        elif self.protocol in ("s3", "s3a"):
            yield from self._list_s3()
        elif self.protocol == "file":
            yield from self._list_local(self.root)
        else:
            found = self.fs.find(self.root, detail=True)
            for path in sorted(found):
                info = found[path]
                if info.get("type") == "directory":
                    continue
                yield SourceItem(self._key(path), int(info["size"]), _mtime(info), _etag(info), None)

    def stat(self, keys: list[str]) -> Iterator[SourceItem]:
        """Event runs (issue 9): the current state of these keys, as the listing would give it (same
        size, time and ETag fields, so planning compares like with like); keys that are gone or that
        include/exclude reject are not yielded. S3: one ListObjectsV2 per key (Prefix=key, MaxKeys=1:
        the key itself sorts first among the keys it prefixes), up to 16 at a time; s3fs retries."""
        keys = [k for k in dict.fromkeys(keys) if self.accept(k)]
        if not keys:
            return
        with _errors(self.url):
            if self.protocol in _S3:
                found = sync(self.fs.loop, self._s3_stat, keys)
            else:
                found = [self._info(k) for k in keys]
        for item in found:
            if item is not None:
                yield item

    async def _s3_stat(self, keys: list[str]) -> list[SourceItem | None]:
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        gate = asyncio.Semaphore(16)

        async def one(key: str) -> SourceItem | None:
            async with gate:
                out = await self.fs._call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix + key, MaxKeys=1)
            for info in out.get("Contents", []):
                if info["Key"] == prefix + key:
                    return SourceItem(key, int(info["Size"]), _mtime(info), _etag(info), None)
            return None

        return list(await asyncio.gather(*(one(k) for k in keys)))

    def _info(self, key: str) -> SourceItem | None:
        path = f"{self.root}/{key}" if self.root else key
        if self.protocol == "file":  # as _list_local gives it
            try:
                st = os.stat(path, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not stat.S_ISREG(st.st_mode):
                return None
            return SourceItem(key, st.st_size, _iso(st.st_mtime), f"{st.st_mtime_ns:x}-{st.st_size:x}", None)
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return SourceItem(key, int(info["size"]), _mtime(info), _etag(info), None)

    def _key(self, path: str) -> str:
        return path[len(self.root) + 1:] if self.root else path

    def _list_s3(self) -> Iterator[SourceItem]:
        """Page through ListObjectsV2: memory holds one page, never the whole bucket."""
        yield from self._list_s3_range("", None, None)

    @property
    def local(self) -> bool:
        """Whether reads are local file reads (nothing to wait on: the engine skips its threads for
        small objects)."""
        return self.protocol == "file"

    # -- huge buckets (issue 9): key ranges, listed on their own and resumed -----------------------

    @property
    def resumable(self) -> bool:
        """Whether `list_range` lists in key order and can start after a given key (S3 ListObjectsV2)."""
        return self.protocol in ("s3", "s3a") and not self.list_versions

    def key_ranges(self, n: int) -> list[tuple[str, str | None]]:
        """Up to n contiguous key ranges (lo, hi) covering every key: lo < key < hi, lo "" = the
        start, hi None = the end. Cut at the source's "directories" (delimiter listings: the top
        level, and up to two levels deeper while there are fewer than n), so each range can be
        listed by its own pager, in parallel, and resumed on its own."""
        if n <= 1 or not self.resumable:
            return [("", None)]
        with _errors(self.url):
            prefixes = self._prefixes("")
            for _ in range(2):  # a bucket whose keys all sit under one or two "directories"
                if not 0 < len(prefixes) < n or len(prefixes) > 100:
                    break
                deeper = sorted(q for p in prefixes for q in (self._prefixes(p) or [p]))
                if deeper == prefixes:
                    break
                prefixes = deeper
        if len(prefixes) < 2:
            return [("", None)]
        k = min(n, len(prefixes))
        cuts = [prefixes[(i * len(prefixes)) // k] for i in range(1, k)]
        bounds = [""] + cuts + [None]
        return list(zip(bounds[:-1], bounds[1:]))

    def list_range(self, lo: str, hi: str | None, after: str | None = None) -> Iterator[SourceItem]:
        """The accepted items with lo < key < hi (and key > after, to resume), in key order."""
        with _errors(self.url):
            for item in self._list_s3_range(lo, hi, after):
                if self.accept(item.key):
                    yield item

    def _list_s3_range(self, lo: str, hi: str | None, after: str | None) -> Iterator[SourceItem]:
        """ListObjectsV2 pages in key order; the next page is requested as soon as a page arrives, so
        the server works on it while this one is parsed and stored (sources/s3_listing.py)."""
        prefix = self.root.partition("/")[2]
        prefix = prefix + "/" if prefix else ""
        start = max(lo, after or "")
        for key, size, mtime, etag in self._pages.listed(prefix, prefix + start if start else ""):
            key = key[len(prefix):]
            if hi is not None and key >= hi:
                return
            if size or not key.endswith("/"):  # an empty "folder" marker is not an object; one with bytes is
                yield SourceItem(key, size, mtime, etag, None)

    def _prefixes(self, under: str) -> list[str]:
        """The sorted "directories" directly under `under` (relative to the source, ending "/")."""
        bucket, _, prefix = self.root.partition("/")
        prefix = (prefix + "/" if prefix else "") + under
        base = len(prefix) - len(under)
        out: list[str] = []
        kw: dict[str, str] = {}
        while True:
            page = sync(self.fs.loop, self.fs._call_s3, "list_objects_v2", Bucket=bucket, Prefix=prefix,
                        Delimiter="/", **kw)
            out += [p["Prefix"][base:] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return sorted(out)
            kw = {"ContinuationToken": page["NextContinuationToken"]}

    # -- versions (history = "all", issue 10) ------------------------------------------------------

    def versions(self) -> Iterator["VersionEvent"]:
        """Every version and deletion the source keeps, key by key (key order), newest first within a
        key; paged, so memory holds one page and one key's versions. S3: ListObjectVersions (versions
        and delete markers); GCS: objects.list with versions (generations; a deletion is a noncurrent
        generation whose timeDeleted is not the next generation's creation)."""
        with _errors(self.url):
            if self.protocol in ("s3", "s3a"):
                events = self._s3_versions()
            elif self.protocol in ("gs", "gcs"):
                events = self._gcs_versions()
            else:
                raise SourceError(f'{self.url}: history = "all" needs an S3 or GCS source')
            for ev in events:
                if self.accept(ev.key):
                    yield ev

    def versioning(self) -> str:
        """"enabled", "suspended" or "off": whether the bucket keeps every version (history = "all")."""
        bucket = self.root.partition("/")[0]
        with _errors(self.url):
            if self.protocol in ("s3", "s3a"):
                status = sync(self.fs.loop, self.fs._call_s3, "get_bucket_versioning", Bucket=bucket).get("Status")
                return {"Enabled": "enabled", "Suspended": "suspended"}.get(status or "", "off")
            b = sync(self.fs.loop, self.fs._call, "GET", "b/{}", bucket, json_out=True)
            return "enabled" if (b.get("versioning") or {}).get("enabled") else "off"

    def _s3_versions(self) -> Iterator["VersionEvent"]:
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        kw: dict[str, str] = {}
        group: list[tuple] = []
        while True:
            out = sync(self.fs.loop, self.fs._call_s3, "list_object_versions", Bucket=bucket, Prefix=prefix, **kw)
            rows = [(v, False) for v in out.get("Versions", [])] + [(m, True) for m in out.get("DeleteMarkers", [])]
            rows.sort(key=lambda r: r[0]["Key"])  # stable: each list keeps its newest-first order
            for info, marker in rows:
                if group and group[0][0]["Key"] != info["Key"]:
                    yield from _s3_group(group, len(prefix))
                    group = []
                group.append((info, marker, len(group)))
            if not out.get("IsTruncated"):
                break
            kw = {"KeyMarker": out.get("NextKeyMarker", ""), "VersionIdMarker": out.get("NextVersionIdMarker", "")}
        if group:
            yield from _s3_group(group, len(prefix))

    def _list_s3_current_versions(self) -> Iterator[SourceItem]:
        """The normal listing, from ListObjectVersions: current versions with their version ids."""
        for ev in self._s3_versions():
            if ev.latest and not ev.deleted:
                yield SourceItem(ev.key, ev.size, _mtime({"LastModified": ev.time}), ev.etag, ev.version)

    def _gcs_versions(self) -> Iterator["VersionEvent"]:
        bucket, _, prefix = self.root.partition("/")
        prefix = prefix + "/" if prefix else ""
        token = None
        group: list[dict] = []
        while True:
            params = {"versions": "true", "maxResults": 1000, **({"prefix": prefix} if prefix else {}),
                      **({"pageToken": token} if token else {})}
            page = sync(self.fs.loop, self.fs._call, "GET", "b/{}/o", bucket, json_out=True, **params)
            for info in page.get("items", []):
                if group and group[0]["name"] != info["name"]:
                    yield from _gcs_group(group, len(prefix))
                    group = []
                group.append(info)
            token = page.get("nextPageToken")
            if not token:
                break
        if group:
            yield from _gcs_group(group, len(prefix))

    def _list_local(self, top: str) -> Iterator[SourceItem]:
        """os.scandir walk: streams, one directory at a time."""
        cut = len(os.path.join(top, ""))  # every path below starts with top and a separator
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            for e in reversed(entries):
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
            for e in entries:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    key = e.path[cut:] if os.sep == "/" else e.path[cut:].replace(os.sep, "/")
                    yield SourceItem(key, st.st_size, _iso(st.st_mtime), f"{st.st_mtime_ns:x}-{st.st_size:x}", None)

    def read(self, item: SourceItem, chunk_size: int) -> Iterator[bytes]:
        """The item in chunks: one GET for a small object, ranged GETs of chunk_size for a large one.

        A GET that fails is retried with backoff (backoff.py), and one that breaks in the middle of
        its body resumes with a ranged GET from the byte it reached. The object must stay the one
        that was listed: on S3 every GET carries If-Match with the listed ETag (and the listed
        VersionId), so the provider refuses a rewritten object (412); elsewhere the ETag (or, for
        local files, mtime and size) is read again after a read in several parts. A change is
        SourceChanged: the engine warns and the next run copies the object again. Never a mix."""
        path = f"{self.root}/{item.key}" if self.root else item.key
        got = 0
        with _errors(self.url, item):
            if self.protocol in _S3 and item.size > chunk_size:
                yield from self._s3_stream(item, chunk_size)  # one GET, however many chunks
                return
            while True:
                end = min(got + chunk_size, item.size)
                data = self._range(item, path, got, end)
                got += len(data)
                yield data
                if got >= item.size:
                    break
            if self.protocol == "file" or (item.size > chunk_size and self.protocol not in _S3):
                self._recheck(item, path)

    def _s3_stream(self, item: SourceItem, chunk_size: int) -> Iterator[bytes]:
        """A large S3 object in chunks from one GET of the whole object, not one GET per chunk (a
        ranged GET costs some servers a read of the whole object). If-Match and VersionId as in
        _s3_get, so the one GET returns the listed version or nothing. A body that breaks is
        resumed with a ranged GET from the byte it reached (also If-Match), with backoff."""
        pos, pending, breaks = 0, bytearray(), 0
        what = f"read of {item.key!r}"
        body = self.backoff.call(lambda: self._s3_open(item, f"bytes={pos}-" if pos else None), _transient, what)
        try:
            while pos < item.size:
                before = len(pending)
                try:  # a whole chunk at a time; what arrived stays in `pending` on failure
                    body.fill(pending, min(chunk_size, item.size - pos + before + 1))
                    if len(pending) == before:
                        raise _Truncated(f"{item.key!r}: the body ended after {pos} of {item.size} bytes")
                except Exception as e:
                    pos += len(pending) - before
                    breaks += 1
                    if not _transient(e) or breaks > 16:
                        raise
                    body.close()
                    body = self.backoff.call(lambda: self._s3_open(item, f"bytes={pos}-"), _transient, what)
                    continue
                pos += len(pending) - before
                if pos > item.size:
                    raise SourceChanged(f"{item.key!r} changed while it was read (longer than listed)")
                while len(pending) >= chunk_size or (pos == item.size and pending):
                    yield bytes(pending[:chunk_size])
                    del pending[:chunk_size]
        finally:
            body.close()

    def _s3_open(self, item: SourceItem, byte_range: str | None):
        """The body of one GET of the listed version of the item (If-Match its ETag, its version id);
        SourceChanged if the source no longer holds that content."""
        bucket, _, prefix = self.root.partition("/")
        return self._bodies.open(f"{prefix}/{item.key}" if prefix else item.key, item.etag, item.version, byte_range)

    # -- parts of one large object, read concurrently by the engine (issue 7) ---------------------

    @property
    def parallel_parts(self) -> bool:
        """Whether the engine should read a large object's parts with concurrent read_part calls.
        Not for S3 (one streaming GET, above) nor local files (a sequential read is fastest)."""
        return self.protocol not in _S3 and self.protocol != "file"

    def read_part(self, item: SourceItem, start: int, end: int) -> bytes:
        """Bytes start..end of the item (one part of a large object; parts may be read in any order
        and at once). The same checks as read(): S3 GETs carry If-Match; elsewhere call
        `finish_parts` once every part is read."""
        path = f"{self.root}/{item.key}" if self.root else item.key
        with _errors(self.url, item):
            return self._range(item, path, start, end)

    def finish_parts(self, item: SourceItem) -> None:
        """After all parts of an item: is it still the one that was listed? (SourceChanged if not)."""
        if self.protocol in _S3:
            return  # every ranged GET was conditional on the listed ETag
        path = f"{self.root}/{item.key}" if self.root else item.key
        with _errors(self.url, item):
            self._recheck(item, path)

    def _range(self, item: SourceItem, path: str, start: int, end: int) -> bytes:
        """Bytes start..end of the item, exactly (a whole-object GET when that is the whole item)."""
        whole = start == 0 and end == item.size
        if self.protocol in _S3:
            buf = bytearray()
            data = self.backoff.call(lambda: self._s3_get(item, start, end, buf), _transient, f"read of {item.key!r}")
        elif self.protocol == "file":
            data = _read_file(path, start, end + 1 if whole else end)  # whole: one byte more shows a longer file
        else:
            data = self.backoff.call(lambda: self.fs.cat_file(path) if whole else self.fs.cat_file(path, start=start, end=end),
                                     _transient, f"read of {item.key!r}")
        if len(data) != end - start:
            raise SourceChanged(f"{item.key!r} changed while it was read ({start + len(data)} bytes, listed {item.size})")
        return data

    def _s3_get(self, item: SourceItem, start: int, end: int, buf: bytearray) -> bytearray:
        """One GET (attempt) for bytes start+len(buf)..end, appended to buf as they arrive: a retry
        after a body that broke mid-way asks only for the rest."""
        whole = not buf and start == 0 and end == item.size
        body = self._s3_open(item, None if whole else f"bytes={start + len(buf)}-{end - 1}")
        try:
            body.fill(buf, end - start + 1)  # one byte more than listed: a longer object is a changed one
        finally:
            body.close()
        if len(buf) > end - start:
            raise SourceChanged(f"{item.key!r} changed while it was read (longer than listed)")
        if len(buf) < end - start:
            raise _Truncated(f"{item.key!r}: the body ended after {start + len(buf)} of {end} bytes")
        return buf  # bytes-like as it is: a copy of a 4 MiB chunk saved

    def _recheck(self, item: SourceItem, path: str) -> None:
        """After a read that was not one atomic GET: is the object still the one that was listed?"""
        if self.protocol == "file":
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise SourceChanged(f"{item.key!r} vanished while it was read") from None
            now = (f"{st.st_mtime_ns:x}-{st.st_size:x}", st.st_size)
        else:
            self.fs.invalidate_cache(path)  # the listing may be cached; ask the provider
            info = self.fs.info(path)
            now = (_etag(info), int(info["size"]))
        if now != (item.etag, item.size):
            raise SourceChanged(f"{item.key!r} changed while it was read")


_S3 = ("s3", "s3a")
_NETWORK_MODULES = ("aiohttp", "botocore", "aiobotocore", "urllib3", "requests", "google", "gcsfs", "azure", "adlfs",
                    "asyncssh", "sshfs", "http.client")


def _read_file(path: str, start: int, end: int) -> bytes:
    """Bytes start..end of a local file (fewer where it ends): plain system calls, as thousands of
    small files are read a second."""
    fd = os.open(path, os.O_RDONLY)
    try:
        parts, pos = [], start
        while pos < end:
            piece = os.pread(fd, end - pos, pos)
            if not piece:
                break
            parts.append(piece)
            pos += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


class _Truncated(ConnectionError):
    """A body that ended early without an error: resume from where it ended."""


def _transient(e: BaseException) -> bool:
    """Whether a failed read may succeed if tried again: network trouble, throttling, 5xx."""
    if isinstance(e, (SourceError, FileNotFoundError, PermissionError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    status = status_of(e)
    if status is not None:
        return status >= 500 or status in (408, 429)
    return type(e).__module__.startswith(_NETWORK_MODULES)


@dataclass(frozen=True)
class VersionEvent:
    """One version of an object, or its deletion, as a versioned bucket keeps it (history = "all")."""

    key: str
    version: str | None  # S3 VersionId (a delete marker's own id) / GCS generation
    time: datetime  # when it was written or deleted (S3 LastModified; GCS timeCreated / timeDeleted)
    size: int = 0
    etag: str | None = None
    deleted: bool = False  # S3 delete marker / GCS deletion
    latest: bool = False  # the key's current state
    order: int = 0  # 0 = the key's newest event, 1 = the one before, ...


def _s3_group(group: list[tuple], cut: int) -> Iterator[VersionEvent]:
    """One key's versions and delete markers, newest first. Within one LastModified second the order
    between a version and a marker is not in the response (two lists): IsLatest goes first, then
    versions before markers; versions among themselves (and markers) keep the provider's order."""
    rows = sorted(group, key=lambda r: (-_ts(r[0]["LastModified"]), not r[0].get("IsLatest"), r[1], r[2]))
    for order, (info, marker, _) in enumerate(rows):
        vid = info.get("VersionId")
        yield VersionEvent(info["Key"][cut:], None if vid in (None, "null") else vid, _utc(info["LastModified"]),
                           0 if marker else int(info.get("Size", 0)), None if marker else _etag(info),
                           marker, bool(info.get("IsLatest")), order)


def _gcs_group(group: list[dict], cut: int) -> Iterator[VersionEvent]:
    """One object's generations as events, newest first. A noncurrent generation whose timeDeleted is
    well before the next generation's creation (or that has no next one) was deleted, not replaced."""
    gens = sorted(group, key=lambda g: int(g["generation"]))
    events: list[VersionEvent] = []
    for i, g in enumerate(gens):
        created = _utc(datetime.fromisoformat(g["timeCreated"].replace("Z", "+00:00")))
        events.append(VersionEvent(g["name"][cut:], str(g["generation"]), created, int(g.get("size", 0)), _etag(g)))
        gone = g.get("timeDeleted")
        if gone:
            t = _utc(datetime.fromisoformat(gone.replace("Z", "+00:00")))
            nxt = gens[i + 1] if i + 1 < len(gens) else None
            if nxt is None or _ts(datetime.fromisoformat(nxt["timeCreated"].replace("Z", "+00:00"))) - _ts(t) > 0.5:
                events.append(VersionEvent(g["name"][cut:], f"{g['generation']}-deleted", t, deleted=True))
    events.reverse()
    n = len(events)
    for order, ev in enumerate(events):
        yield VersionEvent(ev.key, ev.version, ev.time, ev.size, ev.etag, ev.deleted, order == 0 and n > 0, order)


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _ts(t: datetime) -> float:
    return _utc(t).timestamp()


class _errors:
    """Provider exceptions -> SourceError / SourceChanged, secrets redacted."""

    def __init__(self, url: str, item: SourceItem | None = None):
        self.url, self.item = url, item

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is None or isinstance(e, (SourceError, GeneratorExit)) or not isinstance(e, Exception):
            return False
        text = first_line(e)[:300]
        if self.item is not None and isinstance(e, FileNotFoundError):
            raise SourceChanged(f"{self.item.key!r} vanished while it was read") from None
        if isinstance(e, FileNotFoundError):
            raise SourceError(f"{self.url}: not found ({text})") from None
        if isinstance(e, PermissionError):
            raise SourceError(f"{self.url}: permission denied ({text})") from None
        raise SourceError(f"{self.url}: {text}") from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _mtime(info: dict) -> str | None:
    for k in ("LastModified", "mtime", "updated", "last_modified", "modified"):
        v = info.get(k)
        if isinstance(v, datetime):
            return v.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(v, (int, float)):
            return _iso(v)
        if isinstance(v, str) and v:
            return v
    return None


def _etag(info: dict) -> str | None:
    for k in ("ETag", "etag", "md5Hash", "generation", "content_settings"):
        v = info.get(k)
        if isinstance(v, str) and v:
            return v.strip('"')
        if isinstance(v, int):
            return str(v)
    return None
