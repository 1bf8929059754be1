"""Byte identity of every output across a change of code: run a fixed set of commands, hash what they wrote.

    python benchmarks/identity.py --out /tmp/before.json          # on the old code
    python benchmarks/identity.py --out /tmp/after.json --compare /tmp/before.json

Needs gandata installed (``pip install -e '.[test,ray]'``) and ../shared/fixtures. The commands cover each stage's
outputs: crop (anime faces with the cascade, LEGO heads by layout, contact sheets), dedupe (report, grid), shard
(local and Ray, exact and near dedupe, labels, a foreign tar with mixed-type JSON, background and pad colours,
jpg/webp), inspect (a sheet), export (StyleGAN zip, ImageFolder), every trainer for a few steps (checkpoints' tensors,
sample grids, metrics lines without their clocks) and sample. Files whose content is a clock (stats, summaries'
seconds) are compared with their time fields left out.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
CLOCKS = {"seconds", "rate", "elapsed", "time", "started", "finished", "wall", "images_per_s", "kimg_per_h", "when",
          "sec_per_kimg", "s_per_kimg", "timestamp", "date", "created", "tasks", "duration", "img_per_s", "cpu_seconds",
          "durations", "throughput",
          "job", "content"}  # dataset.json's job and its inputs' content digests: over manifests whose rows hold times
GENERATION = re.compile(r"/gen-[0-9a-f]{16}/")  # a shard set's generation folder: a digest of its tars, compared apart


def drawn(seed: int, size: tuple[int, int], mode: str = "RGB"):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new(mode, size, tuple(rng.randrange(256) for _ in range(len(mode))))
    d = ImageDraw.Draw(im)
    for _ in range(5):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        d.ellipse((x0, y0, x0 + rng.randrange(8, 50), y0 + rng.randrange(8, 50)),
                  fill=tuple(rng.randrange(256) for _ in range(len(mode))))
    return im


def inputs(root: Path) -> None:
    from gandata.datasets import Dataset

    with Dataset.create(root / "labelled") as ds:  # a dataset folder: labels, mixed-type fields, RGBA, a duplicate
        for i in range(150):
            im = drawn(i % 140, (60 + i % 7, 50), "RGBA" if i % 5 == 0 else "RGB")
            buf = io.BytesIO()
            im.save(buf, "PNG")
            ds.add(f"k{i:03d}", buf.getvalue(), "png", {"width": im.width, "height": im.height, "source": "id",
                                                      "kind": ["ant", "bee", "cow"][i % 3],
                                                      "score": i if i % 2 else i + 0.5, "meta": {"n": i} if i % 4 else
                                                      "none"})
    with tarfile.open(root / "foreign.tar", "w") as tf:  # a tar as other tools write one
        for i in range(40):
            buf = io.BytesIO()
            drawn(500 + i, (80, 64)).save(buf, "JPEG", quality=90)
            for name, data in ((f"s{i:02d}.jpg", buf.getvalue()),
                               (f"s{i:02d}.json", json.dumps({"x": i if i % 3 else str(i), "y": None}).encode())):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    (root / "anime").mkdir()
    for f in sorted((FIXTURES / "anime").glob("*.jpg")):
        (root / "anime" / f.name).write_bytes(f.read_bytes())
    (root / "figs").mkdir()
    for i in range(12):  # minifig-like drawings for the layout locator
        drawn(900 + i, (200, 240)).save(root / "figs" / f"fig{i:02d}.png")


def commands(root: Path) -> list[list[str]]:
    cascade = str(FIXTURES / "cascades" / "lbpcascade_animeface.xml")
    L, o = str(root / "labelled"), str(root / "out")
    cmds = [
        ["crop", "anime-faces", "--src", str(root / "anime"), "--out", f"{o}/faces", "--cascade", cascade,
         "--size", "64", "--debug-grid", f"{o}/faces-grid.png"],
        ["crop", "lego-faces", "--src", str(root / "figs"), "--out", f"{o}/heads", "--locator", "layout",
         "--size", "48"],
        ["dedupe", L, str(root / "anime"), "--report", f"{o}/dups.jsonl", "--grid", f"{o}/dups.png",
         "--threshold", "12"],
        ["shard", L, "--out", f"{o}/s1", "--name", "s1", "--size", "32", "--label-field", "kind", "--val-fraction",
         "0.2", "--min-shards", "3"],
        ["shard", L, str(root / "foreign.tar"), "--out", f"{o}/s2", "--name", "s2", "--size", "48", "--dedupe",
         "near", "--threshold", "10", "--background", "#102030", "--resize", "pad", "--pad-color", "red",
         "--format", "jpg", "--quality", "80"],
        ["shard", f"{o}/faces", "--out", f"{o}/s3", "--name", "s3", "--size", "64", "--format", "webp",
         "--resize", "keep-ratio", "--no-draft", "--seed", "3"],
        ["shard", L, str(root / "foreign.tar"), "--out", f"{o}/s4", "--name", "s1", "--size", "32", "--label-field",
         "kind", "--val-fraction", "0.2", "--min-shards", "3", "--engine", "ray", "--task-size", "40"],
        ["inspect", f"{o}/s1", "--grid", f"{o}/inspect.png", "--grid-n", "16", "--cell", "32"],
        ["export", f"{o}/s1", "--out", f"{o}/s1.zip"],
        ["export", f"{o}/s1", "--out", f"{o}/s1-folder", "--format", "imagefolder", "--split", "train"],
    ]
    small = ["--kimg", "0.192", "--batch", "16", "--ngf", "8", "--ndf", "8", "--snap-kimg", "0.096", "--log-kimg",
             "0.032", "--workers", "0", "--device", "cpu", "--grid", "9", "--threads", "1", "--shuffle", "50"]
    for kind in ("dcgan", "lsgan", "wgan", "wgan-gp", "cdcgan"):
        cmds.append(["train", kind, "--shards", f"{o}/s1", "--out", f"{o}/run-{kind}", *small])
    cmds.append(["train", "wgan-gp", "--shards", f"{o}/s1", "--out", f"{o}/run-wgan-gp", *small, "--kimg", "0.288",
                 "--resume", "auto"])
    cmds.append(["sample", f"{o}/run-cdcgan", "--n", "12", "--out", f"{o}/cd-sample.png", "--device", "cpu"])
    cmds.append(["sample", f"{o}/run-dcgan", "--n", "10", "--out", f"{o}/dc-sample.png", "--device", "cpu",
                 "--seed", "4"])
    return cmds


def strip_clocks(v):
    if isinstance(v, dict):
        return {k: strip_clocks(x) for k, x in v.items() if k not in CLOCKS}
    if isinstance(v, list):
        return [strip_clocks(x) for x in v]
    return v


def digest(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".pt":  # a checkpoint: its tensors and values, not the zip's layout
        import torch

        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        h = hashlib.sha256()

        def walk(x, where=""):
            if isinstance(x, torch.Tensor):
                h.update(where.encode() + x.detach().cpu().contiguous().numpy().tobytes())
            elif isinstance(x, dict):
                for k in sorted(x, key=str):
                    if str(k) not in CLOCKS:
                        walk(x[k], f"{where}/{k}")
            elif isinstance(x, (list, tuple)):
                for i, y in enumerate(x):
                    walk(y, f"{where}/{i}")
            else:
                h.update(f"{where}={x!r}".encode())

        walk(state)
        return h.hexdigest()
    if path.suffix == ".zip":  # its members, not their dates
        import zipfile

        with zipfile.ZipFile(path) as z:
            return hashlib.sha256(b"".join(i.filename.encode() + z.read(i) for i in z.infolist())).hexdigest()
    if path.suffix in (".json", ".jsonl"):
        try:
            rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()] \
                if path.suffix == ".jsonl" else [json.loads(data)]
            return hashlib.sha256(json.dumps(strip_clocks(rows), sort_keys=True).encode()).hexdigest()
        except ValueError:
            pass
    return hashlib.sha256(data).hexdigest()


SKIP = {"stats.json", "summary.json", "train.log", "run.lock", ".lock", "options.json"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="Write {file: sha256} here.")
    ap.add_argument("--compare", help="An earlier --out to compare with.")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "gd-identity"),
                    help="Work here (emptied first): paths are recorded in outputs, so both runs need the same one.")
    args = ap.parse_args()
    root = Path(args.root)
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    env = {**os.environ, "GANDATA_CACHE": str(root / "cache"), "RAY_AUTH_MODE": "disabled", "PYTHONHASHSEED": "0"}
    inputs(root)
    for cmd in commands(root):
        r = subprocess.run([sys.executable, "-m", "gandata", *cmd], env=env, cwd=root, capture_output=True, text=True)
        print(f"{r.returncode} gandata {' '.join(cmd)[:110]}", flush=True)
        if r.returncode:
            sys.exit(r.stdout[-2000:] + r.stderr[-3000:])
    found = {}
    for p in sorted((root / "out").rglob("*")):
        if p.is_file() and p.name not in SKIP and ".work" not in p.parts:
            found[GENERATION.sub("/", str(p.relative_to(root / "out")))] = digest(p)
    Path(args.out).write_text(json.dumps(found, indent=1, sort_keys=True))
    print(f"{len(found)} files hashed → {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        diff = sorted(k for k in before.keys() | found.keys() if before.get(k) != found.get(k))
        for k in diff:
            print(f"  differs: {k} ({'missing now' if k not in found else 'new' if k not in before else 'bytes'})")
        print(f"{len(before)} before, {len(found)} now, {len(diff)} differ")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(root)


if __name__ == "__main__":
    main()
