"""A store over any fsspec filesystem: S3, GCS, Azure Blob, SFTP, ...

fsspec is used inside this adapter only; the rest of the program sees the
narrow Store protocol. Create-only puts use each provider's precondition
(S3 If-None-Match, GCS ifGenerationMatch=0, Azure overwrite=False); over SFTP
a temporary file is renamed with plain SFTP rename, which refuses to replace.
On S3, blobs are put (with a CRC32 checksum) and read by the calling thread where
s3_direct.py can make the request, not by s3fs's one event-loop thread.
"""

from __future__ import annotations

import base64
import os
import posixpath
import re
import uuid
import zlib
from typing import TYPE_CHECKING, Any, Iterator

from replicator.errors import AlreadyExists, NotFound, StoreError, StoreUnreachable
from replicator.redact import redact
from replicator.stores.base import check_name

if TYPE_CHECKING:
    from datetime import datetime

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import fsspec  # noqa: E402  (after the gcsfs switch above)
from fsspec.asyn import sync  # noqa: E402

from replicator.s3_direct import DirectS3, S3StatusError, error_code  # noqa: E402  (imports fsspec)

_CREATE_MODE = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_SFTP = {"sftp", "ssh"}
# fsspec caches listings forever by default, and stat/get consult that cache: after a list(), objects
# that another writer (process) adds stay invisible. Azure: adlfs by default treats a failed container
# check as "exists", so create()/exists() would succeed against an unreachable endpoint.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"use_listings_cache": False}, "s3a": {"use_listings_cache": False},
    "gs": {"use_listings_cache": False}, "gcs": {"use_listings_cache": False},
    **{p: {"use_listings_cache": False, "assume_container_exists": False} for p in ("az", "abfs", "abfss")},
}


