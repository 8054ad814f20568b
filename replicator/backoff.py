"""Retry with exponential backoff and full jitter, bounded in attempts and in total time.

Shared by the retrying store wrapper (vault writes and reads) and the object source (resumed
reads). Sleep, clock and randomness are injectable, so tests run instantly and reproducibly.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from replicator.redact import redact

log = logging.getLogger("replicator.retry")
T = TypeVar("T")


@dataclass
class Backoff:
    """The defaults ride through a few seconds of trouble, on top of the provider libraries' own
    retries (botocore, gcsfs and the Azure SDK retry each request several times). A longer outage
    fails the run cleanly, and the next run resumes where this one stopped: cheaper than waiting."""

    attempts: int = 4  # tries in all, the first included
    base: float = 0.25  # seconds; the cap of the n-th wait is base * 2**n ...
    cap: float = 2.0  # ... but never more than this
    deadline: float = 30.0  # no new attempt starts if it would begin later than this after the first
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int) -> float:
        """Full jitter (uniform in 0..cap): concurrent clients that failed together spread out."""
        return self.rng.uniform(0, min(self.cap, self.base * 2**retry))

    def call(self, fn: Callable[[], T], retryable: Callable[[BaseException], bool], what: str = "") -> T:
        """fn() until it succeeds, raises something not retryable, or the attempts or time run out
        (then the last error is raised, as it was)."""
        start = self.clock()
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except Exception as e:
                if attempt == self.attempts or not retryable(e):
                    raise
                wait = self.delay(attempt - 1)
                if self.clock() - start + wait > self.deadline:
                    raise
                log.info("retrying %s in %.2fs (attempt %d of %d failed: %s)", what or "a request", wait, attempt,
                         self.attempts, redact(str(e))[:200])
                self.sleep(wait)
        raise AssertionError("unreachable")
