"""Benchmark: the near-duplicate search at growing sizes, and hashing real images.

    python benchmarks/dedupe.py                          # 200 000, 1 000 000 and 2 000 000 hashes, threshold 8
    python benchmarks/dedupe.py --n 200000 --brute-n 200000
    python benchmarks/dedupe.py --imagededup /path/to/venv/bin/python   # also imagededup's PHash, if installed

1. Search: n random 64-bit hashes plus planted near pairs (1 in 20 hashes has a copy 0…threshold bits away);
   gandata's multi-index search (each size in its own process: wall time, CPU time, peak RSS, the plan and the
   cost model's estimate) vs a brute-force numpy baseline (XOR + popcount of each hash against all later ones) on
   the first --brute-n hashes, extrapolated as n². Both must return the same pairs on that subset.
2. Hashing: hashes/s of gandata-phash-v1 over real images (the anime tiles, repeated), decode included, in worker
   threads as `gandata dedupe` runs it; and imagededup's PHash.encode_image on the same files when a Python with
   imagededup is given (it pulls torch, so it lives in its own virtual environment).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gandata import dedupe as dd

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "fixtures"


def planted(n: int, threshold: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    k = n // 20
    flips = np.zeros(k, dtype=np.uint64)
    counts = rng.integers(0, threshold + 1, k)
    for i, c in enumerate(counts):
        for b in rng.choice(64, c, replace=False):
            flips[i] |= np.uint64(1) << np.uint64(int(b))
    base[n - k :] = base[:k] ^ flips
    return base


def model_seconds(n: int, threshold: int) -> float | None:
    """The planner's own estimate (one thread) of the search it plans."""
    plan = dd._plan(n, threshold)
    if plan is None:
        return None
    m, r = plan
    ns = 0.0
    for w in dd._widths(m):
        ball = dd._ball(w, r) - 1
        ns += (n * dd.ITEM_NS + (1 << w) * dd.BUCKET_NS + n * ball / 2 * dd.PROBE_NS
               + n * n * (ball + 1) / (1 << w) / 2 * dd.CANDIDATE_NS)
    return ns / 1e9


def search_once(n: int, threshold: int, brute_n: int) -> dict:
    h = planted(n, threshold)
    t0, c0 = time.perf_counter(), time.process_time()
    pairs = dd.near_pairs(h, threshold)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    bn = min(brute_n, n)
    t0 = time.perf_counter()
    brute = dd.brute_pairs(h[:bn], threshold)
    t_brute = (time.perf_counter() - t0) * (n / bn) ** 2
    sub = pairs[(pairs[:, 0] < bn) & (pairs[:, 1] < bn)]
    return {
        "hashes": n, "threshold": threshold, "plan_blocks_radius": dd._plan(n, threshold), "pairs": len(pairs),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss // 1024, "model_s_one_thread": round(model_seconds(n, threshold) or 0, 2),
        "brute_force_s" + ("" if bn == n else "_extrapolated"): round(t_brute, 1), "brute_force_hashes": bn,
        "speedup": round(t_brute / wall, 1), "same_pairs_as_brute_force": bool(np.array_equal(sub, brute)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="200000,1000000,2000000", help="sizes, comma-separated")
    ap.add_argument("--brute-n", type=int, default=50_000, help="hashes for the brute-force baseline")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--threshold", type=int, default=dd.DEFAULT_THRESHOLD)
    ap.add_argument("--images", type=Path, default=SHARED / "anime")
    ap.add_argument("--copies", type=int, default=25)
    ap.add_argument("--imagededup", help="a python with imagededup installed")
    ap.add_argument("--work", type=Path, default=HERE / ".work-dedupe")
    args = ap.parse_args()

    if args.one:
        print(json.dumps(search_once(args.one, args.threshold, args.brute_n)))
        return
    result = {"search": []}
    for n in (int(x) for x in args.n.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--threshold", str(args.threshold),
                              "--brute-n", str(args.brute_n)], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout)
        print(row, flush=True)
        result["search"].append(row)

    src = args.work / "images"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    originals = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for i in range(args.copies):
        for p in originals:
            shutil.copy(p, src / f"c{i:03d}_{p.name}")
    n_img = len(originals) * args.copies
    os.environ["GANDATA_CACHE"] = str(args.work / "cache")  # an empty hash cache: every image is decoded
    shutil.rmtree(args.work / "cache", ignore_errors=True)
    t0 = time.perf_counter()
    rows, _ = dd.hash_inputs([src])
    t_hash = time.perf_counter() - t0
    result["hashing"] = {"images": n_img, "size": "512x512 JPEG", "cores": os.cpu_count(),
                         "gandata_hashes_per_s": round(len(rows) / t_hash, 1)}
    if args.imagededup:
        code = ("import sys,time; from imagededup.methods import PHash; p=PHash(verbose=False); "
                "t=time.perf_counter(); e=p.encode_images(image_dir=sys.argv[1]); "
                "print(len(e), time.perf_counter()-t)")
        out = subprocess.run([args.imagededup, "-c", code, str(src)], capture_output=True, text=True)
        if out.returncode == 0:
            count, secs = out.stdout.split()[-2:]
            result["hashing"]["imagededup_phash_per_s"] = round(int(count) / float(secs), 1)
        else:
            result["hashing"]["imagededup_error"] = out.stderr.strip().splitlines()[-1]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
