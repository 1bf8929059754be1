"""Benchmark: what glibc's allocator settings cost ``gandata shard`` — the fixed 256 KiB mmap threshold that every
command sets (``gandata.workers.steady_heap``) against glibc left alone and other settings, and optionally against
another installed gandata (an earlier version in its own environment).

    python benchmarks/scale_local.py --sizes 20000 --keep --root /tmp/gd-s20      # a dataset to shard
    python benchmarks/heap.py /tmp/gd-s20/n20000/data/bitmoji/raw --rounds 3
    python benchmarks/heap.py /tmp/gd-s20/n20000/data/bitmoji/raw --arms fixed256 --python old=/tmp/venv-old/bin/python
    python benchmarks/heap.py --make 2000x512 /tmp/big --arms fixed256 glibc fixed4m     # larger images

Each arm is ``gandata shard INPUT --out … --size 64`` from scratch (a fresh hash cache and output
folder) under GNU time, with the allocator set by ``mallopt`` before the command runs (``steady_heap`` replaced, so
an arm's setting is the only one). Arms: ``fixed256`` (what gandata does), ``glibc`` (nothing set: glibc's dynamic
threshold), ``fixed4m`` (a 4 MiB threshold), ``fixed256-trim64m`` (256 KiB and a 64 MiB trim threshold, which
fixing the mmap threshold otherwise leaves at 128 KiB). ``--python NAME=PATH`` adds an arm that runs another
interpreter's gandata with glibc's defaults (the code before ``steady_heap`` existed).

The arms run interleaved, their order rotated every round: on a shared machine the CPU's speed drifts by tens of
per cent within minutes (the same command's *user* time varies as much as its wall time), so only arms measured
side by side compare. Reported per arm: median wall, user and system seconds, minor page faults (the kernel's work
that an allocator setting changes: mapped blocks are faulted in afresh, a trimmed heap is faulted in again; unlike
time, the count does not drift with the machine), peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ARMS = {"fixed256": (256 << 10, None), "glibc": (None, None), "fixed4m": (4 << 20, None),
        "fixed256-trim64m": (256 << 10, 64 << 20)}

RUN = """
import ctypes, sys
mmap, trim = (None if a == "-" else int(a) for a in sys.argv[1:3])
def heap():
    libc = ctypes.CDLL("libc.so.6")
    for option, value in ((-3, mmap), (-1, trim)):  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        if value is not None and libc.mallopt(option, value) != 1:
            raise SystemExit(f"mallopt({option}, {value}) failed")
    return True
from gandata import workers
import gandata.shard
workers.steady_heap = gandata.shard.steady_heap = heap
from gandata.cli import main
sys.argv = ["gandata", *sys.argv[3:]]
main()
"""


def make_images(spec: str, folder: Path) -> None:
    """``NxS``: N distinct S×S RGB PNGs of smooth noise (each decodes to S²·3 bytes, compresses like a drawing)."""
    import numpy as np
    from PIL import Image

    n, size = (int(v) for v in spec.split("x"))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.png")


def run_arm(python: str, mmap: int | None, trim: int | None, source: Path, work: Path) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "GANDATA_CACHE": str(work / "cache"), "GANDATA_DATA": str(work / "data")}
    cmd = ["/usr/bin/time", "-f", "GNUTIME %e %U %S %R %M", python, "-c", RUN, str(mmap or "-"), str(trim or "-"),
           "shard", str(source), "--out", str(work / "shards"), "--size", "64", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    line = next((s for s in reversed(proc.stderr.splitlines()) if s.startswith("GNUTIME")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(cmd[5:])} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    wall, user, sys_s, faults, rss = line.split()[1:]
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": float(wall), "user": float(user), "sys": float(sys_s), "faults": int(faults),
            "rss_mb": int(rss) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input", type=Path, help="What to shard: a dataset folder or a folder of images.")
    ap.add_argument("--make", metavar="NxS", help="First fill INPUT with N generated S×S images.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--python", action="append", default=[], metavar="NAME=PATH",
                    help="Another interpreter's gandata as an arm, with glibc's defaults.")
    a = ap.parse_args()
    if a.make:
        make_images(a.make, a.input)
    arms = {name: (sys.executable, *ARMS[name]) for name in a.arms}
    for spec in a.python:
        name, _, path = spec.partition("=")
        arms[name] = (path, None, None)
    names = list(arms)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="gd-heap-") as tmp:
        for r in range(a.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                python, mmap, trim = arms[name]
                runs[name].append(run_arm(python, mmap, trim, a.input.resolve(), Path(tmp) / name))
                m = runs[name][-1]
                print(f"round {r + 1} {name:>17}: {m['wall']:6.1f} s wall {m['user']:6.1f} user {m['sys']:5.2f} "
                      f"sys {m['faults']:>8} faults {m['rss_mb']:6.0f} MB", flush=True)
    print(f"\nmedians of {a.rounds} interleaved rounds, shard of {a.input}\n")
    print("| arm | wall s | user s | system s | minor faults | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        med = {k: statistics.median(m[k] for m in runs[name]) for k in runs[name][0]}
        print(f"| {name} | {med['wall']:.1f} | {med['user']:.1f} | {med['sys']:.2f} | {med['faults']:,.0f} | "
              f"{med['rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
