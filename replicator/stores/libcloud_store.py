"""A store over any apache-libcloud storage driver: `libcloud://PROVIDER/CONTAINER/PREFIX`.

PROVIDER is a libcloud `Provider` constant name, case-insensitive (`s3`, `minio`, `azure_blobs`,
`backblaze_b2`, `google_storage`, `aliyun_oss`, `openstack_swift`, ...). The options table goes to
the driver's constructor unchanged (`key`, `secret`, `host`, `port`, `secure`, `region`, ...),
except `timeout` (seconds, default 60), which this adapter applies to every HTTP request itself:
libcloud's streaming requests (downloads) otherwise have no timeout at all.

Create-only puts, the best each driver family allows (docs/LIBCLOUD.md has the table):

- S3 API (`s3`, `minio`, `s3_rgw`, `digitalocean_spaces`, `ovh`, `scaleway`, ...): one PUT with
  `If-None-Match: *`; the server answers 412 if the name is taken, atomically. AWS honours it
  (since 2024-08), so on AWS that is all. Any other endpoint (MinIO, Ceph, Spaces, ..., or the `s3`
  driver given a non-AWS `host`) may be a version that silently ignores the header, so the name is
  also checked (HEAD) first: such a server still cannot overwrite an object that existed before
  the put began; only two concurrent first writers of one name could race there.
- `google_storage` (XML API): one PUT with `x-goog-if-generation-match: 0` (412 if taken).
- `azure_blobs`: one Put Blob with `If-None-Match: *` (409 BlobAlreadyExists if taken). libcloud's
  own upload for streams stages blocks with fixed block ids, so concurrent writers of one name
  could mix each other's blocks; a single Put Blob is atomic (at most 256 MiB at the API version
  libcloud speaks, far above the vault's 4 MiB chunks).
- every other driver (`backblaze_b2`, `aliyun_oss`, `openstack_swift`, ...): check-then-put. The
  driver's own upload is atomic, but create-only is NOT: two writers that both see the name free
  in the window between the check and the upload both write, and the later one wins (on B2 as a
  newer version of the file). Data objects are named by their content, and one replicator is a
  single writer (the state-directory lock), so the race needs two replicator installations writing
  one vault at the same moment; it cannot be closed without a conditional write that libcloud
  does not expose for these drivers.

The body goes out with Content-MD5, so the provider rejects a payload damaged in transit (and S3
Object Lock buckets require it). A libcloud driver object is not thread-safe (the connection keeps
the current request and response in attributes), so each thread gets its own driver.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import socket
import ssl
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

from replicator.errors import AlreadyExists, NotFound, StoreError, StoreUnreachable
from replicator.redact import redact
from replicator.stores.base import check_name

SCHEME = "libcloud://"
DEFAULT_TIMEOUT = 60.0
_OCTETS = "application/octet-stream"


def _libcloud():
    try:
        import libcloud.storage.providers as providers
        import libcloud.storage.types as types
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise StoreError(f"apache-libcloud is not installed ({e})") from None
    return providers, types


def parse_url(url: str) -> tuple[str, str, str]:
    """`libcloud://PROVIDER/CONTAINER/PREFIX` -> (provider value, container, prefix without slashes)."""
    if not url.lower().startswith(SCHEME):
        raise StoreError(f"{url}: not a libcloud:// URL")
    rest = url[len(SCHEME):]
    provider, _, path = rest.partition("/")
    container, _, prefix = path.partition("/")
    prefix = prefix.strip("/")
    if not provider or not container:
        raise StoreError(f"{url}: expected libcloud://PROVIDER/CONTAINER[/PREFIX]")
    if prefix:
        try:
            check_name(prefix)
        except ValueError:
            raise StoreError(f"{url}: invalid prefix {prefix!r}") from None
    _, types = _libcloud()
    wanted = provider.lower()
    consts = {k.lower(): getattr(types.Provider, k) for k in dir(types.Provider) if k.isupper()}
    value = consts.get(wanted) or next((v for v in consts.values() if v == wanted), None)
    if value is None:
        few = "s3, minio, azure_blobs, google_storage, backblaze_b2, aliyun_oss, openstack_swift, digitalocean_spaces"
        raise StoreError(f"{url}: unknown libcloud storage provider {provider!r}; valid are for example {few}")
    return value, container, prefix


class LibcloudStore:
    def __init__(self, url: str, options: dict[str, Any]):
        self.url = url
        self.provider, self.container, self.prefix = parse_url(url)
        providers, types = _libcloud()
        self._types = types
        opts = dict(options)
        timeout = opts.pop("timeout", DEFAULT_TIMEOUT)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise StoreError(f"{url}: option timeout must be a positive number of seconds")
        self._timeout = float(timeout)
        try:
            self._cls = providers.get_driver(self.provider)
        except Exception as e:  # noqa: BLE001  -- libcloud raises AttributeError for a driver it lost
            raise StoreError(f"{url}: libcloud has no driver for {self.provider!r} ({type(e).__name__})") from None
        self._options = opts  # never formatted into a message
        self._mode = _create_mode(self._cls, opts)
        self._local = threading.local()
        self._driver()  # bad options fail here, at open time, not at the first write

    # -- drivers -----------------------------------------------------------------------

    def _driver(self):
        d = getattr(self._local, "driver", None)
        if d is None:
            from libcloud.common.types import InvalidCredsError, LibcloudError

            with _Translate(self.url, "/"):
                try:
                    d = self._cls(**self._options)
                except (TypeError, ValueError) as e:  # unknown option, bad region, key not base64, ...
                    raise StoreError(f"{self.url}: bad options for the {self.provider} driver: {_short(e)}") from None
                except LibcloudError as e:
                    if isinstance(e, InvalidCredsError):
                        raise
                    raise StoreError(f"{self.url}: cannot set up the {self.provider} driver: {_short(e)}") from None
            _tune(d, self._timeout)
            self._local.driver = d
        return d

    @property
    def driver(self):
        """The calling thread's libcloud driver (for provider-specific extras; not thread-safe)."""
        return self._driver()

    def _container(self):
        from libcloud.storage.base import Container

        return Container(name=self.container, extra=None, driver=self._driver())

    def _object(self, key: str):
        from libcloud.storage.base import Object

        d = self._driver()
        return Object(name=key, size=None, hash=None, extra={}, meta_data={}, container=self._container(), driver=d)

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _errors(self, name: str) -> "_Translate":
        return _Translate(self.url, name)

    # -- the Store protocol ----------------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        data = bytes(data)
        with self._errors(name):
            try:
                if self._mode in ("generic", "s3-unverified"):
                    self._check_free(name, key)
                if self._mode == "generic":
                    self._driver().upload_object_via_stream(iter([data]), self._container(), key)
                else:
                    self._conditional_put(name, key, data)
            except self._types.ContainerDoesNotExistError:
                raise self._no_container() from None

    def _no_container(self) -> StoreError:
        return StoreError(f"{self.url}: container {self.container} does not exist (run `replicator init`)")

    def _check_free(self, name: str, key: str) -> None:
        try:
            self._driver().get_object(self.container, key)
        except self._types.ObjectDoesNotExistError:
            return
        raise AlreadyExists(f"{name} already exists in {self.url}")

    def _conditional_put(self, name: str, key: str, data: bytes) -> None:
        d = self._driver()
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        headers = {"Content-Type": _OCTETS, "Content-MD5": md5}
        if self._mode == "azure":
            headers.update({"If-None-Match": "*", "x-ms-blob-type": "BlockBlob"})
            if data:  # Shared Key signs an empty Content-Length for an empty body; requests sends "0"
                headers["Content-Length"] = str(len(data))
        elif self._mode == "gcs":
            headers["x-goog-if-generation-match"] = "0"
        else:
            headers["If-None-Match"] = "*"
        path = d._get_object_path(self._container(), key)  # the driver's own quoting of the name
        resp = d.connection.request(path, method="PUT", data=data, headers=headers)
        status = int(resp.status)
        if status in (200, 201):
            return
        code = _error_code(resp.body)
        if status == 412 or (status == 409 and code == "BlobAlreadyExists"):
            raise AlreadyExists(f"{name} already exists in {self.url}")
        if status == 404:
            raise self._no_container()
        if status == 409:  # S3 ConditionalRequestConflict: another conditional write of the name in flight
            raise StoreError(f"{self.url}: {name}: conflicting concurrent write ({code or 'HTTP 409'}); retry")
        raise StoreError(f"{self.url}: {name}: HTTP {status}{' ' + code if code else ''}")

    # Names are checked outside `_errors`: a bad name is the caller's ValueError, not a StoreError.
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"bad range offset={offset} length={length} for {name}")
        if length == 0:  # libcloud refuses an empty range; the object must still exist
            self.stat(name)
            return b""
        with self._errors(name):
            d = self._driver()
            obj = self._object(key)
            try:
                if offset == 0 and length is None:
                    chunks = d.download_object_as_stream(obj)
                else:
                    end = None if length is None else offset + length
                    chunks = d.download_object_range_as_stream(obj, offset, end)
                data = b"".join(chunks)
            except (self._types.ObjectDoesNotExistError, self._types.ContainerDoesNotExistError):
                raise
            except self._types.LibcloudError:
                # A range that starts at or past the end is refused (HTTP 416): the size decides.
                if self.stat(name) <= offset:
                    return b""
                raise
            if length is not None and len(data) > length:  # a server that ignored Range sent it all
                data = data[offset:offset + length]
            return data

    def stat(self, name: str) -> int:
        key = self._key(name)
        with self._errors(name):
            obj = self._driver().get_object(self.container, key)
            if obj.size is None:
                raise StoreError(f"{self.url}: {name}: the provider reported no size")
            return int(obj.size)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for name, obj in self._listing(prefix):
            yield name, int(obj.size or 0)

    def list_times(self, prefix: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(name, size, write time as the provider's clock set it): what prune orders snapshots by."""
        for name, obj in self._listing(prefix):
            yield name, int(obj.size or 0), self._write_time(name, obj)

    def _listing(self, prefix: str):
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        it = None
        while True:
            with self._errors(prefix or "/"):
                try:
                    if it is None:
                        it = iter(self._driver().iterate_container_objects(self._container(), prefix=full or None))
                    obj = next(it)
                except StopIteration:
                    return
                except self._types.ContainerDoesNotExistError:
                    return
                except self._types.LibcloudError:
                    # The S3 driver reports a missing bucket as a bare "Unexpected status code: 404".
                    if not self.exists():
                        return
                    raise
            key = obj.name
            if not key.startswith(full) or key.endswith("/") or (self.prefix and not key.startswith(self.prefix + "/")):
                continue  # folder markers other tools leave, or a listing that ignored the prefix
            yield key[cut:], obj

    def _write_time(self, name: str, obj) -> datetime:
        extra = obj.extra or {}
        v = extra.get("last_modified")
        if v is None and isinstance(extra.get("uploadTimestamp"), (int, float)):  # B2: milliseconds
            return datetime.fromtimestamp(extra["uploadTimestamp"] / 1000, timezone.utc)
        if isinstance(v, str) and v.strip():
            try:  # S3, OSS: ISO 8601 with Z; Swift: ISO 8601 in UTC without a zone
                t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
            except ValueError:
                try:  # Azure: RFC 1123
                    t = email.utils.parsedate_to_datetime(v)
                except (TypeError, ValueError):
                    t = None
            if t is not None:
                return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        raise StoreError(f"{self.url}: the {self.provider} driver reports no write time for {name}")

    def delete(self, name: str) -> None:
        key = self._key(name)
        with self._errors(name):
            if not self._driver().delete_object(self._object(key)):
                raise StoreError(f"{self.url}: {name}: the provider refused the delete")

    def exists(self) -> bool:
        with self._errors("/"):
            d = self._driver()
            if self._mode in ("s3", "s3-unverified", "gcs"):
                # The S3 driver's get_container() reports any bucket as present when HEAD is denied.
                resp = d.connection.request(f"/{self.container}", method="HEAD")
                if int(resp.status) == 404:
                    return False
                if int(resp.status) != 200:
                    raise StoreError(f"{self.url}: checking container {self.container}: HTTP {resp.status}")
                return True
            try:
                d.get_container(self.container)
                return True
            except self._types.ContainerDoesNotExistError:
                return False

    def create(self) -> None:
        if self.exists():
            return
        with self._errors("/"):
            try:
                self._driver().create_container(self.container)
            except self._types.ContainerAlreadyExistsError:
                pass


# -- driver families and tuning -----------------------------------------------------------


def _create_mode(cls, options: dict[str, Any]) -> str:
    """How `put` makes a write create-only with this driver (see the module docstring)."""
    from libcloud.storage.drivers.azure_blobs import AzureBlobsStorageDriver
    from libcloud.storage.drivers.google_storage import GoogleStorageDriver
    from libcloud.storage.drivers.s3 import BaseS3StorageDriver, S3StorageDriver

    if issubclass(cls, AzureBlobsStorageDriver):
        return "azure"
    if issubclass(cls, GoogleStorageDriver):
        return "gcs"
    if issubclass(cls, S3StorageDriver) and _is_aws(options.get("host")):
        return "s3"  # AWS honours If-None-Match on PUT (since 2024-08)
    if issubclass(cls, BaseS3StorageDriver):
        return "s3-unverified"  # MinIO, Ceph, Spaces, ..., or the S3 driver pointed at another host
    return "generic"


def _is_aws(host: Any) -> bool:
    if host is None:
        return True
    host = str(host).lower().rstrip(".")
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn")) or host in ("amazonaws.com",)


def _tune(driver, timeout: float) -> None:
    """Per-driver-instance fixes: a timeout on every request, 412 as an answer, S3 bucket regions."""
    import requests.adapters

    conn = driver.connection

    # The conditional PUT needs the 412 back as a response, not as the S3 driver's "Unknown error".
    for attr in ("responseCls", "rawResponseCls"):
        base = getattr(conn, attr, None)
        if base is not None:
            setattr(conn, attr, _accepting_412(base))

    # libcloud sends its raw (streaming) requests without any timeout: a stalled server would hang
    # a download forever. Mount adapters that fill in our timeout when none is given.
    http = getattr(conn, "connection", None)
    session = getattr(http, "session", None)
    if session is not None:
        session.timeout = timeout  # what libcloud passes on its non-streaming requests
        for scheme in ("http://", "https://"):
            if type(session.get_adapter(scheme + "x")) is requests.adapters.HTTPAdapter:
                session.mount(scheme, _timeout_adapter(timeout))

    # S3StorageDriver(region=...) signs for the region but creates buckets without a
    # LocationConstraint, which AWS refuses outside us-east-1.
    from libcloud.storage.drivers.s3 import S3StorageDriver

    if isinstance(driver, S3StorageDriver) and not driver.ex_location_name:
        region = getattr(driver, "region_name", None) or getattr(driver, "region", None)
        if region and region != "us-east-1":
            driver.ex_location_name = region


def _timeout_adapter(seconds: float):
    import requests.adapters

    class TimeoutAdapter(requests.adapters.HTTPAdapter):
        """Fills in a timeout where the caller (libcloud's raw requests) gives none."""

        def send(self, request, timeout=None, **kw):
            return super().send(request, timeout=timeout or seconds, **kw)

    return TimeoutAdapter()


_ACCEPTING: dict[type, type] = {}
_ACCEPTING_LOCK = threading.Lock()


def _accepting_412(base: type) -> type:
    with _ACCEPTING_LOCK:
        cls = _ACCEPTING.get(base)
        if cls is None:
            def success(self) -> bool:
                return int(self.status) == 412 or base.success(self)

            cls = type(base.__name__, (base,), {"success": success})
            _ACCEPTING[base] = cls
        return cls


# -- errors ---------------------------------------------------------------------------------

_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{1,300})")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def _error_code(body: Any) -> str:
    m = _XML_CODE.search(body if isinstance(body, str) else "")
    return m.group(1).strip() if m else ""


def _short(e: BaseException) -> str:
    """One line: the provider's error code and message, never a body dump, never a secret."""
    text = getattr(e, "value", None)
    if not isinstance(text, str) or not text.strip():
        text = str(e)
    code, message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
    if code or message:
        text = ": ".join(m.group(1).strip() for m in (code, message) if m)
    text = " ".join(text.split()) or type(e).__name__
    return redact(text)[:300]


def _network_reason(e: BaseException) -> str | None:
    """A short reason for a connection-level failure, or None if e is not one."""
    try:
        import requests.exceptions as rex
    except ImportError:  # pragma: no cover
        rex = None
    if rex is not None and isinstance(e, rex.Timeout):
        return "timed out"
    if rex is not None and isinstance(e, rex.ConnectionError):
        m = _ERRNO.search(str(e))
        return m.group(1).strip() if m else "connection failed"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, (ConnectionError, socket.gaierror, ssl.SSLError)):
        return (e.strerror or type(e).__name__) if isinstance(e, OSError) else type(e).__name__
    return None


