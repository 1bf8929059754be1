"""Benchmark: images/s of `gandata crop anime-faces` vs the reference detector loop, on the same images.

    python benchmarks/crop.py                       # the 12 real tiles × 40 copies, 3 rounds
    python benchmarks/crop.py --images DIR --copies 1

The reference is nagadomi's example as a plain single-process loop: imread → gray → equalizeHist →
detectMultiScale(scaleFactor 1.1, minNeighbors 5, minSize 24) at full size, OpenCV's default threads. gandata runs
its whole command (start-up, decode, detect, crop, resize, encode, write), at its defaults (--min-face 64) and with
--min-face 24 (everything the reference can find). Faces are compared one by one: each reference box of at least
--min-face pixels is matched to a gandata box by overlap (IoU ≥ 0.9); misses, extras and the largest coordinate
difference are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "fixtures"


def reference(files: list[Path], cascade: Path) -> tuple[float, dict[str, list]]:
    c = cv2.CascadeClassifier(str(cascade))
    found = {}
    t0 = time.perf_counter()
    for f in files:
        gray = cv2.equalizeHist(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2GRAY))
        found[f.stem] = sorted(tuple(int(v) for v in b) for b in c.detectMultiScale(gray, 1.1, 5, minSize=(24, 24)))
    return time.perf_counter() - t0, found


def iou(a: tuple, b: tuple) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def compare(ref: dict[str, list], ours: dict[str, list], min_face: int) -> dict:
    """Face by face: reference boxes of at least ``min_face`` px matched to gandata's by overlap (IoU ≥ 0.9)."""
    matched = missed = extra = 0
    worst = 0
    for key, boxes in ref.items():
        want = [b for b in boxes if b[2] >= min_face]
        got = list(ours.get(key, []))
        for w in want:
            best = max(got, key=lambda g: iou(g, w), default=None)
            if best is not None and iou(best, w) >= 0.9:
                matched += 1
                worst = max(worst, max(abs(x - y) for x, y in zip(best, w)))
                got.remove(best)
            else:
                missed += 1
        extra += len(got)
    return {"reference_faces_at_least_min_face": matched + missed, "matched": matched, "missed": missed,
            "extra": extra, "largest_box_difference_px": worst}


def run_gandata(src: Path, out: Path, cascade: Path, extra: list[str]) -> tuple[float, dict, dict[str, list]]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "gandata.cli", "crop", "anime-faces", "--src", str(src), "--out",
                          str(out), "--cascade", str(cascade), "--json", *extra], capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    found: dict[str, list] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        found.setdefault(row["parent"], []).append(tuple(row["bbox"]))
    return dt, json.loads(run.stdout), found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=SHARED / "anime")
    ap.add_argument("--cascade", type=Path, default=SHARED / "cascades" / "lbpcascade_animeface.xml")
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / ".work-crop")
    args = ap.parse_args()

    src = args.work / "images"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    originals = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    for i in range(args.copies):
        for p in originals:
            shutil.copy(p, src / f"c{i:03d}_{p.name}")
    files = sorted(src.iterdir())
    n = len(files)
    configs = {"gandata (defaults: --min-face 64)": [], "gandata --min-face 24": ["--min-face", "24"]}
    times: dict[str, list[float]] = {"reference": [], **{k: [] for k in configs}}
    found: dict[str, dict] = {}
    rates: dict[str, float] = {}
    ref_found: dict[str, list] = {}
    for _ in range(args.rounds):
        dt, ref_found = reference(files, args.cascade)
        times["reference"].append(dt)
        for name, extra in configs.items():
            dt, summary, found[name] = run_gandata(src, args.work / "faces", args.cascade, extra)
            times[name].append(dt)
            rates[name] = summary["rate"]
    ref_med = statistics.median(times["reference"])
    result = {
        "images": n, "cores": os.cpu_count(), "rounds": args.rounds,
        "reference": {"median_s": round(ref_med, 3), "img_per_s": round(n / ref_med, 1),
                      "faces": sum(len(v) for v in ref_found.values()),
                      "images_with_faces": sum(1 for v in ref_found.values() if v)},
    }
    for name, extra in configs.items():
        med = statistics.median(times[name])
        min_face = int(extra[1]) if extra else 64
        result[name] = {"median_s": round(med, 3), "img_per_s": round(n / med, 1), "img_per_s_in_process": rates[name],
                        "speedup": round(ref_med / med, 2), "faces": sum(len(v) for v in found[name].values()),
                        "images_with_faces": len(found[name]), **compare(ref_found, found[name], min_face)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
