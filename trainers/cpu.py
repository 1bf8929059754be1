"""Where a rank runs: its device, its CPU threads fitted to the cores it may use and to what else runs now, and a
heap that keeps the memory of its tensors."""

from __future__ import annotations

import os
import sys
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


REUSED_BLOCKS = 32 << 20  # bytes: glibc's own ceiling for its dynamic mmap threshold (64-bit); smaller blocks reuse
TRIM_THRESHOLD = 64 << 20  # free memory kept at the heap's top: twice the threshold, as glibc's dynamic mode keeps


def reuse_heap() -> bool:
    """Let this process reuse the memory of its tensors from step to step. PyTorch's CPU tensors come from malloc,
    and the command line fixes glibc's mmap threshold at 256 KiB for every command (``gandata.workers.steady_heap``:
    flat memory for the data stages over millions of samples): under it, every activation, gradient and batch of 256
    KiB or more was mapped afresh and faulted in page by page at every step — 9× the minor faults and 6× the system
    time of glibc's defaults in a CPU dcgan run (``benchmarks/train_faults.py``, docs/performance.md). Training,
    sampling and evaluation keep no per-sample state, so they take glibc's own regime back: the thresholds its
    dynamic adjustment ends at (a fixed one has ended that adjustment for good). Forked loader workers inherit it.
    glibc on Linux only; returns whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(-3, REUSED_BLOCKS) == 1 and libc.mallopt(-1, TRIM_THRESHOLD) == 1  # M_MMAP_/M_TRIM_
    except (OSError, AttributeError):  # musl, or no mallopt
        return False


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
