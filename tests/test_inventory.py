"""S3 Inventory reports as a job's listing (issue 9). moto does not generate inventory reports,
so the test writes one to the real moto server in the layout and CSV format S3 uses
(manifest.json + manifest.checksum + gzipped CSV with form-encoded keys) from the bucket's own
listing, then runs the CLI against it."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import time
import uuid
from urllib.parse import quote_plus

from project import s3_fs, unique
from test_e2e_incident import fill, ls_keys, make_project

OBJECTS = {"plain.txt": b"plain", "with space/a b.txt": b"spaces", "plus+sign.txt": b"plus", "ünï/código.bin": b"u",
           "deep/a/b/c.dat": b"x" * 5000, "gone-later.txt": b"soon gone"}


def write_report(fs, src_bucket: str, inv_bucket: str, created: float, corrupt: bool = False) -> str:
    """An inventory report of src_bucket as it is now, dated `created`; returns the job's location URL."""
    base = f"{inv_bucket}/reports/{src_bucket}/daily"
    rows = []
    fs.invalidate_cache()
    for info in fs.find(src_bucket, detail=True).values():
        key = info["name"][len(src_bucket) + 1:]
        modified = info["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        rows.append([src_bucket, quote_plus(key), str(info["size"]), modified, info["ETag"].strip('"'), "false"])
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    data = gzip.compress(buf.getvalue().encode())
    data_key = f"reports/{src_bucket}/daily/data/{uuid.uuid4()}.csv.gz"
    fs.pipe_file(f"{inv_bucket}/{data_key}", data)
    stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created))
    manifest = json.dumps({
        "sourceBucket": src_bucket, "destinationBucket": f"arn:aws:s3:::{inv_bucket}", "version": "2016-11-30",
        "creationTimestamp": str(int(created * 1000)), "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, IsMultipartUploaded",
        "files": [{"key": data_key, "size": len(data),
                   "MD5checksum": hashlib.md5(data + (b"x" if corrupt else b"")).hexdigest()}]}).encode()
    fs.pipe_file(f"{base}/{stamp}/manifest.json", manifest)
    fs.pipe_file(f"{base}/{stamp}/manifest.checksum", hashlib.md5(manifest).hexdigest().encode())
    return f"s3://{base}/"


