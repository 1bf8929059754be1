"""Running a stage's work as tasks on a Ray cluster: deterministic tasks, a marker per task, bounded retries.

The work of ``--engine ray`` is a list of :class:`Task` — each a deterministic slice of the input (a run of manifest
rows, a tar, a list of URLs of one host group) whose id is derived from what it holds, never from time or chance.
A task writes its whole output under names made from its id, then returns a small JSON summary, which the worker
writes as the task's **marker** (``<markers>/<id>.json``, one atomic write or one object PUT). So:

* a re-run submits only the tasks without a marker (a killed driver, a lost node, a Ctrl-C: the finished tasks stay
  finished, and their results are read back from the markers);
* a task that raises a transient error (``OSError``, a lost worker) is retried by Ray up to ``retries`` times; one
  that still fails (or raises any other error) fails the run with its error — after every other task has run and
  left its marker, so the next run redoes only the failed ones;
* output never has a random name, so a re-run overwrites what a killed attempt may have half-written.

Ray Core tasks, not Ray Data: each stage already has its own exact output format (dataset folders, reproducible
tars named by id) and a marker protocol; Ray Data's writers name files at random and its retries are per block,
which would undo both. The cluster is ``--ray-address``, else ``RAY_ADDRESS``, else a local one started here.
"""

from __future__ import annotations

import json
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import storage
from .errors import UserError
from .progress import Progress

ENGINES = ("local", "ray")
RETRIES = 3  # further tries of a task after a transient error or a lost worker
TRANSIENT = (OSError, TimeoutError, ConnectionError, MemoryError)


@dataclass(frozen=True)
class Task:
    id: str  # [A-Za-z0-9_-]: names the task's outputs and its marker
    args: tuple | Callable[[], tuple] = ()  # or a function making them when the task is submitted (large ones)

    def arguments(self) -> tuple:
        return self.args() if callable(self.args) else self.args


@dataclass
class Report:
    """What one :func:`run` did: its results by task id, and how many tasks ran, were skipped or retried."""

    results: dict[str, Any] = field(default_factory=dict)
    ran: int = 0
    skipped: int = 0  # finished by an earlier run (marker present)
    fresh: set[str] = field(default_factory=set)  # the ids of the tasks run now

    def to_json(self) -> dict:
        return {"tasks": self.ran + self.skipped, "ran": self.ran, "skipped": self.skipped}


def connect(address: str | None = None, cpus: int | None = None) -> Any:
    """The ``ray`` module, connected: to ``address`` (or ``RAY_ADDRESS``) when given, else to a Ray already started
    in this process, else to a new local one (``cpus`` CPUs, no dashboard)."""
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray; pip install 'gandata[ray]' (or use --engine local)") from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, SystemExit) as e:  # Ray exits (code 15) when the cluster stops answering
        raise UserError(f"cannot reach the Ray cluster at {address} ({e or 'no answer'}); start it with  ray start "
                        "--head  or give --ray-address") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A quick TCP connect to a cluster's address (``host:port`` or ``ray://host:port``; ``auto`` is left to Ray):
    Ray itself waits minutes on an address nobody answers, then exits."""
    if address == "auto" or address.startswith(("local", "anyscale")):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: give HOST:PORT (the head's GCS port, 6379 by default), "
                        "ray://HOST:PORT, or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with  ray start "
                        "--head  on that machine, or give the right --ray-address (or RAY_ADDRESS)") from None


def marker(markers: str, task_id: str) -> str:
    return storage.join(markers, f"{task_id}.json")


def done(markers: str, ids: set[str] | None = None) -> dict[str, Any]:
    """Results of the tasks that finished in earlier runs, by id (a torn or foreign marker counts as not done);
    with ``ids``, only those tasks' markers are read (others sharing the folder can be large)."""
    found = {}
    for name in storage.names(markers):
        if not name.endswith(".json") or (ids is not None and name[:-5] not in ids):
            continue
        try:
            found[name[:-5]] = json.loads(storage.read_bytes(storage.join(markers, name)))
        except (ValueError, OSError):
            continue
    return found


def _execute(fn: Callable[..., Any], task_id: str, args: tuple, markers: str) -> Any:
    """On a worker: the task, then its marker (only after the whole output is written)."""
    result = fn(*args)
    storage.put(marker(markers, task_id), (json.dumps(result, sort_keys=True) + "\n").encode())
    return result


def run(fn: Callable[..., Any], tasks: Sequence[Task], markers: str, *, address: str | None = None,
        workers: int = 0, cpus_per_task: float = 1.0, retries: int = RETRIES, label: str = "tasks",
        progress: bool = False, on_result: Callable[[Task, Any], None] | None = None,
        intact: Callable[[Task], bool] | None = None) -> Report:
    """Run ``fn(*task.arguments())`` for every task without a marker under ``markers``, on Ray; at most ``workers`` at a
    time (0: as many as the cluster's CPUs allow). Returns every task's result, earlier runs' included.
    ``on_result(task, result)`` is called in the driver for every task, finished earlier or now. ``intact(task)``
    says whether a finished task's output is still there: a marker whose output was deleted is dropped and the task
    runs again (else the run would fail on the missing output every time)."""
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids must be unique")
    report = Report()
    finished = done(markers, set(ids))
    if intact is not None:
        for t in tasks:
            if t.id in finished and not intact(t):
                storage.remove(marker(markers, t.id))
                del finished[t.id]
    todo = [t for t in tasks if t.id not in finished]
    report.results = {t.id: finished[t.id] for t in tasks if t.id in finished}
    report.skipped = len(tasks) - len(todo)
    if on_result is not None:
        for t in tasks:
            if t.id in finished:
                on_result(t, finished[t.id])
    if not todo:
        return report
    ray = connect(address, cpus=workers or None)
    remote = ray.remote(_execute).options(num_cpus=cpus_per_task, max_retries=retries,
                                          retry_exceptions=list(TRANSIENT))
    limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1) / cpus_per_task))
    pending: dict[Any, Task] = {}
    queue = deque(todo)
    first_error: BaseException | None = None
    failed = 0
    with Progress(label, len(todo), enabled=progress) as prog:
        while queue or pending:
            while queue and len(pending) < limit:
                t = queue.popleft()
                pending[remote.remote(fn, t.id, t.arguments(), markers)] = t
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                t = pending.pop(ref)
                try:
                    report.results[t.id] = ray.get(ref)
                    report.ran += 1
                    report.fresh.add(t.id)
                    if on_result is not None:
                        on_result(t, report.results[t.id])
                except Exception as e:  # the task's own error, after its retries: the other tasks go on
                    cause = getattr(e, "cause", None) or e
                    first_error = first_error or cause
                    failed += 1
                prog.advance(1)
    if first_error is not None:
        if isinstance(first_error, UserError):
            raise first_error
        raise UserError(f"{failed} of {len(todo)} {label} tasks failed (the first: {type(first_error).__name__}: "
                        f"{first_error}; transient errors were retried {retries} times); the {report.ran} that "
                        "finished are kept: run the same command again to redo only the failed ones") from first_error
    return report
