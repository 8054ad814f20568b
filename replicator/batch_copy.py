"""A batch of objects copied into the vault by another process: a Dask worker (dask_engine.py)
or a local copy process (process_engine.py).

The worker opens the job's vault and source itself, from the config file (secrets never travel,
only object fields and chunk refs do), streams each object into blobs (small chunks shared in
packs), and returns the refs once every blob is written (create-only, size checked): the
coordinator, the catalogue's only writer, records an object only after that.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path

from replicator.errors import SourceChanged, SourceError
from replicator.sources.base import Source, SourceItem
from replicator.vault.format import CHUNK_SIZE, ChunkRef
from replicator.vault.packs import PACK_THRESHOLD, PackWriter
from replicator.vault.vault import Vault

_CONTEXTS: dict[tuple, tuple[Vault, Source]] = {}
_CONTEXTS_LOCK = threading.Lock()
_CATALOGUES: dict[str, sqlite3.Connection] = {}
TASKS_DONE = 0  # batches finished in this worker process (tests read it with Dask's client.run)


def copy_batch(config_path: str, job: str, items: list[tuple], catalogue: str | None = None) -> tuple[list, list]:
    """Copy `items` (SourceItem fields) of `job` into the vault. Returns ([(item fields, refs as
    JSON, problem)], provider checksums of the blobs written); raises only what should fail the
    run. With `catalogue` (a path on this host), chunks it already records are not stored again."""
    vault, source = _context(config_path, job)
    known = _stored_chunks(catalogue) if catalogue else None
    packer = PackWriter(vault)  # the batch's small chunks share packs; written before the batch returns
    copied = []
    for fields in items:
        item = SourceItem(*fields)
        try:
            refs = []
            for data in source.read(item, CHUNK_SIZE):
                cid = vault.chunk_id(data)
                ref = known(cid) if known else None
                if ref is None:
                    ref = packer.add(data, cid)[0] if len(data) < PACK_THRESHOLD else vault.write_chunk(data, cid=cid)
                refs.append(ref)
            copied.append((fields, refs, None))
        except SourceChanged as e:
            copied.append((fields, None, ("changed", str(e))))
        except SourceError as e:
            copied.append((fields, None, ("error", str(e))))
    packer.flush()
    out = [(fields, refs if refs is None else [_resolved(r).to_json() for r in refs], problem)
           for fields, refs, problem in copied]
    global TASKS_DONE
    TASKS_DONE += 1
    return out, vault.take_checksums()


def outcomes(done: list, stats, checked: bool = True) -> list[tuple[SourceItem, list[ChunkRef]]]:
    """What copy_batch returned, on the coordinator: the copied items with their refs (checked as
    refs from elsewhere are, unless they come from our own processes); an item that changed while
    it was read is a warning of `stats` (a RunStats), one that failed an error."""
    copied = []
    for fields, refs, problem in done:
        if problem is not None:
            (stats.warnings if problem[0] == "changed" else stats.errors).append(problem[1])
        else:
            copied.append((SourceItem(*fields), [ChunkRef.from_json(r) if checked else ChunkRef(*r) for r in refs]))
    return copied


def _resolved(ref) -> ChunkRef:
    """A ChunkRef, or the future of a packed chunk's (its pack was flushed: resolved or failed)."""
    return ref.result() if isinstance(ref, Future) else ref


def _context(config_path: str, job_name: str) -> tuple[Vault, Source]:
    """The vault and source of a job in this process, opened once per config version."""
    key = (config_path, job_name, os.stat(config_path).st_mtime_ns)
    with _CONTEXTS_LOCK:
        if key not in _CONTEXTS:
            from replicator import config as configmod
            from replicator.sources import open_source

            cfg = configmod.load(configmod.config_path(config_path))
            job = cfg.job(job_name)
            opts = configmod.resolve_secrets(job.source_options, f"jobs[{cfg.jobs.index(job)}].source_options")
            _CONTEXTS[key] = (open_vault(cfg), open_source(job, opts))
        return _CONTEXTS[key]


def open_vault(cfg, key_path: str | None = None) -> Vault:
    """The vault of a loaded config, as a command opens it: the config's key file, or `key_path`."""
    from replicator import config as configmod
    from replicator.stores import open_store
    from replicator.vault.keys import load_key_file

    v = cfg.vault
    store = open_store(v.url, configmod.resolve_secrets(v.options, "vault.options"), v.bandwidth, v.immutability)
    return Vault.open(store, load_key_file(Path(key_path) if key_path else v.key_file))


def _stored_chunks(path: str):
    """chunk id -> its ChunkRef where the catalogue (opened read-only, once) records it, else None."""
    with _CONTEXTS_LOCK:
        db = _CATALOGUES.get(path)
        if db is None:
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            db = _CATALOGUES[path] = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=60)

    def known(cid: str) -> ChunkRef | None:
        row = db.execute("SELECT ref FROM chunks WHERE id=?", (cid,)).fetchone()
        return ChunkRef.from_json(json.loads(row[0])) if row else None

    return known
