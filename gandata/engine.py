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

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import braceexpand

from . import storage
from .errors import UserError, hint, named
from .progress import Progress

ENGINES = ("local", "ray")
RETRIES = 3  # further tries of a task after a transient error or a lost worker
PREFLIGHT_SECONDS = 60.0  # the check every node answers before the work starts
PROBE_SECONDS = 20.0  # how long a --ray-address may take to answer as Ray
WAIT_SECONDS = 0.5  # the driver's longest wait for a task before it looks at signals again
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
    in this process, else to a new local one (``cpus`` CPUs, no dashboard). SIGTERM or Ctrl-C while Ray starts is
    ``KeyboardInterrupt``, whatever Ray's own handlers made of it; after, both go to :func:`_on_signal`."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    kwargs = {"address": address} if address else {"num_cpus": cpus, "include_dashboard": False}
    with _signals_seen() as seen:
        try:
            ray.init(**kwargs, log_to_driver=False)
        except BaseException as e:
            if seen():  # Ray's SIGTERM handler exits (code 15), its node's too (code 1): an interruption
                raise KeyboardInterrupt from None
            if not isinstance(e, (ConnectionError, SystemExit)):  # Ray exits when the cluster stops answering
                raise
            where = f"reach the Ray cluster at {address}" if address else "start a local Ray"
            raise UserError(f"cannot {where} ({e or 'no answer'}); start it with  ray start --head  or give "
                            f"{hint('ray_address', 'HOST:PORT')}") from None
        if seen():
            raise KeyboardInterrupt
    _handle_signals()
    return ray


# Ray's settings for a batch driver: read once, when Ray is imported, and this process's only (the processes a local
# Ray starts later do not inherit them). No wait for the node to drain on SIGTERM (up to 30 s, for Ray Serve's
# proxies: a driver has nothing to drain). No failure signal handler in the driver: a SIGTERM while ray.init ran
# printed a C++ stack, and the handler's removal in Ray's shutdown handed SIGTERM back to the system, so a signal
# there ended the process without its line.
_DRIVER_SETTINGS = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}


def _import_ray() -> Any:
    """The ``ray`` module, imported with :data:`_DRIVER_SETTINGS` (a user's own value of one wins)."""
    added = [k for k in _DRIVER_SETTINGS if k not in os.environ]
    os.environ.update({k: _DRIVER_SETTINGS[k] for k in added})
    try:
        import ray
    except ImportError:
        raise UserError(f"{named('engine', 'ray')} needs Ray; pip install 'gandata[ray]' (or use "
                        f"{hint('engine', 'local')})") from None
    finally:
        for k in added:
            del os.environ[k]
    return ray


# ------------------------------------------------------------------------------------------------ signals

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_OWNER = 0  # the process that handles the signals as below (a process forked from it does not)
_ENDING = False  # the command's stages have ended (see command): a signal now ends the process at once
_INTERRUPTED = "interrupted"  # the line an interrupted command prints (the command line gives its own)


