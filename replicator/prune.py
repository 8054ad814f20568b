"""Retention: forget old snapshots by policy, then delete the blobs no kept snapshot needs.

Safety rules, each one a guard against abuse by whoever holds the daemon's host:
- Times come from the vault provider (the write time it reports for each snapshot root),
  made monotonic in sequence order; the `started` time inside a root is client-controlled
  and is not used, so forged "new" snapshots cannot push real ones out of the policy.
- Nothing younger than `min_age` (by the provider's clock) is forgotten or deleted, which
  also protects the blobs of a run in progress.
- The latest snapshot is always kept, and so is imported history (its times are claimed, not observed). Snapshot roots and manifest pages are never deleted
  (later deltas are built on them); a forgotten snapshot is hidden by an authenticated
  `forgotten/<job id>/<seq>` record and its data blobs become deletable.
- Deleting needs credentials the daemon does not hold (`prune --credentials FILE`); a blob
  the provider refuses to delete (immutability) is kept and counted, not an error.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from replicator.errors import NotFound, ReplicatorError, StoreError
from replicator.history import History, forgotten_name, forgotten_seqs
from replicator.policy import Policy, monotonic, select_kept
from replicator.references import VersionTable
from replicator.vault.format import data_name
from replicator.vault.vault import Vault


@dataclass
class PrunePlan:
    job: str
    kept: list[int] = field(default_factory=list)
    forget: list[int] = field(default_factory=list)


@dataclass
class PruneResult:
    plans: list[PrunePlan] = field(default_factory=list)
    blobs_deleted: int = 0
    bytes_deleted: int = 0
    blobs_too_young: int = 0
    blobs_protected: int = 0  # the provider refused: immutability
    dry_run: bool = False


def prune(vault: Vault, jobs: dict[str, Policy], dry_run: bool) -> PruneResult:
    """Apply each job's policy; then delete unreferenced data blobs older than every job's min_age."""
    result = PruneResult(dry_run=dry_run)
    times = _times(vault, "snapshots/")
    now = _provider_now(vault, dry_run)
    min_age = min((p.min_age for p in jobs.values()), default=timedelta(days=30))
    with tempfile.TemporaryDirectory(prefix="replicator-prune-") as tmp:
        table = VersionTable(Path(tmp) / "versions.db")
        for jid, seqs in sorted(vault.snapshot_seqs().items()):
            history = History(vault, jid, seqs)
            name = history.root(seqs[-1])[0].job
            forgotten = forgotten_seqs(vault, jid, history)
            policy = jobs.get(name, Policy())
            live = [(s, times[f"snapshots/{jid}/{s:010d}"]) for s in seqs if s not in forgotten]
            # Imported history (history = "all") carries times the client wrote, which the policy must
            # not trust (a forged "old" snapshot could take a real one's place): it is kept as a whole.
            imported = {s for s, _ in live if history.root(s)[0].stats.get("imported")}
            kept = select_kept(monotonic([x for x in live if x[0] not in imported]), policy, now) | imported
            plan = PrunePlan(name, sorted(kept), sorted(s for s, _ in live if s not in kept))
            result.plans.append(plan)
            if not dry_run:
                for seq in plan.forget:  # hide first; only then can its blobs go
                    record = {"job_id": jid, "seq": seq, "root_sha256": history.root(seq)[1],
                              "time": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
                    vault.store.put(forgotten_name(jid, seq), vault.seal(bytes([0]) + json.dumps(record).encode()))
            table.add_job(history, forgotten | set(plan.forget))
        needed = {ref.blob for ref in table.referenced()}
        table.close()
    blob_times = _times(vault, "data/")
    for name, size in vault.store.list("data/"):
        blob = name.rsplit("/", 1)[-1]
        if blob in needed or name != data_name(blob):
            continue
        if now - blob_times.get(name, now) < min_age:
            result.blobs_too_young += 1
            continue
        if dry_run:
            result.blobs_deleted += 1
            result.bytes_deleted += size
            continue
        try:
            vault.store.delete(name)
            result.blobs_deleted += 1
            result.bytes_deleted += size
        except NotFound:
            pass
        except StoreError:
            result.blobs_protected += 1
    return result


def _times(vault: Vault, prefix: str) -> dict[str, datetime]:
    list_times = getattr(vault.store, "list_times", None)
    if list_times is None:
        raise ReplicatorError(f"{vault.store.url}: this store does not report write times, which prune needs")
    return {name: t for name, _, t in list_times(prefix)}


def _provider_now(vault: Vault, dry_run: bool) -> datetime:
    """The provider's clock: the write time it gives a fresh object (or the newest object for a dry run)."""
    if dry_run:
        newest = max(_times(vault, "snapshots/").values(), default=None)
        return max(newest, datetime.now(timezone.utc)) if newest else datetime.now(timezone.utc)
    name = f"prune/{vault.chunk_id(datetime.now(timezone.utc).isoformat().encode())[:32]}"
    vault.store.put(name, b"")
    now = _times(vault, "prune/")[name]
    vault.store.delete(name)
    return now
