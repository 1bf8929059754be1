"""Where CPU training's minor page faults and kernel time come from: our trainer against a pytorch/examples DCGAN
loop on the same images, the same torch, each arm in a fresh process.

    python benchmarks/train_faults.py                     # 64 px, batch 64, 1.28 kimg an arm, 2 rounds
    python benchmarks/train_faults.py --kimg 0.64 --rounds 1 --arms ours,ours-glibc

Arms (each on the benchmark's shards, or the same images as PNG files for the reference):

* ``ours``: ``gandata train dcgan`` as the command line runs it — ``gandata.workers.steady_heap()`` first (the
  mmap threshold fixed at 256 KiB), then the trainer's ``reuse_heap()`` (glibc's own end state), 2 loader workers,
  fp32;
* ``ours-workers0``: the same with the batches decoded in the training process;
* ``ours-256k``: the same without ``reuse_heap()``: the command line's 256 KiB threshold kept (the code before);
* ``ours-glibc``: neither: glibc's allocator left alone;
* ``ours-bf16``: ``ours`` under ``--precision bf16`` (autocast; on a CPU without bf16 arithmetic a step takes about
  10× as long: run it with a small ``--kimg``);
* ``reference``: pytorch/examples' ``dcgan/main.py`` loop written out (its nets at 64 px, Adam 2e-4, BCE, a
  DataLoader of a PNG folder with 2 workers), glibc left alone;
* ``reference-steady``: the same after ``steady_heap()``.

Reported per arm (medians over the rounds): minor faults, user and system CPU seconds of the whole process tree
(the loader workers included) and of the training alone in the main process, and images/s. A start-up arm
(``null``: the imports and the data, no step) is measured too, so that what a step costs can be told from what
starting costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARMS = ("null", "ours", "ours-workers0", "ours-256k", "ours-glibc", "ours-bf16", "reference", "reference-steady")


def _usage(who: int) -> tuple[int, float, float]:
    r = resource.getrusage(who)
    return r.ru_minflt, r.ru_utime, r.ru_stime


def _bench_train():
    """benchmarks/train.py (its data maker and its folder loader)."""
    spec = importlib.util.spec_from_file_location("bench_train", HERE / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_loop(folder: Path, kimg: float, batch: int, workers: int) -> None:
    """pytorch/examples dcgan/main.py, written out: its Generator and Discriminator at 64 px (nz 100, ngf = ndf = 64),
    weights N(0, 0.02), Adam 2e-4 (0.5, 0.999), BCELoss on a sigmoid, one G forward a step, reading a folder of
    images through a DataLoader (ImageFolder's part written with PIL: the example's torchvision is not installed)."""
    import torch
    from torch import nn

    nz, ngf, ndf = 100, 64, 64
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
    netD = nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def weights_init(m):
        if "Conv" in type(m).__name__:
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif "BatchNorm" in type(m).__name__:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    torch.manual_seed(0)
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = torch.utils.data.DataLoader(_bench_train().Folder(folder), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True)
    steps = int(kimg * 1000) // batch
    done = 0
    while done < steps:
        for real in loader:
            real = real.float().div_(127.5).sub_(1.0)  # ToTensor + Normalize(0.5, 0.5)
            netD.zero_grad()
            label = torch.full((batch,), 1.0)
            errD_real = criterion(netD(real).view(-1), label)
            errD_real.backward()
            fake = netG(torch.randn(batch, nz, 1, 1))
            label.fill_(0.0)
            errD_fake = criterion(netD(fake.detach()).view(-1), label)
            errD_fake.backward()
            optD.step()
            netG.zero_grad()
            label.fill_(1.0)
            errG = criterion(netD(fake).view(-1), label)
            errG.backward()
            optG.step()
            done += 1
            if done == steps:
                break


def arm(name: str, work: Path, kimg: float, batch: int) -> dict:
    """One arm, in this (fresh) process: what its training took in this process alone."""
    import torch

    from gandata.workers import steady_heap

    if name != "ours-glibc" and name != "reference":
        steady_heap()
    if name in ("ours-256k", "ours-glibc"):
        import gandata.trainers.train as ttrain

        ttrain.reuse_heap = lambda: False
    shards, folder = _bench_train().make_data(work, 2048)
    torch.set_num_threads(1)  # the same for every arm: a fitted count would differ with the load of the moment
    before, t0 = _usage(resource.RUSAGE_SELF), time.perf_counter()
    if name.startswith("ours"):
        from gandata.trainers.options import TrainOptions
        from gandata.trainers.train import train

        out = work / "runs" / name
        shutil.rmtree(out, ignore_errors=True)
        train(TrainOptions(kind="dcgan", shards=str(shards), out=str(out), kimg=kimg, batch=batch, device="cpu",
                           workers=0 if name == "ours-workers0" else 2, threads=1, snap_kimg=kimg, log_kimg=kimg,
                           grid=16, precision="bf16" if name == "ours-bf16" else "fp32"), progress=False)
    elif name.startswith("reference"):
        reference_loop(folder, kimg, batch, 2)
    seconds = time.perf_counter() - t0
    after = _usage(resource.RUSAGE_SELF)
    return {"main_minflt": after[0] - before[0], "main_user": round(after[1] - before[1], 2),
            "main_sys": round(after[2] - before[2], 2), "train_seconds": round(seconds, 2),
            "img_per_s": round(int(kimg * 1000) // batch * batch / seconds, 1) if name != "null" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kimg", type=float, default=1.28)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--work", type=Path, default=HERE / ".work-train")
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = ap.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm, args.work, args.kimg, args.batch)))
        return
    results: dict[str, list[dict]] = {}
    for _ in range(args.rounds):  # interleaved: the machine's drift falls on every arm alike
        for name in args.arms.split(","):
            before = _usage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([sys.executable, __file__, "--arm", name, "--work", str(args.work), "--kimg",
                                str(args.kimg), "--batch", str(args.batch)], capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
            after = _usage(resource.RUSAGE_CHILDREN)
            if r.returncode:
                sys.exit(f"{name}: {r.stderr[-3000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(tree_minflt=after[0] - before[0], tree_user=round(after[1] - before[1], 2),
                       tree_sys=round(after[2] - before[2], 2))
            results.setdefault(name, []).append(row)
            print(name, json.dumps(row), flush=True)
    keys = ("tree_minflt", "tree_user", "tree_sys", "main_minflt", "main_user", "main_sys", "img_per_s")
    print(f"\nmedians over {args.rounds} round(s), {args.kimg} kimg at batch {args.batch}, 64 px, dcgan, 1 thread:")
    print("| arm | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 1))
    for name, rows in results.items():
        cells = [("–" if rows[0][k] is None else f"{round(statistics.median(r[k] for r in rows)):,}"
                  if k.endswith("minflt") else f"{statistics.median(r[k] for r in rows):.2f}") for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
