"""The floors the tools are compared with, each run as its own process (bench/measure.py wraps it).

    floor.py get  --endpoint URL --bucket B --workers N [--part-size BYTES,...] [--limit N]
        every object of the bucket fetched by a thread pool of boto3 GETs, nothing else done with
        the bytes (objects larger than a part size are fetched as ranged GETs of that size; with
        several part sizes each is tried in turn and the fastest is reported)
    floor.py read --dir D --workers N          every file under D read by a thread pool
    floor.py list --endpoint URL --bucket B    one paginated ListObjectsV2 walk of the bucket
    floor.py list --dir D                      one os.scandir walk with a stat per file
    floor.py cpu  --dir D [--chunk BYTES]      SHA-256 + AES-256-GCM + zstd (level 3) of every
        file's bytes in chunks, on one thread: the CPU cost of the work replicator must do

Prints one JSON line: {"seconds": time of the work itself (the listing of `get`/`read` is
timed apart as "list_seconds"), "objects", "bytes", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def s3_client(endpoint: str, workers: int):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(max_pool_connections=max(10, workers * 2), retries={"max_attempts": 3}))


def s3_list(client, bucket: str) -> list[tuple[str, int]]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
    return out


def local_list(top: str) -> list[tuple[str, int]]:
    out, stack = [], [top]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    out.append((e.path, e.stat(follow_symlinks=False).st_size))
    return out


def pieces(objs: list[tuple[str, int]], part: int) -> list[tuple[str, int, int]]:
    """(key, start, end-exclusive); end 0 = the whole object in one GET."""
    out = []
    for key, size in objs:
        if part and size > part:
            out += [(key, s, min(s + part, size)) for s in range(0, size, part)]
        else:
            out.append((key, 0, 0))
    return out


def cmd_get(a) -> dict:
    client = s3_client(a.endpoint, a.workers)
    client.head_bucket(Bucket=a.bucket)  # warm up: credentials, endpoint, first connection
    t0 = time.monotonic()
    objs = s3_list(client, a.bucket)
    list_s = time.monotonic() - t0
    if a.limit:
        objs = objs[:a.limit]
    got = [0]
    lock = threading.Lock()

    deadline = [float("inf")]

    def one(w):
        if time.monotonic() > deadline[0]:
            return  # this variant is already slower than the best one: it cannot be the floor
        key, start, end = w
        kw = {"Range": f"bytes={start}-{end - 1}"} if end else {}
        body = client.get_object(Bucket=a.bucket, Key=key, **kw)["Body"]
        n = 0
        while True:
            b = body.read(1 << 20)
            if not b:
                break
            n += len(b)
        with lock:
            got[0] += n

    want = sum(s for _, s in objs)
    variants = {}
    for part in a.part_size:  # each way of fetching everything; the fastest is the floor
        got[0] = 0
        work = pieces(objs, part)
        t0 = time.monotonic()
        if variants:
            deadline[0] = t0 + min(v["seconds"] for v in variants.values())
        with ThreadPoolExecutor(a.workers) as pool:
            list(pool.map(one, work))
        if got[0] != want:
            if variants and time.monotonic() > deadline[0]:
                variants[part] = {"seconds": None, "requests": len(work), "abandoned": "slower than the best"}
                continue
            raise SystemExit(f"read {got[0]} bytes, listed {want}")
        variants[part] = {"seconds": time.monotonic() - t0, "requests": len(work)}
    part = min((p for p in variants if variants[p]["seconds"] is not None), key=lambda p: variants[p]["seconds"])
    return {"seconds": variants[part]["seconds"], "list_seconds": list_s, "objects": len(objs),
            "requests": variants[part]["requests"], "bytes": want, "workers": a.workers, "part_size": part,
            "variants": {str(p): v for p, v in variants.items()}}


def cmd_read(a) -> dict:
    t0 = time.monotonic()
    objs = local_list(a.dir)
    list_s = time.monotonic() - t0
    got = [0]
    lock = threading.Lock()

    def one(o):
        n = 0
        with open(o[0], "rb", buffering=0) as f:
            while True:
                b = f.read(4 << 20)
                if not b:
                    break
                n += len(b)
        with lock:
            got[0] += n

    t0 = time.monotonic()
    with ThreadPoolExecutor(a.workers) as pool:
        list(pool.map(one, objs))
    return {"seconds": time.monotonic() - t0, "list_seconds": list_s, "objects": len(objs), "bytes": got[0],
            "workers": a.workers}


def cmd_list(a) -> dict:
    client = s3_client(a.endpoint, 1) if a.endpoint else None
    if client:
        client.head_bucket(Bucket=a.bucket)
    t0 = time.monotonic()
    objs = s3_list(client, a.bucket) if client else local_list(a.dir)
    return {"seconds": time.monotonic() - t0, "objects": len(objs), "bytes": sum(s for _, s in objs)}


def cmd_cpu(a) -> dict:
    import hashlib

    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aes = AESGCM(os.urandom(32))
    zc = zstandard.ZstdCompressor(level=3)
    warm = os.urandom(a.chunk)  # first calls pay for allocation and setup; not what is measured
    hashlib.sha256(warm).digest(), zc.compress(warm), aes.encrypt(os.urandom(12), warm, None)
    total = {"sha256": 0.0, "zstd": 0.0, "aes_gcm": 0.0}
    n = objects = 0
    for path, _ in sorted(local_list(a.dir)):
        objects += 1
        with open(path, "rb") as f:
            while True:
                chunk = f.read(a.chunk)
                if not chunk:
                    break
                n += len(chunk)
                t = time.process_time()
                hashlib.sha256(chunk).digest()
                t2 = time.process_time()
                z = zc.compress(chunk)
                t3 = time.process_time()
                aes.encrypt(os.urandom(12), z if len(z) < len(chunk) else chunk, None)
                t4 = time.process_time()
                total["sha256"] += t2 - t
                total["zstd"] += t3 - t2
                total["aes_gcm"] += t4 - t3
    cpu = sum(total.values())
    return {"seconds": cpu, "cpu_seconds": cpu, "parts": total, "objects": objects, "bytes": n,
            "cpu_s_per_gib": cpu / (n / 2**30) if n else None, "chunk": a.chunk}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["get", "read", "list", "cpu"])
    p.add_argument("--endpoint")
    p.add_argument("--bucket")
    p.add_argument("--dir")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--part-size", type=lambda v: [int(x) for x in v.split(",")], default=[0],
                   help="comma-separated; 0 = whole-object GETs; every one is tried, the fastest reported")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--chunk", type=int, default=4 << 20)
    a = p.parse_args()
    out = {"get": cmd_get, "read": cmd_read, "list": cmd_list, "cpu": cmd_cpu}[a.mode](a)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
