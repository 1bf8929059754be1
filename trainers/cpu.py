"""Where a rank runs: its device, and its CPU threads fitted to the cores it may use and to what else runs now."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..errors import hint, named
from .options import TrainError


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError(f"{named('device', 'cuda')} asked for, but torch sees no GPU; use {hint('device', 'cpu')} or "
                         "auto")
    return torch.device("cuda", local_rank)


def configure_threads(device: torch.device, world: int = 1, workers: int = 0, threads: int = 0) -> int:
    """Set torch's intra-op threads for this process and return the number. ``threads`` > 0 is taken as given; else
    ``OMP_NUM_THREADS`` from the user is kept; else on CPU: the usable cores divided among the ranks and reduced by
    what other processes keep busy (:func:`others_load`), at least 1; on CUDA: a few per rank (the GPU computes, the
    threads only feed it)."""
    if threads > 0:
        torch.set_num_threads(threads)
        return threads
    if os.environ.get("OMP_NUM_THREADS") and not os.environ.get("GANDATA_AUTO_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if device.type == "cuda":
        n = max(1, min(4, cores // world // (workers + 1)))
    else:
        free = cores - int(others_load(world) + 0.5)
        n = max(1, min(cores // world, free // world))
    torch.set_num_threads(n)
    return n


def own_runnable(proc_self: str = "/proc/self") -> int:
    """This process's threads that are running or runnable now (state R in ``/proc/self/task/*/stat``): at least 1
    where /proc can be read (the thread reading it runs), 0 where it cannot."""
    n = 0
    try:
        for task in Path(proc_self, "task").iterdir():
            try:
                n += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                pass
    except OSError:
        return 0
    return n


def others_load(world: int = 1, proc_loadavg: str = "/proc/loadavg", samples: int = 5) -> float:
    """How many cores other processes keep busy right now: the median of a few readings (20 ms apart) of the
    runnable threads of the machine (``/proc/loadavg``'s fourth field) less this process's own runnable threads and
    the job's other ranks. The 1-minute load average lags a minute behind a load that starts or ends (it chose 1
    thread on an idle machine just after a benchmark), so it is only the fallback where there is no ``/proc``."""
    readings = []
    for i in range(samples):
        try:
            total = int(Path(proc_loadavg).read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        readings.append(total - max(own_runnable(), 1) - (world - 1))
        if i + 1 < samples:
            time.sleep(0.02)
    if readings:
        return max(0.0, float(sorted(readings)[len(readings) // 2]))
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0
