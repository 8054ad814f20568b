"""A store wrapper that injects faults, for tests: a script per method, or a seeded rate.

    FaultyStore(inner, {"put": [None, StoreError("503 SlowDown"), None],
                        "put snapshots/": [After(StoreError("connection reset"))],
                        "get": [StoreError("timeout")]})

Each call of a method takes the next entry of the most specific matching script ("METHOD" or
"METHOD PREFIX": the name must start with PREFIX): None passes the call through; an exception
is raised instead of the call (the request never reached the store); After(exception) makes
the call and then raises (the store did it, but the caller cannot know: a reset after the
request was processed). When no script entry is left, `rate` injects faults at random from
a seeded RNG. `assert_all_hit()` fails unless every scripted fault was played.
"""

from __future__ import annotations

import copy
import random
import threading
from collections import Counter
from typing import Callable, Iterator

from replicator.errors import StoreError

METHODS = ("put", "get", "stat", "list", "delete", "exists", "create")


class After:
    """A fault that strikes after the inner call took effect."""

    def __init__(self, error: BaseException):
        self.error = error

    def __repr__(self) -> str:
        return f"After({self.error!r})"


def random_fault(rng: random.Random) -> BaseException | After:
    """What `rate` injects: a throttling answer, a timeout, or a reset after the store acted."""
    kind = rng.choice(("slowdown", "timeout", "reset-after"))
    if kind == "slowdown":
        return StoreError("injected: 503 SlowDown")
    if kind == "timeout":
        return StoreError("injected: read timeout")
    return After(StoreError("injected: connection reset after the request was processed"))


class FaultyStore:
    def __init__(self, inner, script: dict[str, list] | None = None, *, rate: float = 0.0, seed: int = 0,
                 methods: tuple[str, ...] = METHODS,
                 make_fault: Callable[[random.Random], BaseException | After] = random_fault):
        for key in script or {}:
            if key.split(" ", 1)[0] not in METHODS:
                raise ValueError(f"no store method {key!r}")
        self.inner, self.url = inner, inner.url
        self._script = {k: list(v) for k, v in (script or {}).items()}
        self.rate, self.methods, self.make_fault = rate, methods, make_fault
        self.rng = random.Random(seed)
        if callable(getattr(inner, "list_times", None)):  # optional capability, faulted as "list"
            self.list_times = lambda prefix="": iter(self._do("list", prefix, lambda: list(inner.list_times(prefix))))
        self.calls: Counter = Counter()  # method -> calls
        self.injected: Counter = Counter()  # method -> faults played
        self._lock = threading.Lock()

    def _fault(self, method: str, name: str):
        with self._lock:
            self.calls[method] += 1
            keys = [k for k, v in self._script.items() if v and _matches(k, method, name)]
            if keys:
                fault = self._script[max(keys, key=len)].pop(0)
            elif self.rate and method in self.methods and self.rng.random() < self.rate:
                fault = self.make_fault(self.rng)
            else:
                fault = None
            if fault is not None:
                self.injected[method] += 1
            return fault

    def _do(self, method: str, name: str, fn):
        fault = self._fault(method, name)
        if fault is None:
            return fn()
        if isinstance(fault, After):
            fn()
            raise _fresh(fault.error)
        raise _fresh(fault)

    def assert_all_hit(self) -> None:
        left = {k: v for k, v in self._script.items() if v}
        assert not left, f"scripted faults never hit: {left}"

    def put(self, name: str, data: bytes) -> None:
        self._do("put", name, lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._do("get", name, lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> int:
        return self._do("stat", name, lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return iter(self._do("list", prefix, lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._do("delete", name, lambda: self.inner.delete(name))

    def exists(self) -> bool:
        return self._do("exists", "", self.inner.exists)

    def create(self) -> None:
        self._do("create", "", self.inner.create)


def _matches(key: str, method: str, name: str) -> bool:
    m, _, prefix = key.partition(" ")
    return m == method and name.startswith(prefix)


def _fresh(e: BaseException) -> BaseException:
    """A copy, so that one scripted exception can be raised many times with clean tracebacks."""
    try:
        c = copy.copy(e)
    except Exception:
        return e
    c.__dict__.update(e.__dict__)  # per-instance flags such as retryable=False survive
    return c