def write_parquet_report(fs, src_bucket: str, inv_bucket: str, created: float) -> str:
    """The same as a Parquet report of an all-versions inventory: snake_case columns, keys as they are,
    times as timestamps, plus an older version and a delete marker that must not be listed."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datetime import datetime, timezone

    base = f"{inv_bucket}/reports/{src_bucket}/daily"
    fs.invalidate_cache()
    rows = []
    for info in fs.find(src_bucket, detail=True).values():
        key = info["name"][len(src_bucket) + 1:]
        rows.append({"bucket": src_bucket, "key": key, "version_id": "v2", "is_latest": True, "is_delete_marker": False,
                     "size": info["size"], "last_modified_date": info["LastModified"], "e_tag": info["ETag"].strip('"')})
        rows.append({"bucket": src_bucket, "key": key, "version_id": "v1", "is_latest": False, "is_delete_marker": False,
                     "size": 1, "last_modified_date": datetime(2020, 1, 1, tzinfo=timezone.utc), "e_tag": "old"})
    rows.append({"bucket": src_bucket, "key": "deleted-long-ago", "version_id": "v9", "is_latest": True,
                 "is_delete_marker": True, "size": None, "last_modified_date": None, "e_tag": None})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    data = buf.getvalue()
    data_key = f"reports/{src_bucket}/daily/data/{uuid.uuid4()}.parquet"
    fs.pipe_file(f"{inv_bucket}/{data_key}", data)
    manifest = json.dumps({
        "sourceBucket": src_bucket, "destinationBucket": f"arn:aws:s3:::{inv_bucket}", "version": "2016-11-30",
        "creationTimestamp": str(int(created * 1000)), "fileFormat": "Parquet",
        "fileSchema": "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); ... }",
        "files": [{"key": data_key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}]}).encode()
    stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created))
    fs.pipe_file(f"{base}/{stamp}/manifest.json", manifest)
    return f"s3://{base}/"


def inventory_project(tmp_path, s3_server):
    p, fs, bucket = make_project(tmp_path, s3_server)
    fill(fs, bucket, OBJECTS)
    inv = unique("inventory")
    fs.mkdir(inv)
    return p, fs, bucket, inv


def configure(p, location: str, max_age: str = "2d") -> None:
    p.config.write_text(p.config.read_text() + f'\n[jobs.inventory]\nlocation = "{location}"\nmax_age = "{max_age}"\n')


def test_a_run_lists_from_the_newest_report_and_the_next_lists_the_bucket(tmp_path, s3_server):
    p, fs, bucket, inv = inventory_project(tmp_path, s3_server)
    created = time.time() - 600
    configure(p, write_report(fs, bucket, inv, created))
    # After the report: one object is added (the report cannot know it), one removed.
    fs.pipe_file(f"{bucket}/added-after.txt", b"late")
    fs.rm_file(f"{bucket}/gone-later.txt")
    p.cli("init")
    first = p.json("run")["jobs"][0]
    assert first["listed"] == len(OBJECTS)  # from the report, not from the bucket
    assert first["copied"] == len(OBJECTS) - 1 and any("gone-later.txt" in w for w in first["warnings"])
    assert first["started"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(created)))  # the report's time
    assert "added-after.txt" not in ls_keys(p)
    assert set(ls_keys(p)) == set(OBJECTS) - {"gone-later.txt"}  # keys decoded: spaces, plus signs, unicode

    # The same report again is not newer than the last snapshot: the bucket is listed.
    second = p.json("run")["jobs"][0]
    assert second["copied"] == 1 and second["listed"] == len(OBJECTS)
    assert sorted(ls_keys(p)) == sorted(set(OBJECTS) - {"gone-later.txt"} | {"added-after.txt"})
    assert p.json("verify", "--deep")["ok"]


def test_a_parquet_report_of_all_versions_lists_the_current_ones(tmp_path, s3_server):
    p, fs, bucket, inv = inventory_project(tmp_path, s3_server)
    configure(p, write_parquet_report(fs, bucket, inv, time.time() - 60))
    p.cli("init")
    run = p.json("run")["jobs"][0]
    assert run["listed"] == len(OBJECTS) and run["copied"] == len(OBJECTS) and not run["warnings"]
    assert set(ls_keys(p)) == set(OBJECTS)
    again = p.json("run")["jobs"][0]  # the bucket's listing agrees with the report: etags and sizes match
    assert again["copied"] == 0 and again["unchanged"] == len(OBJECTS)


def test_a_stale_report_is_not_used(tmp_path, s3_server):
    p, fs, bucket, inv = inventory_project(tmp_path, s3_server)
    configure(p, write_report(fs, bucket, inv, time.time() - 3 * 86400), max_age="1d")
    fs.pipe_file(f"{bucket}/added-after.txt", b"late")
    p.cli("init")
    run = p.json("run")["jobs"][0]
    assert run["listed"] == len(OBJECTS) + 1  # listed from the bucket


def test_a_report_file_that_fails_its_md5_stops_the_run(tmp_path, s3_server):
    p, fs, bucket, inv = inventory_project(tmp_path, s3_server)
    configure(p, write_report(fs, bucket, inv, time.time() - 60, corrupt=True))
    p.cli("init")
    r = p.cli("run", check=2)
    assert "does not match the MD5" in r.stdout + r.stderr


def test_inventory_config_is_checked():
    from pathlib import Path

    import pytest

    from replicator.config import parse
    from replicator.errors import ConfigError

    base = '[vault]\nurl = "/tmp/v"\nkey_file = "k"\n[[jobs]]\nname = "j"\nsource = "{src}"\n[jobs.inventory]\n{inv}\n'
    ok = parse(base.format(src="s3://b/", inv='location = "s3://inv/reports/b/daily/"'), Path("/tmp"))
    assert ok.jobs[0].inventory.location == "s3://inv/reports/b/daily/"
    for src, inv, where in [("gs://b/", 'location = "s3://inv/x/"', "location"),
                            ("s3://b/", 'location = "inv/x"', "location"),
                            ("s3://b/", 'location = "s3://inv/x/"\nmax_age = "soon"', "max_age")]:
        with pytest.raises(ConfigError, match=where):
            parse(base.format(src=src, inv=inv), Path("/tmp"))
