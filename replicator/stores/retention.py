"""Provider retention for the fsspec store: S3 Object Lock, GCS object retention, Azure version-level WORM.

Each backend works on one FsspecStore (its filesystem, its path mapping, its error translation)
and offers what stores/immutable.py needs: the bucket's lock status, a create-only put carrying
retention, reading and lengthening one object's retention, creating the bucket, and the
destructive probe on a canary.

Proven against a real server here: S3 (moto honours Object Lock). GCS (fake-gcs-server ignores
retention) and Azure (Azurite answers 501 to immutability calls) are written against the
documented APIs; tests check the requests they send (see docs/OPERATIONS.md).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from fsspec.asyn import sync

from replicator.errors import NotFound, StoreError
from replicator.stores.immutable import Attempt, Checker, LockStatus, Retention, stronger

_S3_MODE = {"compliance": "COMPLIANCE", "governance": "GOVERNANCE"}
# GCS and Azure name the modes by what they allow: Locked cannot be shortened or removed by anyone.
_LOCKED_MODE = {"compliance": "Locked", "governance": "Unlocked"}


def lengthened(current: Retention | None, wanted: Retention) -> Retention | None:
    """The retention to set so that it is at least `wanted` but never shorter or weaker than
    `current`; None when `current` already is."""
    if current is None:
        return wanted
    target = Retention(stronger(current.mode, wanted.mode), max(current.until, wanted.until))
    return None if target == current else target


def _from_locked(mode: str | None) -> str | None:
    return {"locked": "compliance", "unlocked": "governance"}.get(str(mode or "").lower())


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _rfc3339(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


class _Base:
    provider = ""

    def __init__(self, store):
        self.store, self.fs = store, store.fs
        self.bucket = store.root.split("/", 1)[0]

    def _key(self, name: str) -> str:
        return self.store._path(name).split("/", 1)[1]


# -- S3 ----------------------------------------------------------------------------------------


def _s3_code(e: BaseException | None) -> str | None:
    """The S3 error code behind an exception (s3fs keeps botocore's ClientError as the cause)."""
    seen = 0
    while e is not None and seen < 5:
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and resp.get("Error", {}).get("Code"):
            return resp["Error"]["Code"]
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


class S3Retention(_Base):
    """S3 Object Lock: per-object mode + retain-until on PutObject, PutObjectRetention to lengthen."""

    provider = "s3"

    def _call(self, method: str, name: str, **kw) -> dict:
        with self.store._errors(name):
            return self.fs.call_s3(method, Bucket=self.bucket, **kw)

    def lock_status(self) -> LockStatus:
        how = (f"Object Lock can only be enabled when a bucket is created (aws s3api create-bucket --bucket NAME "
               f"--object-lock-enabled-for-bucket), or on an existing versioned bucket with aws s3api "
               f"put-object-lock-configuration --bucket {self.bucket} --object-lock-configuration ObjectLockEnabled=Enabled")
        try:
            cfg = self._call("get_object_lock_configuration", "/").get("ObjectLockConfiguration", {})
        except NotFound:
            raise NotFound(f"bucket {self.bucket} not found in {self.store.url}") from None
        except StoreError as e:
            if _s3_code(e.__cause__ or e.__context__) == "ObjectLockConfigurationNotFoundError" or \
                    "ObjectLockConfiguration" in str(e):
                return LockStatus("s3", True, False, f"S3 Object Lock is not enabled on bucket {self.bucket}",
                                  {"object_lock": False}, how)
            raise
        enabled = cfg.get("ObjectLockEnabled") == "Enabled"
        rule = (cfg.get("Rule") or {}).get("DefaultRetention") or {}
        details: dict[str, Any] = {"object_lock": enabled}
        summary = f"S3 Object Lock {'enabled' if enabled else 'not enabled'} on bucket {self.bucket}"
        if rule:
            span = f"{rule['Days']} days" if rule.get("Days") else f"{rule.get('Years')} years"
            details["default_retention"] = {"mode": str(rule.get("Mode", "")).lower(), "period": span}
            summary += f"; bucket default retention {rule.get('Mode')} {span}"
        elif enabled:
            summary += "; no bucket default retention"
        return LockStatus("s3", True, enabled, summary, details, "" if enabled else how)

    def put(self, name: str, data: bytes, retention: Retention) -> None:
        # One request: If-None-Match (create-only) and the lock headers travel together.
        self.store.put(name, data, ObjectLockMode=_S3_MODE[retention.mode],
                       ObjectLockRetainUntilDate=_utc(retention.until))

    def first_version(self, name: str) -> dict:
        """{"VersionId": ...} of the object's oldest version, the one the replicator wrote: its puts
        are create-only, so a version on top is somebody else's overwrite, and lengthening the
        newest version would protect that one while ours lapses."""
        key, oldest, kw = self._key(name), None, {}
        while True:
            page = self._call("list_object_versions", name, Prefix=key, **kw)
            for v in page.get("Versions") or []:
                if v.get("Key") == key:
                    oldest = v.get("VersionId")  # newest first: the last one seen is the oldest
            if not page.get("IsTruncated"):
                break
            kw = {"KeyMarker": page.get("NextKeyMarker"), "VersionIdMarker": page.get("NextVersionIdMarker")}
        if oldest is None:
            raise NotFound(f"{name} not found in {self.store.url}")
        return {"VersionId": oldest}  # "null": written before versioning was on, still a version of its own

    def hidden(self, name: str) -> bool:
        """The object has versions, but none is current (a delete marker hides them)."""
        try:
            self.first_version(name)
        except NotFound:
            return False
        try:
            self.store.stat(name)
        except NotFound:
            return True
        return False

    def retention(self, name: str, version: dict | None = None) -> Retention | None:
        version = self.first_version(name) if version is None else version
        head = self._call("head_object", name, Key=self._key(name), **version)
        mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
        if not mode or not until:
            return None
        return Retention(mode.lower(), _utc(until))

    def extend(self, name: str, retention: Retention) -> Retention:
        version = self.first_version(name)
        current = self.retention(name, version)
        target = lengthened(current, retention)
        if target is None:
            return current
        self._call("put_object_retention", name, Key=self._key(name), **version,
                   Retention={"Mode": _S3_MODE[target.mode], "RetainUntilDate": target.until})
        return target

    def create_root(self) -> None:
        if self.store.exists():
            return
        params: dict[str, Any] = {"ObjectLockEnabledForBucket": True}
        region = (getattr(self.fs, "client_kwargs", None) or {}).get("region_name")
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call("create_bucket", "/", **params)
        self.fs.invalidate_cache()

    def probe(self, name: str, data: bytes) -> list[Attempt]:
        key = self._key(name)
        call = lambda method, **kw: self.fs.call_s3(method, Bucket=self.bucket, Key=key, **kw)  # noqa: E731
        head = call("head_object")
        version = head.get("VersionId")
        version = None if version in (None, "null") else version

        def alive() -> bool:
            try:
                body = call("get_object", **({"VersionId": version} if version else {}))["Body"]
            except FileNotFoundError:
                return False
            try:
                return sync(self.fs.loop, body.read) == data
            finally:
                body.close()

        c = Checker(alive)
        c.attempt("PutObject over the canary (overwrite)", lambda: call("put_object", Body=b"overwritten by the probe"),
                  "a new version was added on top; the canary's version is intact")
        vid = {"VersionId": version} if version else {}
        c.attempt("DeleteObject with VersionId" if version else "DeleteObject", lambda: call("delete_object", **vid))
        if head.get("ObjectLockMode") == "GOVERNANCE" and version:
            c.attempt("DeleteObject with VersionId and x-amz-bypass-governance-retention",
                      lambda: call("delete_object", VersionId=version, BypassGovernanceRetention=True))
        if version and not c.destroyed:  # hide the canary from listings; the version stays
            c.attempt("DeleteObject without VersionId (delete marker)", lambda: call("delete_object"),
                      "only a delete marker was added; the canary's version is intact")
        return c.attempts


# -- GCS -------------------------------------------------------------------------------------


class GCSRetention(_Base):
    """GCS Object Retention Lock (bucket created with --enable-per-object-retention)."""

    provider = "gcs"

    def _call(self, method: str, name: str, path: str, *args, **kw):
        with self.store._errors(name):
            return self.fs.call(method, path, *args, **kw)

    def lock_status(self) -> LockStatus:
        how = ("object retention can only be enabled when a bucket is created: gcloud storage buckets create "
               "gs://NAME --enable-per-object-retention")
        try:
            b = self._call("GET", "/", "b/{}", self.bucket, json_out=True)
        except NotFound:
            raise NotFound(f"bucket {self.bucket} not found in {self.store.url}") from None
        enabled = (b.get("objectRetention") or {}).get("mode") == "Enabled"
        details: dict[str, Any] = {"object_retention": enabled, "versioning": bool((b.get("versioning") or {}).get("enabled"))}
        summary = f"GCS object retention {'enabled' if enabled else 'not enabled'} on bucket {self.bucket}"
        policy = b.get("retentionPolicy")
        if policy:
            details["bucket_retention_policy"] = {"seconds": int(policy.get("retentionPeriod", 0)),
                                                  "locked": bool(policy.get("isLocked"))}
            summary += (f"; bucket retention policy {int(policy.get('retentionPeriod', 0)) // 86400} days"
                        f" ({'locked' if policy.get('isLocked') else 'unlocked'})")
        soft = (b.get("softDeletePolicy") or {}).get("retentionDurationSeconds")
        if soft:
            details["soft_delete_seconds"] = int(soft)
        return LockStatus("gcs", True, enabled, summary, details, "" if enabled else how)

    def put(self, name: str, data: bytes, retention: Retention) -> None:
        """A multipart insert (as gcsfs's simple upload) whose object resource carries `retention`:
        the object never exists without it. ifGenerationMatch=0 keeps the write create-only."""
        key = self._key(name)
        meta = {"name": key, "retention": {"mode": _LOCKED_MODE[retention.mode], "retainUntilTime": _rfc3339(retention.until)}}
        body = (b"--==0==\nContent-Type: application/json; charset=UTF-8\n\n" + json.dumps(meta).encode()
                + b"\n--==0==\nContent-Type: application/octet-stream\n\n" + bytes(data) + b"\n--==0==--")
        self._call("POST", name, f"{self.fs._location}/upload/storage/v1/b/{quote(self.bucket)}/o",
                   uploadType="multipart", ifGenerationMatch="0", json_out=True, data=body,
                   headers={"Content-Type": 'multipart/related; boundary="==0=="'})

    def _object(self, name: str, **kw) -> dict:
        return self._call("GET", name, "b/{}/o/{}", self.bucket, self._key(name), json_out=True, **kw)

    def retention(self, name: str) -> Retention | None:
        r = self._object(name).get("retention") or {}
        mode = _from_locked(r.get("mode"))
        return Retention(mode, _parse_time(r["retainUntilTime"])) if mode and r.get("retainUntilTime") else None

    def extend(self, name: str, retention: Retention) -> Retention:
        """PATCH the object's retention to a later time. Lengthening never needs
        overrideUnlockedRetention (only shortening or removing does), so it is never sent."""
        current = self.retention(name)
        target = lengthened(current, retention)
        if target is None:
            return current
        self._call("PATCH", name, "b/{}/o/{}", self.bucket, self._key(name), json_out=True,
                   json={"retention": {"mode": _LOCKED_MODE[target.mode], "retainUntilTime": _rfc3339(target.until)}})
        return target

    def create_root(self) -> None:
        if self.store.exists():
            return
        raise StoreError(f"bucket {self.bucket} does not exist; create it with object retention enabled: "
                         f"gcloud storage buckets create gs://{self.bucket} --enable-per-object-retention")

    def probe(self, name: str, data: bytes) -> list[Attempt]:
        key = self._key(name)
        obj = self.fs.call("GET", "b/{}/o/{}", self.bucket, key, json_out=True)
        generation = obj.get("generation")

        def alive() -> bool:
            try:
                _, body = self.fs.call("GET", "b/{}/o/{}", self.bucket, key, alt="media", generation=generation)
            except FileNotFoundError:
                return False
            return body == data

        c = Checker(alive)
        c.attempt("upload over the canary (overwrite)", lambda: self.fs.pipe_file(f"{self.bucket}/{key}", b"overwritten by the probe"),
                  "a new generation was added on top; the canary's generation is intact (object versioning)")
        c.attempt("delete the canary's generation", lambda: self.fs.call("DELETE", "b/{}/o/{}", self.bucket, key, generation=generation))
        if _from_locked((obj.get("retention") or {}).get("mode")) == "governance":
            def override():
                self.fs.call("PATCH", "b/{}/o/{}", self.bucket, key, generation=generation, overrideUnlockedRetention="true",
                             json={"retention": None}, json_out=True)
                self.fs.call("DELETE", "b/{}/o/{}", self.bucket, key, generation=generation)

            c.attempt("remove the Unlocked retention (overrideUnlockedRetention) and delete", override)
        return c.attempts


# -- Azure -----------------------------------------------------------------------------------


class AzureRetention(_Base):
    """Azure version-level immutability (container with version-level WORM support, account versioning)."""

    provider = "azure"

    def __init__(self, store):
        super().__init__(store)
        self.sdk_kwargs: dict[str, Any] = {}  # extra keywords for every SDK call (tests pass raw_request_hook)

    def _run(self, name: str, fn):
        with self.store._errors(name):
            return sync(self.fs.loop, fn)

    def _blob(self, name: str):
        return self.fs.service_client.get_blob_client(container=self.bucket, blob=self._key(name))

    @staticmethod
    def _policy(retention: Retention):
        from azure.storage.blob import ImmutabilityPolicy

        return ImmutabilityPolicy(expiry_time=_utc(retention.until), policy_mode=_LOCKED_MODE[retention.mode])

    def lock_status(self) -> LockStatus:
        how = ("enable version-level immutability on the container (az storage container-rm create ... "
               "--enable-vlw, or migrate an existing one: az storage container-rm migrate-vlw) with blob "
               "versioning on the account (az storage account blob-service-properties update --enable-versioning true)")

        async def props():
            async with self.fs.service_client.get_container_client(self.bucket) as cc:
                return await cc.get_container_properties(**self.sdk_kwargs)

        try:
            p = self._run("/", props)
        except NotFound:
            raise NotFound(f"container {self.bucket} not found in {self.store.url}") from None
        enabled = bool(getattr(p, "immutable_storage_with_versioning_enabled", False))
        details = {"version_level_immutability": enabled,
                   "container_immutability_policy": bool(getattr(p, "has_immutability_policy", False)),
                   "legal_hold": bool(getattr(p, "has_legal_hold", False))}
        summary = f"Azure version-level immutability {'enabled' if enabled else 'not enabled'} on container {self.bucket}"
        if details["container_immutability_policy"]:
            summary += "; the container has a time-based retention policy"
        if details["legal_hold"]:
            summary += "; the container has a legal hold"
        return LockStatus("azure", True, enabled, summary, details, "" if enabled else how)

    def put(self, name: str, data: bytes, retention: Retention) -> None:
        # adlfs passes keywords to BlobClient.upload_blob: Put Blob with If-None-Match: * and the
        # x-ms-immutability-policy-until-date / -mode headers in the same request.
        self.store.put(name, data, immutability_policy=self._policy(retention), **self.sdk_kwargs)

    def retention(self, name: str) -> Retention | None:
        async def props():
            async with self._blob(name) as bc:
                return await bc.get_blob_properties(**self.sdk_kwargs)

        policy = getattr(self._run(name, props), "immutability_policy", None)
        mode = _from_locked(getattr(policy, "policy_mode", None))
        until = getattr(policy, "expiry_time", None)
        return Retention(mode, _utc(until)) if mode and until else None

    def extend(self, name: str, retention: Retention) -> Retention:
        current = self.retention(name)
        target = lengthened(current, retention)
        if target is None:
            return current

        async def set_policy():
            async with self._blob(name) as bc:
                return await bc.set_immutability_policy(self._policy(target), **self.sdk_kwargs)

        self._run(name, set_policy)
        return target

    def create_root(self) -> None:
        if self.store.exists():
            return
        raise StoreError(f"container {self.bucket} does not exist; create it with version-level immutability: "
                         f"az storage container-rm create --storage-account ACCOUNT --name {self.bucket} --enable-vlw")

    def probe(self, name: str, data: bytes) -> list[Attempt]:
        from azure.core.exceptions import ResourceNotFoundError

        def run(fn):
            return sync(self.fs.loop, fn)

        def on_blob(method: str, *args, **kw):
            async def go():
                async with self._blob(name) as bc:
                    result = await getattr(bc, method)(*args, **kw, **self.sdk_kwargs)
                    if method == "download_blob":
                        return await result.readall()
                    return result
            return run(go)

        props = on_blob("get_blob_properties")
        version = getattr(props, "version_id", None)
        vid = {"version_id": version} if version else {}

        def alive() -> bool:
            try:
                return on_blob("download_blob", **vid) == data
            except ResourceNotFoundError:
                return False

        c = Checker(alive)
        c.attempt("Put Blob over the canary (overwrite)", lambda: on_blob("upload_blob", b"overwritten by the probe", overwrite=True),
                  "a new version was added on top; the canary's version is intact (blob versioning)")
        c.attempt("Delete Blob on the canary's version" if version else "Delete Blob", lambda: on_blob("delete_blob", **vid))
        policy = getattr(props, "immutability_policy", None)
        if _from_locked(getattr(policy, "policy_mode", None)) == "governance":
            def remove_policy_and_delete():
                on_blob("delete_immutability_policy", **vid)
                on_blob("delete_blob", **vid)

            c.attempt("Delete Blob Immutability Policy (Unlocked) and delete", remove_policy_and_delete)
        return c.attempts
