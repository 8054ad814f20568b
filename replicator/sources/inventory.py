"""S3 Inventory reports as a listing (issue 9, `[jobs.inventory]`).

For a bucket of hundreds of millions of keys a daily inventory report is far cheaper than
ListObjectsV2. S3 writes each report under the destination as

    <location>/<YYYY-MM-DDTHH-MMZ>/manifest.json      (+ manifest.checksum)
    <location>/data/<uuid>.csv.gz | .parquet           (the files the manifest names)

`manifest.json` names the source bucket, the format (CSV, Parquet or ORC), the CSV column
order (`fileSchema`), each data file with its MD5, and `creationTimestamp` (ms since the
epoch). Keys in CSV reports are form-encoded (space as `+`). A report is a listing *as of its creation
time*, so the snapshot built from it carries that time; objects changed since are caught
by their ETag when read (If-Match) and by the next run.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator
from urllib.parse import unquote_plus

from replicator.errors import SourceError
from replicator.sources.base import SourceItem

_REPORT_DIR = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z")


@dataclass(frozen=True)
class Report:
    """One inventory report: where its manifest is, and what it says."""

    manifest: dict
    time: datetime  # creationTimestamp: the listing is as of this moment

    @property
    def files(self) -> list[dict]:
        return self.manifest.get("files") or []


class InventoryListing:
    """A job's inventory: the newest usable report, and its items as the job's listing."""

    def __init__(self, fs, location: str, bucket: str, prefix: str, accept: Callable[[str], bool], max_age: timedelta):
        self.fs, self.location, self.bucket, self.prefix = fs, location, bucket, prefix
        self.accept, self.max_age = accept, max_age

    def usable(self, after: datetime | None, now: datetime | None = None) -> tuple[Report | None, str]:
        """(the newest report, if it is younger than max_age and newer than `after`; why not otherwise)."""
        now = now or datetime.now(timezone.utc)
        try:
            report = latest_report(self.fs, self.location)
        except OSError as e:
            raise SourceError(f"inventory at s3://{self.location}: {e}") from None
        if report is None:
            return None, f"no inventory report under s3://{self.location}"
        if now - report.time > self.max_age:
            return None, f"the newest inventory report ({report.time:%Y-%m-%dT%H:%MZ}) is older than max_age"
        if after is not None and report.time <= after:
            return None, f"the newest inventory report ({report.time:%Y-%m-%dT%H:%MZ}) is not newer than the last snapshot"
        return report, ""

    def items(self, report: Report) -> Iterator[SourceItem]:
        try:
            yield from report_items(self.fs, report, self.bucket, self.prefix, self.accept)
        except OSError as e:
            raise SourceError(f"inventory at s3://{self.location}: {e}") from None


def latest_report(fs, location: str) -> Report | None:
    """The newest report under `location` (bucket/prefix, no scheme), or None if there is none."""
    location = location.rstrip("/")
    try:
        dirs = [p.rsplit("/", 1)[-1] for p in fs.ls(location, detail=False, refresh=True)]
    except FileNotFoundError:
        return None
    for name in sorted((d for d in dirs if _REPORT_DIR.fullmatch(d)), reverse=True):
        try:
            raw = fs.cat_file(f"{location}/{name}/manifest.json")
        except FileNotFoundError:
            continue  # a report still being written
        try:
            checksum = fs.cat_file(f"{location}/{name}/manifest.checksum").decode().strip()
        except FileNotFoundError:
            checksum = None
        if checksum is not None and hashlib.md5(raw).hexdigest() != checksum:
            raise SourceError(f"inventory {location}/{name}/manifest.json does not match its manifest.checksum")
        try:
            manifest = json.loads(raw)
            created = datetime.fromtimestamp(int(manifest["creationTimestamp"]) / 1000, timezone.utc)
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"inventory {location}/{name}/manifest.json is not an S3 inventory manifest") from None
        return Report(manifest, created)
    return None


def report_items(fs, report: Report, bucket: str, prefix: str, accept: Callable[[str], bool]) -> Iterator[SourceItem]:
    """The current objects a report lists under `prefix`, as the listing would give them."""
    fmt = report.manifest.get("fileFormat")
    if report.manifest.get("sourceBucket") != bucket:
        raise SourceError(f"the inventory report is of bucket {report.manifest.get('sourceBucket')!r}, not {bucket!r}")
    if fmt not in ("CSV", "Parquet"):
        raise SourceError(f"inventory format {fmt!r} is not supported (CSV or Parquet)")
    dest = report.manifest.get("destinationBucket", "").removeprefix("arn:aws:s3:::")
    for f in report.files:
        raw = fs.cat_file(f"{dest}/{f['key']}")
        if f.get("MD5checksum") and hashlib.md5(raw).hexdigest() != f["MD5checksum"]:
            raise SourceError(f"inventory file {f['key']} does not match the MD5 its manifest records")
        rows = _csv_rows(raw, report.manifest) if fmt == "CSV" else _parquet_rows(raw)
        for row in rows:
            if row.get("IsLatest", "true").lower() != "true" or row.get("IsDeleteMarker", "false").lower() == "true":
                continue
            key = row["Key"]
            if not key.startswith(prefix) or (key.endswith("/") and not int(row["Size"] or 0)):
                continue  # an empty "folder" marker is not an object (as in the listing)
            rel = key[len(prefix):]
            if accept(rel):
                yield SourceItem(rel, int(row["Size"]), _mtime(row.get("LastModifiedDate")),
                                 (row.get("ETag") or "").strip('"') or None, None)


def _csv_rows(raw: bytes, manifest: dict) -> Iterator[dict]:
    names = [n.strip() for n in manifest.get("fileSchema", "").split(",")]
    if "Key" not in names or "Size" not in names:
        raise SourceError("the inventory's fileSchema lacks Key or Size")
    text = io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(raw)), encoding="utf-8", newline="")
    for values in csv.reader(text):
        row = dict(zip(names, values))
        row["Key"] = unquote_plus(row["Key"])  # CSV reports form-encode keys: a space is "+", a "+" is %2B
        yield row


_PARQUET_COLUMNS = {"bucket": "Bucket", "key": "Key", "version_id": "VersionId", "is_latest": "IsLatest",
                    "is_delete_marker": "IsDeleteMarker", "size": "Size", "last_modified_date": "LastModifiedDate",
                    "e_tag": "ETag"}


def _parquet_rows(raw: bytes) -> Iterator[dict]:
    """Rows of a Parquet report (snake_case columns, keys not encoded), named as in CSV reports."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError("Parquet inventory reports need pyarrow (pip install pyarrow), or choose CSV") from None
    table = pq.read_table(io.BytesIO(raw))
    for row in table.to_pylist():
        out = {}
        for column, name in _PARQUET_COLUMNS.items():
            v = row.get(column)
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, datetime):
                v = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat()
            elif column == "last_modified_date" and isinstance(v, int):  # epoch milliseconds
                v = datetime.fromtimestamp(v / 1000, timezone.utc).isoformat()
            if v is not None:
                out[name] = v
        yield out


def _mtime(text: str | None) -> str | None:
    """The listing's format (microseconds, Z) from the report's ISO 8601 time."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