def _handle_signals() -> None:
    """SIGTERM and SIGINT go to :func:`_on_signal` (in the main thread; elsewhere Python allows no handler)."""
    global _OWNER
    if threading.current_thread() is threading.main_thread():
        _OWNER = os.getpid()
        for s in _SIGNALS:
            signal.signal(s, _on_signal)


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: ``KeyboardInterrupt`` where the driver is, which stops the stage with every marker kept.
    Once the command's stages have ended (its summary or error being printed, then Python's and Ray's shutdown) the
    process ends at once instead (:func:`_leave`): an exception there is "ignored in atexit callback", and Ray's
    teardown cut short by one can crash (exit 139)."""
    if os.getpid() != _OWNER:  # a process forked from the driver (a trainer's loader worker): as if untouched
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        os.kill(os.getpid(), signum)
        return
    if _ENDING:
        _leave()
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_seen():
    """Whether SIGTERM or SIGINT came while the block ran, whoever handled it: ``ray.init`` sets Ray's own SIGTERM
    handlers for the time it starts (``sys.exit(15)``; a local node's: stop its processes, ``sys.exit(1)``), and
    that exit must read as an interruption, not as a cluster that cannot be reached. Every signal a Python handler
    catches writes its number to the wakeup descriptor, so the block's signals are read from there."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    os.set_blocking(r, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: no signal arrives here
        previous = None
    came = bytearray()

    def seen() -> bool:
        try:
            came.extend(os.read(r, 1024))
        except BlockingIOError:
            pass
        return any(s in came for s in _SIGNALS)

    try:
        yield seen
    finally:
        if previous is not None:
            current = signal.set_wakeup_fd(previous)
            if current not in (w, -1):  # Ray set one of its own meanwhile: it stays
                signal.set_wakeup_fd(current)
        os.close(w)
        os.close(r)


@contextlib.contextmanager
def command(interrupted: str):
    """A command line's run of stages on Ray, from before its first stage to the end of the process: standard
    output kept clean (:func:`keep_stdout_clean`), and SIGTERM and SIGINT end it promptly at any point with the one
    line ``interrupted`` and exit status 130 — during a stage (the markers kept), during ``ray.init``, and after
    the last stage (while its summary is printed and Python and Ray shut down). An interrupted command leaves at
    once (:func:`_leave`): Ray's orderly shutdown takes seconds on a loaded machine."""
    global _INTERRUPTED, _ENDING
    keep_stdout_clean()
    _INTERRUPTED = interrupted
    _handle_signals()
    try:
        yield
    except KeyboardInterrupt:
        _leave()
    finally:
        _ENDING = True


def _leave() -> None:
    """End the process now: what was printed is flushed, then the interrupted line, exit 130. Python's and Ray's
    teardown are skipped — a local Ray's processes end with this one (Ray ties them to the driver), a cluster ends
    this driver's job as it does when a driver is killed."""
    for f in (sys.stdout, _STDOUT, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:  # noqa: BLE001 (a write the signal interrupted: what was printed stays)
            pass
    os.write(2, f"{_INTERRUPTED}\n".encode())
    os._exit(130)


_STDOUT: Any = None  # this process's real standard output, once Ray may write to file descriptor 1


def keep_stdout_clean() -> None:
    """From here on, file descriptor 1 is standard error: Ray's own processes and its C++ core log lines there
    (a lost node, a worker's death), and a command's stdout must hold only its summary (``--json``: one object).
    The summary goes to :func:`stdout`, the real one. The command line calls it before a stage runs on Ray (a
    library caller keeps its own descriptors)."""
    global _STDOUT
    if _STDOUT is None:
        sys.stdout.flush()
        _STDOUT = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)


def stdout():
    """Where a command's summary goes: the real standard output (see :func:`keep_stdout_clean`)."""
    return _STDOUT if _STDOUT is not None else sys.stdout


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A quick TCP connect to a cluster's address (``host:port`` or ``ray://host:port``; ``auto`` is left to Ray):
    Ray itself waits minutes on an address nobody answers, then exits."""
    if address == "auto" or address.startswith(("local", "anyscale")):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{named('ray_address', address)}: give HOST:PORT (the head's GCS port, 6379 by default), "
                        "ray://HOST:PORT, or auto")
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start it with  ray start "
                        f"--head  on that machine, or give the right {named('ray_address')} (or RAY_ADDRESS)") from None
    # Ray's GCS (and its client server) speak gRPC: HTTP/2 answers the connection preface with a SETTINGS frame.
    # Anything else — a web server, a dashboard port, a port that accepts and says nothing — is one line in a bounded
    # time, where Ray itself retries for minutes.
    answer = b""
    try:
        conn.settimeout(PROBE_SECONDS)
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        while len(answer) < 9:
            more = conn.recv(9 - len(answer))
            if not more:
                break
            answer += more
    except OSError:
        pass
    finally:
        conn.close()
    if len(answer) < 9 or answer[3] != 0x04:
        what = f"it answered {answer[:40]!r}" if answer else f"nothing came back in {PROBE_SECONDS:g} s"
        raise UserError(f"{address} is not a Ray cluster ({what}); give the head's GCS address (HOST:6379 by "
                        "default, not the dashboard's port), or ray://HOST:10001 for Ray Client")


_CHECKED: set = set()  # (cluster, reads, writes) already checked by this process


def _look(path: str) -> list:
    """What a machine sees at a local path: its kind, its size for a file, the first names of a folder."""
    try:
        st = os.stat(path)
    except OSError as e:
        return ["missing", e.strerror or str(e)]
    if os.path.isdir(path):
        try:
            return ["folder", sorted(os.listdir(path))[:20]]
        except OSError as e:
            return ["unreadable", e.strerror or str(e)]
    return ["file", st.st_size]


def _preflight_task(reads: list[tuple[str, list]], writes: list[tuple[str, str]], token: str,
                    host: str) -> list[str]:
    """On the node ``host``: the problems it has with the driver's paths (none: it sees and may write what the
    driver does)."""
    problems = []
    for path, seen in reads:
        try:
            here = _look(path) if not storage.is_url(path) else (["object"] if storage.exists(path) else
                                                                 ["missing", "no such object"])
        except (OSError, UserError) as e:
            here = ["unreadable", str(e)]
        if here != seen:
            why = here[1] if here[0] in ("missing", "unreadable") else "it holds other files there"
            problems.append(f"node {host} cannot see {path} as this machine does ({why})")
    for folder, probe in writes:
        try:
            if storage.read_bytes(probe) != token.encode():
                raise OSError("another file under the same name")
            mine = storage.join(folder, f".gandata-preflight-{token}-{uuid.uuid4().hex[:8]}")
            storage.put(mine, token.encode())
            storage.remove(mine)
        except (OSError, UserError) as e:
            what = "is not shared with this machine" if isinstance(e, FileNotFoundError) else f"({e})"
            problems.append(f"node {host} cannot write {folder}: it {what}")
    return problems


def preflight(ray: Any, reads: Sequence[str], writes: Sequence[str]) -> None:
    """One small task on every live node of the cluster: it must see each path in ``reads`` as this process does
    (local paths: the same kind, size or first names) and read a token this process wrote under each folder in
    ``writes`` (the same shared folder, not a same-named one of its own), then write there itself. A node that
    cannot is one line naming the node and the path, before any work starts."""
    for p in (*reads, *writes):
        if not storage.is_url(p) and not os.path.isabs(p):
            raise ValueError(f"a task's path must be absolute, resolved here: {p}")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    key = (tuple(sorted(n["NodeID"] for n in nodes)), tuple(reads), tuple(writes))
    if key in _CHECKED or not nodes:
        return
    token = uuid.uuid4().hex
    probes = []
    for folder in dict.fromkeys(writes):
        if not storage.is_url(folder):
            os.makedirs(folder, exist_ok=True)
        probe = storage.join(folder, f".gandata-preflight-{token}")
        storage.put(probe, token.encode())
        probes.append((folder, probe))
    firsts = [next(iter(braceexpand.braceexpand(p))) for p in dict.fromkeys(reads)]  # a pattern: its first name
    seen = [(p, _look(p) if not storage.is_url(p) else ["object"]) for p in dict.fromkeys(firsts)]
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(_preflight_task)
    try:
        refs = [check.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(seen, probes, token, f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})")
            for n in nodes]
        ready, late = ray.wait(refs, num_returns=len(refs), timeout=PREFLIGHT_SECONDS)
        problems = []
        for ref in ready:
            try:
                problems += ray.get(ref)
            except ray.exceptions.RayError:  # the node left the cluster meanwhile: no task will run there
                continue
    finally:
        for _, probe in probes:
            storage.remove(probe)
    if late:
        problems.append(f"{len(late)} node(s) did not answer a check in {PREFLIGHT_SECONDS:g} s")
    if problems:
        raise UserError(f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; nothing "
                        "was written. Every machine must see the inputs and outputs at the same paths: a shared file "
                        "system mounted at the same path on every node (NFS…), or object storage (s3://…)")
    _CHECKED.add(key)


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
        intact: Callable[[Task], bool] | None = None, reads: Sequence[str] = (),
        writes: Sequence[str] = ()) -> Report:
    """Run ``fn(*task.arguments())`` for every task without a marker under ``markers``, on Ray; at most ``workers`` at a
    time (0: as many as the cluster's CPUs allow). Returns every task's result, earlier runs' included.
    ``on_result(task, result)`` is called in the driver for every task, finished earlier or now. ``intact(task)``
    says whether a finished task's output is still there: a marker whose output was deleted is dropped and the task
    runs again (else the run would fail on the missing output every time). ``reads`` and ``writes`` are the
    paths the tasks read and write (``markers`` is always one of the latter): before the first task, every node of
    the cluster is checked to see them as this process does (:func:`preflight`)."""
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
    preflight(ray, reads, [markers, *writes])
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
            # a bounded wait: between two, Python runs its signal handlers (Ctrl-C, SIGTERM end the driver at once)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
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
