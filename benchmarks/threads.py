"""CPU threads for training: the fitted default (``--threads 0``) against 1 thread and one per core, on an idle
machine and under a load of busy processes (``--load N``, default 2 × the cores).

    python benchmarks/threads.py                  # dcgan at 32 px, ngf = ndf = 32, 3 kimg a run
    python benchmarks/threads.py --kind wgan-gp --kimg 2

Each configuration is one fresh ``gandata train`` process (with its data-loader worker); images/s is the median of
its metrics rows after the first (start-up). The load is ``N`` processes spinning in pure Python, started 2 s before
each measured run and stopped after it; they stop by themselves after 10 minutes at the latest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SPIN = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 600: pass\n"


def run(shards: Path, work: Path, kind: str, kimg: float, threads: int, label: str) -> dict:
    out = work / f"{kind}-{label}-t{threads}"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GANDATA_AUTO_THREADS")}
    cmd = [sys.executable, "-m", "gandata.cli", "train", kind, "--shards", str(shards), "--out", str(out), "--kimg",
           str(kimg), "--ngf", "32", "--ndf", "32", "--device", "cpu", "--workers", "1", "--threads", str(threads),
           "--log-kimg", str(kimg / 6), "--snap-kimg", str(kimg), "--no-critic-warmup", "--json"]
    t = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=HERE.parent)
    wall = time.monotonic() - t
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["images_per_s"] for r in rows[1:]) or [rows[-1]["images_per_s"]]
    chosen = json.loads((out / "options.json").read_text())["threads"]
    return {"load": label, "threads": "auto" if threads == 0 else threads, "chosen": chosen,
            "img_per_s": rates[len(rates) // 2], "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="dcgan")
    ap.add_argument("--kimg", type=float, default=3.0)
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--load", type=int, default=2 * cores)
    ap.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="gandata-threads-")))
    a = ap.parse_args()
    import quality

    shards = quality.prepare(a.work / "data")
    results = []
    for label, n_load in (("idle", 0), (f"{a.load} busy processes", a.load)):
        for threads in (0, 1, cores):
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n_load)]
            try:
                time.sleep(2 if n_load else 0)
                results.append(run(shards, a.work, a.kind, a.kimg, threads, label))
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(f"\n{a.kind}, 32 px, {a.kimg:g} kimg a run, {cores} cores\n")
    print("| machine | --threads | threads used | images/s | wall s |\n| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['load']} | {r['threads']} | {r['chosen']} | {r['img_per_s']:.0f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
