"""Bounded worker pools — the one way a stage runs per-sample work on several cores.

:func:`ordered` takes ``(tag, job)`` pairs lazily from a generator, runs the jobs in a thread pool (Pillow, OpenCV,
hashlib and zlib release the GIL for their heavy parts, so threads scale with cores without pickling), keeps at
most ``window`` in flight (memory stays flat however large the input), and gives the results back in input order,
so what a stage writes does not depend on thread timing. A job already answered (a cache hit, a refusal) is passed
as :class:`Done` and keeps its place in the order.

:class:`MemoryBudget` bounds what the jobs' decoded pixels hold at once: a job takes room for its image before it
decodes it and waits while there is none, so a folder of 8000² images runs as many at a time as fit, not one per
worker.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Done(Generic[R]):
    """A result known without running a job."""

    __slots__ = ("value",)

    def __init__(self, value: R):
        self.value = value


class MemoryBudget:
    """Bytes that worker threads may hold at once (``--memory``). :meth:`hold` waits until the room is free; a job
    needing more than the whole budget runs once nothing else holds any, so peaks stay within the budget plus one
    image, and nothing waits forever."""

    def __init__(self, limit: int):
        self.limit, self.used, self.peak = limit, 0, 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


def cores() -> int:
    return os.cpu_count() or 1


def ordered(jobs: Iterable[tuple[T, Callable[[], R] | Done[R]]], workers: int, window: int | None = None,
            name: str = "worker") -> Iterator[tuple[T, R]]:
    """``(tag, result)`` for every ``(tag, job)`` of ``jobs``, in their order. ``workers`` ≤ 1 runs the jobs in this
    thread; ``window`` (default 8 per worker) bounds the jobs submitted and not yet given back. A job's exception
    is raised here, at its turn; the jobs not started yet are cancelled."""
    window = max(window or 8 * workers, 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) if workers > 1 else None
    pending: deque[tuple[T, Future | Done]] = deque()

    def settle() -> tuple[T, Any]:
        tag, job = pending.popleft()
        return tag, job.value if isinstance(job, Done) else job.result()

    try:
        for tag, job in jobs:
            if isinstance(job, Done):
                pending.append((tag, job))
            elif pool is not None:
                # in the caller's context: a message made in a worker names options as the caller's front end does
                pending.append((tag, pool.submit(contextvars.copy_context().run, job)))
            else:
                pending.append((tag, Done(job())))
            while len(pending) > window:
                yield settle()
        while pending:
            yield settle()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


MMAP_THRESHOLD = 256 << 10  # bytes: blocks this large or larger are mapped, and given back whole when freed


def steady_heap() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`. Left alone, glibc raises it to the largest block freed
    (up to 32 MiB), after which the per-sample columns of a long run grow inside the heap, interleaved with decoded
    images, and leave holes behind: shard kept about 120 bytes a sample that way (docs/memory.md). The price: a
    decoded image of 256 KiB or more is mapped and faulted in afresh each time (about 3 % more CPU time on 512²
    images, none measurable on 128² ones: ``benchmarks/heap.py``, docs/performance.md). Returns whether it applied
    (glibc on Linux; elsewhere nothing is changed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD) == 1  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # musl, or no mallopt
        return False
