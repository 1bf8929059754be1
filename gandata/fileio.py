"""Crash-safe file primitives shared by every stage.

Two rules make every stage safe to SIGKILL at any instant:

* a file appears under its final name only complete: it is written to a hidden temporary name in the same
  folder, flushed, fsynced and renamed (``atomic_write`` / ``atomic_file``);
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
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError

TMP_MARK = ".tmp-"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = True, mode: str = "wb") -> Iterator[IO[bytes]]:
    """Open a binary file that appears at ``path`` only if the block finishes without an exception (``mode`` "w+b":
    the block may read back what it wrote, to check it before it appears)."""
    path = Path(path)
    tmp = _tmp_name(path)
    f = open(tmp, mode)
    try:
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # closing flushes the buffer: on a full disk that fails again
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    with atomic_file(path, fsync=fsync) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


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
        for line in f:
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
        line = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
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
    """An exclusive lock on a folder (``FOLDER/.lock``) so that two commands never write into it at once."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self, wait: float = 3.0) -> FolderLock:
        """Take the lock, waiting up to ``wait`` seconds (the workers of a killed command take a moment to go)."""
        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            os.close(fd)
            raise UserError(
                f"another gandata command is writing to {self.folder}; wait for it to finish or use another --out"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
