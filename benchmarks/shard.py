"""Benchmark: `gandata shard` against a plain script doing the same work, on the same JPEGs, at growing sizes.

    python benchmarks/shard.py                      # 2 000 and 20 000 JPEGs of 512² → 64-px PNG shards, 3 pairs
    python benchmarks/shard.py --n 2000 --pairs 5 --load 2

Inputs: distinct 512×512 JPEGs (quality 90) cut from the 12 real anime tiles of ../shared/fixtures (random crops,
flips and colour shifts), made once into benchmarks/.work-shard.

The plain script (below, `plain`) is what a user would write: Pillow opens each file, makes it RGB, centre-crops
and resizes it to 64 px by area (BOX, as gandata), encodes a PNG at the same compression level and writes it with
webdataset's ShardWriter, in one process, one file after another. It runs twice: decoding each JPEG whole, and
with Pillow's draft mode (libjpeg's DCT scaling to at least 128 px, what gandata's --draft does). gandata runs its
whole command (start-up, reading, decode, resize, output-pixel digest, perceptual hash, encode, spool, dedupe,
split, tar writing, dataset.json) on a fresh output folder with an empty hash cache, at its defaults.

Runs are interleaved in pairs (plain, gandata, plain, gandata …) and the median of each is reported, with CPU
seconds and peak RSS. ``--load N`` runs N busy-looping processes meanwhile (a loaded machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "fixtures"

PLAIN = r'''
import sys, io, glob
from PIL import Image
import webdataset as wds
src, out, draft = sys.argv[1], sys.argv[2], sys.argv[3] == "draft"
with wds.ShardWriter(out + "/plain-%06d.tar", maxcount=10000, verbose=0) as sink:
    for path in sorted(glob.glob(src + "/*.jpg")):
        im = Image.open(path)
        if draft:
            im.draft("RGB", (128, 128))
        im = im.convert("RGB")
        side = min(im.size)
        left, top = (im.width - side) / 2, (im.height - side) / 2
        small = im.resize((64, 64), Image.Resampling.BOX, box=(left, top, left + side, top + side))
        buf = io.BytesIO()
        small.save(buf, "PNG", compress_level=6)
        key = path.rsplit("/", 1)[1][:-4]
        sink.write({"__key__": key, "png": buf.getvalue(), "json": {"key": key}})
'''


def make_inputs(folder: Path, n: int) -> None:
    from PIL import Image, ImageEnhance, ImageOps

    have = len(list(folder.glob("*.jpg"))) if folder.exists() else 0
    if have >= n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tiles = [Image.open(p).convert("RGB") for p in sorted((SHARED / "anime").glob("*.jpg"))]
    rng = random.Random(0)
    for i in range(n):
        im = tiles[i % len(tiles)]
        s = rng.randint(300, 512)
        x, y = rng.randint(0, 512 - s), rng.randint(0, 512 - s)
        im = im.crop((x, y, x + s, y + s)).resize((512, 512), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            im = ImageOps.mirror(im)
        im = ImageEnhance.Color(im).enhance(rng.uniform(0.7, 1.3))
        im.save(folder / f"img{i:06d}.jpg", quality=90)


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds, CPU seconds (user + sys) and peak RSS (MB) of a command, from GNU time."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed: {proc.stderr[-2000:]}")
    user, sys_, rss = proc.stderr.strip().splitlines()[-1].split()
    return {"wall": wall, "cpu": float(user) + float(sys_), "rss": int(rss) / 1024}


def pngs(folder: str) -> dict[str, bytes]:
    """key → PNG bytes of every tar in ``folder``."""
    import tarfile

    out = {}
    for tar in sorted(Path(folder).rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".png"):
                    out[m.name[:-4]] = tf.extractfile(m).read()
    return out


def busy() -> None:
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="2000,20000", help="sizes, comma-separated")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--load", type=int, default=0, help="busy processes running meanwhile")
    ap.add_argument("--work", type=Path, default=HERE / ".work-shard")
    args = ap.parse_args()
    sizes = [int(x) for x in args.n.split(",")]
    loaders = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.load)]
    for p in loaders:
        p.start()
    results = []
    try:
        for n in sizes:
            src = args.work / f"jpegs-{n}"
            make_inputs(src, n)
            runs: dict[str, list[dict]] = {"plain": [], "plain-draft": [], "gandata": []}
            outputs: dict[str, dict[str, bytes]] = {}
            for _ in range(args.pairs):
                for name in runs:
                    with tempfile.TemporaryDirectory(dir=args.work) as out, \
                            tempfile.TemporaryDirectory(dir=args.work) as cache:
                        if name == "gandata":
                            cmd = [sys.executable, "-m", "gandata", "shard", str(src), "--out", out, "--name", "b",
                                   "--size", "64"]
                            env = {**os.environ, "GANDATA_CACHE": cache}
                        else:
                            cmd = [sys.executable, "-c", PLAIN, str(src), out, "draft" if "draft" in name else ""]
                            env = None
                        runs[name].append(timed(cmd, env))
                        if name not in outputs:
                            outputs[name] = pngs(out)
            row = {"images": n, "load": args.load, "cores": os.cpu_count()}
            for name, rs in runs.items():
                wall = statistics.median(r["wall"] for r in rs)
                row[name] = {"images_per_s": round(n / wall, 1), "wall_s": round(wall, 2),
                             "cpu_s": round(statistics.median(r["cpu"] for r in rs), 2),
                             "peak_rss_mb": round(max(r["rss"] for r in rs))}
            same = {k: sum(outputs["gandata"].get(key) == png for key, png in outputs[k].items())
                    for k in ("plain", "plain-draft")}
            row["identical_pngs"] = {k: f"{v} of {len(outputs[k])}" for k, v in same.items()}
            g = row["gandata"]["wall_s"]
            row["gandata_vs_plain"] = round(row["plain"]["wall_s"] / g, 2)
            row["gandata_vs_plain_draft"] = round(row["plain-draft"]["wall_s"] / g, 2)
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        for p in loaders:
            p.kill()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
