"""Augmentation benchmark: does ``--augment diffaug`` help where GAN critics overfit — small sets — and cost nothing
on a larger one?

    pip install -e '.[bench]'
    python benchmarks/augment.py                       # 10 %, 25 %, 100 % of the digits; 10 seeds per arm; 20 kimg
    python benchmarks/augment.py --fractions 0.1 --seeds 0-4 --kimg 10 --jobs 2

* Data: the quality benchmark's (``benchmarks/quality.py``): scikit-learn's 1 797 handwritten digits at 32 px, 80 %
  train and 20 % held out. A fraction of the train split (the same images for every arm and seed: a fixed
  permutation) is written as its own shard set; 10 % is 143 images, 25 % 359, 100 % 1 437.
* Arms: gandata's dcgan at its defaults (ngf = ndf = 32, EMA generator), ``--augment none`` against ``--augment
  diffaug`` (colour, translation, cutout), at equal budget: ``--kimg`` thousand real images shown to the critic.
* Score: the Fréchet distance, in the quality benchmark's classifier features, between 2 000 generated images and
  the **whole held-out split** (images no run trained on) — lower is better. The overfitting sign: the critic's
  mean logit on its own training images minus on the held-out ones (eval mode); a critic that learned its set by
  heart scores its own images higher than unseen ones of the same kind.
* Per fraction: the median FD of each arm, a two-sided Mann-Whitney rank test between them (scipy), the median
  logit gap. Runs are separate processes, ``--jobs`` at a time, one thread each; results are JSON files under
  ``--work``, so an interrupted benchmark continues.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gandata.trainers.metrics import frechet_distance, gaussian_stats  # noqa: E402
from quality import DEFAULT_WORK, Scorer, arrays, generate, prepare  # noqa: E402


def subset(work: Path, fraction: float) -> Path:
    """The first ``fraction`` of the train split under a fixed permutation, as its own shard set (no val split)."""
    out = work / f"subset-{fraction:g}"
    if (out / "shards" / "dataset.json").exists():
        return out / "shards"
    from PIL import Image

    from gandata import images
    from gandata.datasets import Dataset
    from gandata.shard import ShardOptions, shard

    x, y = arrays(prepare(work), "train")
    keep = np.random.default_rng(0).permutation(len(x))[: round(fraction * len(x))]
    with Dataset.create(out / "raw") as ds:
        for i in sorted(keep.tolist()):
            if f"d{i:04d}" in ds:
                continue
            pil = Image.fromarray(x[i].permute(1, 2, 0).numpy())
            ds.add(f"d{i:04d}", images.encode(pil, "png"), "png",
                   {"width": 32, "height": 32, "source": "sklearn-digits", "digit": str(int(y[i]))})
    shard([out / "raw"], out / "shards", "digits", ShardOptions(size=32, val_fraction=0.0, dedupe="none",
                                                                 min_shards=4, maxcount=256))
    return out / "shards"


@torch.no_grad()
def logits(D: torch.nn.Module, x: torch.Tensor) -> float:
    return float(torch.cat([D(x[i:i + 256].float() / 127.5 - 1) for i in range(0, len(x), 256)]).mean())


def run_job(job: dict, work: Path) -> dict:
    torch.set_num_threads(1)
    from gandata.trainers.checkpoints import latest_checkpoint, load_checkpoint
    from gandata.trainers.models import build
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.sampling import load_generator
    from gandata.trainers.train import train

    shards = subset(work, job["fraction"])
    out = work / "runs" / name_of(job)
    t0 = time.monotonic()
    if not latest_checkpoint(out) or load_checkpoint(latest_checkpoint(out))["cur_nimg"] < job["kimg"] * 1000:
        train(TrainOptions(kind="dcgan", shards=str(shards), out=str(out), kimg=job["kimg"], ngf=32, ndf=32,
                           seed=job["seed"], device="cpu", workers=1, threads=1, snap_kimg=job["kimg"],
                           log_kimg=max(1.0, job["kimg"] / 10), grid=16, resume="auto", augment=job["augment"]),
              progress=False)
    ck_path = latest_checkpoint(out)
    G, o, _, _ = load_generator(ck_path, torch.device("cpu"))
    imgs, _ = generate(G, o.nz, False)
    scorer = Scorer(work)
    xv, _ = arrays(prepare(work), "val")
    mu_v, sig_v = gaussian_stats(scorer.features(xv)[0])
    mu_g, sig_g = gaussian_stats(scorer.features(imgs)[0])
    _, D = build(o, 32, 0)
    D.load_state_dict(load_checkpoint(ck_path)["D"])
    D.eval()
    xt, _ = arrays(shards, "train")
    return {**job, "fd_heldout": frechet_distance(mu_v, sig_v, mu_g, sig_g),
            "fd_train": scorer.score(imgs)["fd"], "logit_gap": logits(D, xt) - logits(D, xv),
            "seconds": round(time.monotonic() - t0, 1)}


def name_of(job: dict) -> str:
    return f"dcgan-f{job['fraction']:g}-{job['augment']}-k{job['kimg']:g}-s{job['seed']}"


def table(results: list[dict]) -> str:
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        mannwhitneyu = None
    lines = ["| train images | augment | seeds | FD to held-out, per seed | median | logit gap (median) | "
             "rank test |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for f in sorted({r["fraction"] for r in results}):
        arms = {a: [r for r in results if r["fraction"] == f and r["augment"] == a] for a in ("none", "diffaug")}
        p = None
        if mannwhitneyu and all(len(v) >= 3 for v in arms.values()):
            p = mannwhitneyu([r["fd_heldout"] for r in arms["none"]], [r["fd_heldout"] for r in arms["diffaug"]],
                             alternative="two-sided").pvalue
        n_img = round(f * 1437)
        for a, rs in arms.items():
            if not rs:
                continue
            fds = sorted(r["fd_heldout"] for r in rs)
            lines.append(f"| {n_img} ({f:.0%}) | {a} | {len(rs)} | {', '.join(f'{v:.0f}' for v in fds)} | "
                         f"{statistics.median(fds):.1f} | {statistics.median(r['logit_gap'] for r in rs):+.2f} | "
                         + (f"p = {p:.4f}" if p is not None and a == "diffaug" else "") + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--fractions", default="0.1,0.25,1.0")
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--kimg", type=float, default=20.0)
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--job", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.job:
        print(json.dumps(run_job(json.loads(a.job), a.work)))
        return
    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    prepare(a.work)
    Scorer(a.work)  # the classifier, trained once before the jobs start
    for f in map(float, a.fractions.split(",")):
        subset(a.work, f)
    jobs = [{"fraction": float(f), "augment": arm, "seed": s, "kimg": a.kimg}
            for f in a.fractions.split(",") for s in seeds for arm in ("none", "diffaug")]
    results_dir = a.work / "augment-results"
    results_dir.mkdir(parents=True, exist_ok=True)

    def one(job: dict) -> dict:
        path = results_dir / f"{name_of(job)}.json"
        if path.exists():
            return json.loads(path.read_text())
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, __file__, "--work", str(a.work), "--job", json.dumps(job)],
                           capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"{name_of(job)} failed:\n{r.stderr[-3000:]}")
        result = json.loads(r.stdout.strip().splitlines()[-1])
        path.write_text(json.dumps(result))
        print(f"{name_of(job)}: FD {result['fd_heldout']:.1f}, gap {result['logit_gap']:+.2f}, "
              f"{result['seconds']} s", flush=True)
        return result

    t0 = time.monotonic()
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(one, jobs))
    print(f"\n{len(results)} runs, {time.monotonic() - t0:.0f} s; dcgan, {a.kimg:g} kimg, 32 px, ngf = ndf = 32\n")
    print(table(results))


if __name__ == "__main__":
    main()
