"""A future settled at once: work done in the calling thread where a thread hop would cost more
than the work (small objects between local disks, issue 7), settled like a pool's futures."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Callable, TypeVar

T = TypeVar("T")

INLINE_BELOW = 256 * 2**10  # between local disks, objects smaller than this skip the thread pools


def run_here(fn: Callable[..., T], *args) -> "Future[T]":
    """fn(*args), run now; its result or exception in a completed future."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as e:
        fut.set_exception(e)
    return fut