class _Translate:
    """Turn libcloud / requests exceptions into the errors.py tree, one line, secrets redacted."""

    def __init__(self, url: str, name: str):
        self.url, self.name = url, name

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        # Inside a translated block every other exception comes from libcloud or the network: our
        # own ValueErrors (bad names, bad ranges) are raised before a block is entered.
        if e is None or isinstance(e, StoreError) or not isinstance(e, Exception):
            return False
        from libcloud.common.exceptions import BaseHTTPError
        from libcloud.common.types import InvalidCredsError, LibcloudError
        from libcloud.storage.types import ContainerDoesNotExistError, ObjectDoesNotExistError

        if isinstance(e, ObjectDoesNotExistError):
            raise NotFound(f"{self.name} not found in {self.url}") from None
        if isinstance(e, ContainerDoesNotExistError):
            raise NotFound(f"{self.name} not found in {self.url} (no container)") from None
        if isinstance(e, InvalidCredsError) or (isinstance(e, BaseHTTPError) and getattr(e, "code", None) in (401, 403)):
            detail = _short(e)
            if detail.lower() in ("unknown error", "invalidcredserror", "none", ""):  # a body-less 401/403
                detail = "the provider refused the credentials or their permissions"
            err = StoreUnreachable(f"{self.url}: access denied ({detail})")
            err.retryable = False  # refused credentials or permissions do not heal by waiting
            raise err from None
        reason = _network_reason(e)
        if reason is not None:
            raise StoreUnreachable(f"{self.url}: cannot reach the provider ({reason})") from None
        if isinstance(e, (LibcloudError, BaseHTTPError)):
            raise StoreError(f"{self.url}: {self.name}: {_short(e)}") from None
        raise StoreError(f"{self.url}: {self.name}: {type(e).__name__}: {_short(e)}") from None