class FsspecStore:
    def __init__(self, url: str, options: dict[str, Any]):
        options = {**_DEFAULTS.get(url.split("://", 1)[0].lower(), {}), **options}
        try:
            self.fs, root = fsspec.url_to_fs(url, **options)
        except ImportError as e:
            raise StoreError(f"{url}: support for this kind of URL is not installed ({e})") from None
        except (ValueError, TypeError) as e:
            raise StoreError(f"{url}: bad URL or options: {_short(e)}") from None
        except Exception as e:  # some filesystems (SFTP) connect when constructed
            raise StoreUnreachable(f"{url}: cannot connect: {_short(e)}") from None
        self.protocol = _protocol(self.fs)
        self.root = root.rstrip("/")
        self.url = url
        self._dirs: set[str] = set()
        self._direct = DirectS3(self.fs) if self.protocol in ("s3", "s3a") else None

    def _path(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"

    def put(self, name: str, data: bytes, **provider_args: Any) -> None:
        """`provider_args` go to the provider's create-only write as they are (stores/retention.py
        passes S3 Object Lock and Azure immutability-policy arguments this way)."""
        path = self._path(name)
        if provider_args and self.protocol not in _CREATE_MODE:
            raise ValueError(f"{self.protocol} stores take no provider arguments on put")
        with self._errors(name):
            direct = None if provider_args else self._direct_put(path, data)
            if direct:
                return
            data = bytes(data)  # blobs are sealed into a bytearray; not every provider's SDK takes one (adlfs)
            if self.protocol in _CREATE_MODE:
                self.fs.pipe_file(path, data, mode="create", **provider_args)
                if direct is False:  # refused when made directly, made by s3fs: by s3fs from now on
                    self._direct.give_up()
            elif self.protocol in _SFTP:
                self._sftp_put(path, data)
            else:
                if self.fs.exists(path):
                    raise FileExistsError(path)
                self.fs.pipe_file(path, data)

    def _sftp_put(self, path: str, data: bytes) -> None:
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            self.fs.makedirs(parent, exist_ok=True)
            self._dirs.add(parent)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(tmp, data)

        async def rename() -> None:
            async with self.fs._pool.get() as channel:
                await channel.rename(tmp, path)  # SFTP v3 rename: fails if path exists

        try:
            sync(self.fs.loop, rename)
        except Exception as e:
            try:
                self.fs.rm_file(tmp)
            except Exception:
                pass
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            raise e

    # Names are checked outside `_errors`: a bad name is the caller's ValueError, not a StoreError.
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range offset={offset} length={length} for {name}")
        with self._errors(name):
            if length == 0:  # an empty HTTP range is invalid, and S3 then answers the whole object
                self.stat(name)
                return b""
            try:
                return self._read(path, offset, length)
            except FileNotFoundError:
                raise
            except Exception:
                # Providers refuse a range that starts at or past the end (HTTP 416), and a directory
                # cannot be read: the object's size (NotFound for a directory) decides the answer.
                if self.stat(name) <= offset:
                    return b""
                raise

    def _read(self, path: str, offset: int, length: int | None) -> bytes:
        if self.protocol in _SFTP:
            return self._sftp_read(path, offset, length)
        direct = self._direct_get(path, offset, length)
        if isinstance(direct, bytes):
            return direct
        if offset == 0 and length is None:
            data = self.fs.cat_file(path)
        else:
            data = self.fs.cat_file(path, start=offset, end=None if length is None else offset + length)
        if direct is False:  # refused when made directly, made by s3fs: by s3fs from now on
            self._direct.give_up()
        return data

    # -- S3 requests made by this thread (s3_direct.py) ------------------------------------------

    def _direct_put(self, path: str, data: bytes) -> bool | None:
        """A create-only PUT (If-None-Match: *) with the body's CRC32 for the provider to check (both
        signed), made by this thread: True when done, None where s3fs must make it, False when the
        endpoint refused it (403, a redirect: answers only s3fs explains; the caller asks s3fs)."""
        http = None if self._direct is None else self._direct.pool()
        if http is None:
            return None
        bucket, key = path.split("/", 1)
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()  # 4 GB/s; MD5 is 0.7
        headers = {"If-None-Match": "*", "x-amz-checksum-crc32": crc}
        resp = self._direct.request(http, "PUT", "put_object", bucket, key, {"IfNoneMatch": "*", "ChecksumCRC32": crc},
                                    headers, data)
        if resp.status < 300:
            resp.drain_conn()
            resp.release_conn()
            return True
        code = error_code(resp)
        if resp.status == 412:
            raise FileExistsError(path)
        _raise_status("PUT", resp.status, code, path, retry=("BadDigest", "RequestTimeout"))  # damaged on the way; slow
        return False

    def _direct_get(self, path: str, offset: int, length: int | None) -> bytes | bool | None:
        """A GET (of a range) made by this thread: the bytes, or None / False as for _direct_put."""
        http = None if self._direct is None else self._direct.pool()
        if http is None:
            return None
        bucket, key = path.split("/", 1)
        headers = {}
        if offset or length is not None:
            headers["Range"] = f"bytes={offset}-{'' if length is None else offset + length - 1}"
        resp = self._direct.request(http, "GET", "get_object", bucket, key, headers=headers)
        if resp.status < 300:
            try:
                return resp.read()
            finally:
                resp.release_conn()
        _raise_status("GET", resp.status, error_code(resp), path, retry=("InvalidRange",))  # get() settles 416
        return False

    def _sftp_read(self, path: str, offset: int, length: int | None) -> bytes:
        """sshfs's cat_file ignores start/end and returns the whole file: read the range ourselves."""
        from asyncssh import SFTPNoSuchFile

        async def read() -> bytes:
            async with self.fs._pool.get() as channel:
                async with channel.open(path, "rb") as f:
                    return await f.read(-1 if length is None else length, offset)

        try:
            return sync(self.fs.loop, read)
        except SFTPNoSuchFile:
            raise FileNotFoundError(path) from None

    def stat(self, name: str) -> int:
        path = self._path(name)
        with self._errors(name):
            info = self.fs.info(path)
            if info.get("type") == "directory":
                raise FileNotFoundError(name)
            _remember(self, name, info)  # issue 10: checksum(name) right after a stat costs no request
            return int(info["size"])

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for name, info in self._found(prefix):
            yield name, int(info["size"])

    def list_times(self, prefix: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(name, size, write time as the provider's clock set it): what prune orders snapshots by."""
        for name, info in self._found(prefix):
            yield name, int(info["size"]), _write_time(info)

    def _found(self, prefix: str) -> Iterator[tuple[str, dict]]:
        """(name, provider info) of every object under prefix, in name order, temporary uploads left out."""
        base = self.root + ("/" + prefix.rsplit("/", 1)[0] if "/" in prefix else "")
        with self._errors(prefix or "/"):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return
        cut = len(self.root) + 1
        for path, info in sorted(found.items()):
            name = path[cut:] if path.startswith(self.root + "/") else path
            if name.startswith(prefix) and info.get("type") != "directory" and "/.tmp-" not in "/" + name:
                yield name, info

    # -- provider checksums (optional Store capability, see stores/base.py) ----------------------

    def checksum(self, name: str) -> str | None:
        """The provider's checksum of `name` (md5:/crc32c:/etag:), None where it keeps none."""
        noted = getattr(self, "_noted", {}).pop(name, None)
        if noted is not None:
            return noted[0]
        path = self._path(name)
        with self._errors(name):
            return _checksum(self.protocol, self.fs.info(path))

    def list_checksums(self, prefix: str = "") -> Iterator[tuple[str, int, str | None]]:
        """(name, size, checksum) of every object under prefix, from the listing itself."""
        for name, info in self._found(prefix):
            yield name, int(info["size"]), _checksum(self.protocol, info)

    def delete(self, name: str) -> None:
        path = self._path(name)
        with self._errors(name):
            self.fs.rm_file(path)

    def exists(self) -> bool:
        # In an object store the bucket/container is what create() makes; a prefix inside it only
        # "exists" while objects are under it. fs.exists() would also hide errors as False.
        root = self.root.split("/", 1)[0] if self.protocol in _CREATE_MODE else self.root
        with self._errors("/"):
            try:
                return self.fs.info(root).get("type") == "directory"
            except FileNotFoundError:
                return False

    def create(self) -> None:
        with self._errors("/"):
            try:
                self.fs.mkdir(self.root, create_parents=True)
            except FileExistsError:
                pass
            if self.protocol in _SFTP:
                self.fs.makedirs(self.root, exist_ok=True)

    def _errors(self, name: str) -> "_Translate":
        return _Translate(self.url, name)


class _Translate:
    """Turn provider exceptions into the errors.py tree, with secrets redacted."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if e is None or isinstance(e, StoreError):
            return False
        if isinstance(e, FileExistsError):
            raise AlreadyExists(f"{self.name} already exists in {self.url}") from None
        if isinstance(e, FileNotFoundError):
            raise NotFound(f"{self.name} not found in {self.url}") from None
        if isinstance(e, PermissionError):
            raise StoreUnreachable(f"{self.url}: permission denied ({_short(e)})") from None
        if isinstance(e, (OSError, ConnectionError, TimeoutError)) or _is_network(e):
            raise StoreError(f"{self.url}: {self.name}: {_short(e)}") from None
        if isinstance(e, Exception):
            raise StoreError(f"{self.url}: {self.name}: {type(e).__name__}: {_short(e)}") from None
        return False


# Credentials that provider messages may quote although nobody registered them as secrets:
# URL query strings (access_token=, SAS sig=, X-Amz-Signature=) and user:password@ in URLs.
_URL_SECRETS = re.compile(r"\?[\w.~%-]+=[^\s\"'<>)]*|(?<=://)[^/\s@:]*:[^/\s@]*@")


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = _URL_SECRETS.sub(lambda m: "?***" if m.group().startswith("?") else "***@", text)
    return redact(text)[:300]


def _is_network(e: BaseException) -> bool:
    mod = type(e).__module__
    return mod.startswith(("aiohttp", "botocore", "asyncssh", "azure", "google", "requests", "urllib3"))


def _raise_status(method: str, status: int, code: str, path: str, retry: tuple[str, ...]) -> None:
    """Raise what s3fs would for this answer to a direct request: NotFound, or S3StatusError where a
    retry may fix it (5xx but 501, 408, 409, 429, a damaged or slow body); return where only s3fs
    can tell (403, 501, a redirect): the caller asks s3fs."""
    if status == 404:
        raise FileNotFoundError(f"{path}: {code or 'HTTP 404'}")
    if (status >= 500 and status != 501) or status in (408, 409, 429) or code in retry:
        raise S3StatusError(method, status, code)


def _write_time(info: dict) -> datetime:
    from datetime import datetime, timezone

    for k in ("LastModified", "last_modified", "updated", "mtime", "timeCreated"):
        v = info.get(k)
        if isinstance(v, datetime):
            return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
        if isinstance(v, (int, float)):
            return datetime.fromtimestamp(v, timezone.utc)
        if isinstance(v, str) and v:
            return datetime.fromisoformat(v.replace("Z", "+00:00"))
    raise StoreError(f"the provider reports no write time for {info.get('name', '?')}")


def _checksum(protocol: str, info: dict) -> str | None:
    """The provider's content checksum from an info/listing dict, tagged with its kind."""
    import base64

    if protocol in ("s3", "s3a"):
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if not etag:
            return None
        return f"md5:{etag.lower()}" if re.fullmatch(r"[0-9a-fA-F]{32}", etag) else f"etag:{etag}"
    if protocol in ("gs", "gcs"):
        for field, kind in (("md5Hash", "md5"), ("crc32c", "crc32c")):
            if info.get(field):
                try:
                    return f"{kind}:{base64.b64decode(info[field]).hex()}"
                except ValueError:
                    return None
        return None
    if protocol in ("az", "abfs", "abfss"):
        settings = info.get("content_settings") or {}
        md5 = settings.get("content_md5") if isinstance(settings, dict) else getattr(settings, "content_md5", None)
        return f"md5:{bytes(md5).hex()}" if md5 else None
    return None


def _remember(store, name: str, info: dict) -> None:
    """Keep the checksum that came with a stat, for a `checksum(name)` right after (bounded)."""
    if store.protocol not in _CREATE_MODE:
        return
    noted = store.__dict__.setdefault("_noted", {})
    if len(noted) > 4096:
        noted.clear()
    noted[name] = (_checksum(store.protocol, info),)


def _protocol(fs) -> str:
    p = fs.protocol
    return p[0] if isinstance(p, (tuple, list)) else p
