"""Worker processes that never outlive the command that started them.

Workers come from a fork server (a clean process started once), so they inherit none of the command's open
files — a dataset's lock, a half-written shard. Each worker watches the command's process and exits as soon as
it is gone, even after a SIGKILL, so a killed command leaves no orphans holding CPU, memory or locks (the fork
server then exits too, once its last worker has).
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor


def _watch(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # Linux ≥ 5.3: readable once the process has exited
        select.select([fd], [], [])
    except (AttributeError, OSError):
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
    os._exit(1)


def _worker_init(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="watch-parent").start()


def process_pool(workers: int, preload: list[str] | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; ``preload`` names modules the fork server imports once for all workers."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver" and preload:
        ctx.set_forkserver_preload(preload)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))
