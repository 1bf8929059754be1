"""Benchmark: the near-duplicate search on 200 000 hashes, and hashing real images.

    python benchmarks/dedupe.py                          # 200 000 hashes, threshold 8, brute force in full
    python benchmarks/dedupe.py --n 100000 --brute-n 20000
    python benchmarks/dedupe.py --imagededup /path/to/venv/bin/python   # also imagededup's PHash, if installed

1. Search: n random 64-bit hashes plus planted near pairs (1 in 20 hashes has a copy 0…threshold bits away);
   gandata's multi-index search vs a brute-force numpy baseline (XOR + popcount of each hash against all later
   ones). With --brute-n below n, the baseline runs on the first brute-n hashes and is extrapolated as n².
   Both must return the same pairs (checked on the brute-forced subset).
2. Hashing: hashes/s of gandata-phash-v1 over real images (the anime tiles, repeated), decode included, in worker
   threads as `gandata dedupe` runs it; and imagededup's PHash.encode_image on the same files when a Python with
   imagededup is given (it pulls torch, so it lives in its own virtual environment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--brute-n", type=int, default=None, help="hashes for the brute-force baseline (default: all)")
    ap.add_argument("--threshold", type=int, default=dd.DEFAULT_THRESHOLD)
    ap.add_argument("--images", type=Path, default=SHARED / "anime")
    ap.add_argument("--copies", type=int, default=25)
    ap.add_argument("--imagededup", help="a python with imagededup installed")
    ap.add_argument("--work", type=Path, default=HERE / ".work-dedupe")
    args = ap.parse_args()

    h = planted(args.n, args.threshold)
    t0 = time.perf_counter()
    pairs = dd.near_pairs(h, args.threshold)
    t_mih = time.perf_counter() - t0
    bn = args.brute_n or args.n
    t0 = time.perf_counter()
    brute = dd.brute_pairs(h[:bn], args.threshold)
    t_brute = time.perf_counter() - t0
    t_brute_full = t_brute * (args.n / bn) ** 2
    sub = pairs[(pairs[:, 0] < bn) & (pairs[:, 1] < bn)]
    result = {
        "search": {
            "hashes": args.n,
            "threshold": args.threshold,
            "plan_blocks_radius": dd._plan(args.n, args.threshold),
            "pairs_found": len(pairs),
            "gandata_s": round(t_mih, 2),
            "brute_force_s": round(t_brute_full, 1) if bn == args.n else None,
            "brute_force_s_extrapolated": round(t_brute_full, 1) if bn < args.n else None,
            "brute_force_hashes": bn,
            "speedup": round(t_brute_full / t_mih, 1),
            "same_pairs_as_brute_force": bool(np.array_equal(sub, brute)),
        },
    }

    src = args.work / "images"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    originals = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for i in range(args.copies):
        for p in originals:
            shutil.copy(p, src / f"c{i:03d}_{p.name}")
    n_img = len(originals) * args.copies
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
