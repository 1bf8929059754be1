"""Benchmark: the trainers' input pipeline, and training speed per trainer.

    python benchmarks/train.py                         # 4096 images at 64 px; every trainer for 0.5 kimg
    python benchmarks/train.py --device cuda --kimg 20 # on a GPU

1. Input: images/s of shards → uint8 batches (trainers.data.stream: WebDataset, resampled, decoded and batched in
   workers) against a plain folder-of-PNGs loader (a torch Dataset that opens each PNG with PIL, a DataLoader with
   the same batch size and workers) on the same images.
2. Training: images/s (real images shown to the critic per second, from metrics.jsonl) of each trainer at 64 px
   with the default widths (ngf = ndf = 64) and batch 64, on --device.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent

from gandata.trainers import data as tdata  # noqa: E402
from gandata.trainers.kinds import KINDS  # noqa: E402
from gandata.trainers.options import TrainOptions  # noqa: E402
from gandata.trainers.train import train  # noqa: E402

from gandata import shardset  # noqa: E402
from gandata.datasets import Dataset  # noqa: E402
from gandata.shard import ShardOptions, shard  # noqa: E402


def make_data(work: Path, n: int) -> tuple[Path, Path]:
    shards, folder = work / "shards", work / "pngs"
    if (shards / "dataset.json").exists() and folder.exists():
        return shards, folder
    rng = np.random.default_rng(0)
    with Dataset.create(work / "raw") as ds:
        for i in range(n):
            arr = np.clip(rng.normal(128, 60, (64, 64, 3)) + rng.integers(-80, 80, 3), 0, 255).astype(np.uint8)
            im = Image.fromarray(arr)
            import io

            buf = io.BytesIO()
            im.save(buf, "PNG")
            ds.add(f"b{i:06d}", buf.getvalue(), "png", {"width": 64, "height": 64, "source": "bench", "group": i % 4})
    shard([work / "raw"], shards, "bench", ShardOptions(size=64, val_fraction=0.0, dedupe="none", maxcount=512,
                                                        label_field="group"))
    folder.mkdir(exist_ok=True)
    for row in Dataset.open(work / "raw").rows():
        shutil.copy(work / "raw" / row["path"], folder / f"{row['key']}.png")
    return shards, folder


class Folder(torch.utils.data.Dataset):
    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.png"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(Image.open(self.files[i]).convert("RGB"))).permute(2, 0, 1).contiguous()


def time_batches(it, batches: int) -> float:
    next(it)  # start-up (worker spawn) is not counted
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--kimg", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--work", type=Path, default=HERE / ".work-train")
    args = ap.parse_args()
    shards, folder = make_data(args.work, args.n)
    urls, _ = shardset.resolve(str(shards))
    wds_it = iter(tdata.stream(urls, args.batch, workers=args.workers))
    t_wds = time_batches(wds_it, args.batches)
    loader = torch.utils.data.DataLoader(Folder(folder), batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         drop_last=True, persistent_workers=args.workers > 0)

    def endless():
        while True:
            yield from loader

    t_dir = time_batches(endless(), args.batches)
    n_img = args.batches * args.batch
    result = {"input": {"images": args.n, "batch": args.batch, "workers": args.workers, "cores": os.cpu_count(),
                        "shards_img_per_s": round(n_img / t_wds, 1), "folder_img_per_s": round(n_img / t_dir, 1),
                        "ratio": round(t_dir / t_wds, 2)},
              "training": {"device": args.device, "resolution": 64, "batch": 64, "img_per_s": {}}}
    for kind in args.kinds.split(","):
        out = args.work / "runs" / kind
        shutil.rmtree(out, ignore_errors=True)
        opts = TrainOptions(kind=kind, shards=str(shards), out=str(out), kimg=args.kimg, batch=64, device=args.device,
                            workers=args.workers, snap_kimg=args.kimg, log_kimg=args.kimg / 2, critic_warmup=False)
        train(opts, progress=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        result["training"]["img_per_s"][kind] = rows[-1]["images_per_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
