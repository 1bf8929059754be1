"""Crash-safe file primitives shared by every stage.

Two rules make every stage safe to SIGKILL at any instant:

* a file appears under its final name only complete: it is written to a hidden temporary name in the same
  folder, flushed, fsynced and renamed (``atomic_write`` / ``atomic_file``); where many small files are stored
  (a dataset's images), the fsyncs are batched by :class:`GroupCommit` off the writers' threads, and what refers
  to a file (its manifest row) is written only once the file and its folder are on disk;
* an append-only JSONL log may end in a torn line; readers skip it and writers cut it off before appending
  (``JsonlLog``), so the sample it described is simply redone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError, named

TMP_MARK = ".tmp-"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = True, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Open a binary file that appears at ``path`` only if the block finishes without an exception (``mode`` "w+b":
    the block may read back what it wrote, to check it before it appears). Nothing is written through a link: the
    temporary is made new (whatever a killed writer, or anyone, left at its name is removed first, a link as a
    link), and the rename replaces a link at ``path`` rather than writing where it leads."""
    path = Path(path)
    tmp = _tmp_name(path)
    flags = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        f = os.fdopen(os.open(tmp, flags, 0o666), mode)
    except OSError as e:  # named as the user wrote it, not by its temporary name
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.close()
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes the buffer: on a full disk that fails again
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class GroupCommit:
    """Makes stored files durable in batches, off the threads that write them, and only then hands their items on.

    ``put(path, item)`` notes a file already written and renamed into place (``path`` None: an item with no file,
    kept in order behind the files put before it); a background thread, every ``wait`` seconds or ``batch``
    files, flushes them and the folders naming them (:func:`flush_files`), then calls ``durable(items)`` in order —
    e.g. appends their manifest rows — so that nothing ever refers to a file a power loss could leave incomplete,
    and a writer never waits for a disk flush. A kill loses at most the items of the last batch (their files are
    on disk, unlisted, and are simply written again). An error in the background (a full disk) is raised by the
    next ``put`` or by ``close``, which hands on what is left and stops the thread."""

    def __init__(self, durable: Callable[[list], None], batch: int = 1024, wait: float = 1.0):
        self._durable, self._batch, self._wait = durable, batch, wait
        self._pending: list[tuple[Path | None, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def put(self, path: Path | None, item: Any) -> None:
        with self._cond:
            if self._error is not None:
                raise self._error
            self._pending.append((path, item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()
            if len(self._pending) >= self._batch:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and len(self._pending) < self._batch:
                    self._cond.wait(self._wait)
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                try:
                    self._commit(batch)
                except BaseException as e:  # handed to the writers' thread
                    with self._cond:
                        self._error = e
                    return
            if closing:
                with self._cond:
                    if not self._pending:
                        return

    def _commit(self, batch: list[tuple[Path | None, Any]]) -> None:
        paths = [path for path, _ in batch if path is not None]
        if paths:
            flush_files(paths)
        self._durable([item for _, item in batch])

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:
            self._thread, self._closing = None, False
            if self._error is not None:
                error, self._error = self._error, None
                raise error


def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) (one call flushes a whole filesystem: data, inodes, directory entries), else None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syncfs if hasattr(libc, "syncfs") else None
    except (OSError, AttributeError):
        return None


SYNCFS = _syncfs()


def flush_files(paths: list[Path]) -> None:
    """Make ``paths`` (written and renamed into place) and the folder entries naming them durable: one syncfs on
    each filesystem they are on where Linux has it (one flush for the whole batch: a group commit), else an fsync
    of each file and each folder."""
    if SYNCFS is not None:
        done: set[int] = set()
        for folder in dict.fromkeys(path.parent for path in paths):
            fd = os.open(folder, os.O_RDONLY)
            try:
                dev = os.fstat(fd).st_dev
                if dev not in done:
                    if SYNCFS(fd) != 0:
                        import ctypes

                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err), str(folder))
                    done.add(dev)
            finally:
                os.close(fd)
        return
    folders = set()
    for path in paths:
        _fsync_path(path)
        folders.update((path.parent, path.parent.parent))
    for folder in folders:
        _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    with atomic_file(path, fsync=fsync) as f:
        f.write(data)


def json_bytes(obj: Any, **dumps: Any) -> bytes:
    """``obj`` as JSON text in UTF-8 (``dumps``: json.dumps's options). A file name that is not UTF-8 reaches the
    records as text with surrogate escapes (``café`` in latin-1: ``caf\\udce9``); such a character is written as its
    JSON escape (``\\udce9``): valid JSON, read back by Python as the same text (UTF-8 itself cannot hold it)."""
    return json.dumps(obj, ensure_ascii=False, **dumps).encode("utf-8", "backslashreplace")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json_bytes(obj, indent=2) + b"\n")


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete temporary files that a killed writer left in ``folder``; returns how many."""
    n = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and TMP_MARK in entry.name and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the JSON objects of a JSONL file, skipping a torn or corrupt line instead of failing."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        yield from jsonl_objects(f)


def jsonl_objects(lines: Iterable[bytes]) -> Iterator[dict]:
    """The JSON objects of JSONL lines (with their newlines): a torn last line ends them, a corrupt one is skipped."""
    for line in lines:
        if not line.endswith(b"\n"):
            return  # torn last line: the writer was killed mid-write
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            yield obj


def cut_torn_tail(path: str | os.PathLike) -> None:
    """Truncate a file after its last newline, so the next append starts on a fresh line."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                if keep != end:
                    f.truncate(keep)
                return
            pos -= step
        if end:
            f.truncate(0)


class JsonlLog:
    """An append-only JSONL file: each ``append`` writes one whole line and flushes it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        cut_torn_tail(self.path)
        self._f = open(self.path, "ab")
        self._lock = threading.Lock()

    def append(self, obj: dict) -> None:
        line = json_bytes(obj, separators=(",", ":")) + b"\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderLock:
    """An exclusive lock on a folder (``FOLDER/.lock``) so that two commands never write into it at once. ``name``:
    another lock file in the folder, for one output among others there (an export's ``.NAME.lock`` beside its zip
    or its folder); ``transient``: the file is there only while the lock is held — its holder removes it as it lets
    go, and a command that got the lock of a file so removed takes it again on the file now at the name — so that
    nothing is left beside the output."""

    def __init__(self, folder: str | os.PathLike, name: str = ".lock", transient: bool = False):
        self.folder, self.name, self.transient = Path(folder), name, transient
        self._fd: int | None = None

    def acquire(self, wait: float = 3.0) -> FolderLock:
        """Take the lock, waiting up to ``wait`` seconds (the workers of a killed command take a moment to go)."""
        path = self.folder / self.name
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise UserError(
                    f"another gandata command is writing to {self.folder}; wait for it to finish or use another "
                    f"{named('out')}"
                ) from None
            if not self.transient or _names(path, fd):
                break
            os.close(fd)  # its holder removed that file as it let go: the lock is the file at the name now
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if self.transient:  # removed while held: a command waiting on this file then tries the name again
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.folder / self.name)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` names the file open as ``fd`` (not another, and not nothing)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
