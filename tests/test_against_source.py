"""`verify --against-source`: the latest snapshot against the live source (issue 10). A changed, a
missing and an extra object; recent changes are in flight, not drift, until a schedule interval
has passed; content is read only to settle a doubt (an etag of another form)."""

from __future__ import annotations

import os
import time

import boto3
from project import Project, unique


def s3_client(s3_server):
    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def multipart_put(s3, bucket: str, key: str, data: bytes, part: int = 5 * 2**20) -> str:
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)
    parts = []
    for n, start in enumerate(range(0, len(data), part), 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data[start:start + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                        MultipartUpload={"Parts": parts})["ETag"]


def write_config(p: Project, **job) -> None:
    p.jobs[0].update(job)
    p.write_config()


def by_kind(job: dict, in_flight: bool) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in job["items"]:
        if item["in_flight"] == in_flight:
            out.setdefault(item["kind"], []).append(item["key"])
    return out


def test_drift_changed_missing_and_extra_in_flight_then_drift(tmp_path, s3_server):
    s3 = s3_client(s3_server)
    bucket = unique("live")
    s3.create_bucket(Bucket=bucket)
    big = os.urandom(5 * 2**20 + 4096)
    objects = {"keep.txt": b"keep", "change.txt": b"before", "gone.txt": b"gone soon", "big.bin": big,
               "later/hidden.txt": b"excluded at first"}
    for k, v in objects.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)
    time.sleep(1.1)  # listings have whole seconds: these objects must be older than the snapshot, even on a fast machine
    p = Project(tmp_path, str(tmp_path / "vault"), {},
                jobs=[{"name": "live", "source": f"s3://{bucket}/", "schedule": "1h", "exclude": ["later/**"],
                       "source_options": {"endpoint_url": s3_server.endpoint_url, "key": "testing", "secret": "testing"}}])
    p.write_config()
    p.cli("init")
    p.cli("run")
    clean = p.json("verify", "--against-source")
    assert clean["ok"] and clean["jobs"][0]["unchanged"] == 4 and clean["jobs"][0]["bytes_read"] == 0

    time.sleep(1.1)  # listings have whole seconds: the changes below are after the snapshot
    s3.put_object(Bucket=bucket, Key="change.txt", Body=b"after!")  # same size: the etag tells
    s3.put_object(Bucket=bucket, Key="new.txt", Body=b"new")
    s3.delete_object(Bucket=bucket, Key="gone.txt")
    etag = multipart_put(s3, bucket, "big.bin", big)  # the same bytes, a multipart etag: doubt
    assert "-" in etag

    r = p.json("verify", "--against-source")
    job = r["jobs"][0]
    assert r["ok"] and job["fresh"] and job["drifted"] == 0, job
    assert by_kind(job, True) == {"missing": ["new.txt"], "changed": ["change.txt"], "extra": ["gone.txt"]}
    assert job["settled_by_reading"] == 1 and job["bytes_read"] == len(big)  # big.bin read, found unchanged
    assert job["unchanged"] == 2

    # An object the snapshot should hold (older than it) but does not: drift even while fresh.
    write_config(p, exclude=[])
    r = p.json("verify", "--against-source", check=1)
    job = r["jobs"][0]
    assert not r["ok"] and by_kind(job, False) == {"missing": ["later/hidden.txt"]}, job

    # Once more than a schedule interval has passed, the un-captured changes are drift too.
    write_config(p, schedule="1s")
    time.sleep(3.0)
    out = p.cli("verify", "--against-source", "--job", "live", check=1).stdout
    for line in ("drift: missing: later/hidden.txt", "drift: missing: new.txt", "drift: changed: change.txt",
                 "drift: extra: gone.txt"):
        assert line in out, out
    assert "does not hold what the source holds" in out
    job = p.json("verify", "--against-source", check=1)["jobs"][0]
    assert job["drift"] == {"missing": 2, "changed": 1, "extra": 1} and not job["fresh"]

    # A run captures the changes: no drift left.
    p.cli("run")
    assert p.json("verify", "--against-source")["jobs"][0]["drifted"] == 0


def test_against_source_refuses_to_mix_with_deep(tmp_path):
    p = Project(tmp_path, str(tmp_path / "vault"), {}, jobs=[{"name": "j", "source": str(tmp_path)}])
    p.write_config()
    assert "compares with the source only" in p.cli("verify", "--against-source", "--deep", check=None).stderr


def test_schedule_period_of_intervals_and_cron():
    from replicator.schedules import period

    assert period("15m") == 900
    assert period("*/15 * * * *") == 900
    assert period("0 3 * * *") == 86400


def test_a_weekday_schedule_keeps_weekend_changes_in_flight(tmp_path):
    """`0 3 * * 1-5`: the Friday snapshot is fresh until Monday's run has had its time."""
    from datetime import datetime, timezone

    from replicator.schedules import next_run, period

    friday = datetime(2026, 11, 27, 3, 0, 5, tzinfo=timezone.utc)
    assert next_run("0 3 * * 1-5", friday) == datetime(2026, 11, 30, 3, 0, tzinfo=timezone.utc)
    assert period("0 3 * * 1-5", friday) == 86400  # Monday to Tuesday
    assert next_run("6h", friday) == datetime(2026, 11, 27, 9, 0, 5, tzinfo=timezone.utc)


def test_cron_days_of_week_count_from_sunday():
    """Standard cron: 0 and 7 are Sunday, 1 is Monday (APScheduler 3 alone would count from Monday)."""
    from datetime import datetime, timezone

    from replicator.schedules import next_run, validate

    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert next_run("0 3 * * 1-5", saturday).strftime("%a") == "Mon"
    assert next_run("0 3 * * 0", saturday).strftime("%a") == "Sun"
    assert next_run("0 3 * * 7", saturday).strftime("%a") == "Sun"
    assert next_run("0 3 * * 6", datetime(2026, 11, 27, tzinfo=timezone.utc)).strftime("%a") == "Sat"
    assert next_run("0 3 * * sat,sun", saturday).strftime("%a") == "Sun"
    for bad in ("0 3 * * 8", "0 3 * * 5-1", "0 3 * * xyz"):
        try:
            validate(bad)
        except ValueError as e:
            assert "bad cron expression" in str(e)
        else:
            raise AssertionError(bad)
