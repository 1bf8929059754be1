"""How well ``crop lego-faces`` finds the heads of real minifigures: a locator scored against hand-marked head boxes.

    python benchmarks/lego_heads.py --set benchmarks/heads/catalogue-fixtures.jsonl \
        --images ../shared/fixtures/lego/bricklink
    python benchmarks/lego_heads.py --set benchmarks/heads/photos.jsonl --images PHOTOS --locator learned,auto
    python benchmarks/lego_heads.py … --out /tmp/heads       # + crops.png and misses.png to look at

``--set`` is a JSONL file of hand-marked boxes (``{"file", "heads": [[x0, y0, x1, y1], …], "bg", "tags"}``, see
benchmarks/heads/README.md for who marked them, how, and where the images come from); ``--images`` is the folder
the files are in (the images are not in the repository: BrickLink's are for research use, the photos' licence
forbids redistribution). Each locator is run on each image exactly as ``gandata crop lego-faces --locator L`` runs
it (the same decode, options and crop geometry: ``--margin 0.2``), and its crops are matched to the marked heads:

* a crop **holds** a head when at least 95 % of the head box lies inside the crop box and the head's longer side is
  at least 45 % of the crop's side (the head fills a sensible share of it: not a crop of the whole figure);
* **recall**: the share of marked heads that some crop holds (each crop holds at most one head);
* **precision**: the share of crops that hold a head (a crop of an inset, a hand, a shoulder or an empty corner does
  not);
* **images with a crop**, and the **ms per image** (one worker thread, decode included).

Rows per background (as marked: white, light, gradient, other, photo; ``transparent`` when ``--transparent`` adds
each white-background image once more with its background made transparent) and in all. ``--json`` writes every
number; ``--out DIR`` writes contact sheets: every crop (green: holds a head, red: does not) and every miss (the
marked head in blue on the image, the crops made in red).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def holds(crop: list[int], head: list[int]) -> bool:
    """gandata.heads.holds: 95 % of the head inside the crop, the head's longer side 45 % of the crop's side."""
    try:
        from gandata.heads import holds as holds_head
    except ImportError:  # measuring a gandata from before heads.py (--locator before): the same rule, written out
        cx0, cy0, cx1, cy1 = crop
        hx0, hy0, hx1, hy1 = head
        inter = max(0, min(cx1, hx1) - max(cx0, hx0)) * max(0, min(cy1, hy1) - max(cy0, hy0))
        area = (hx1 - hx0) * (hy1 - hy0)
        return area > 0 and inter >= 0.95 * area and max(hx1 - hx0, hy1 - hy0) >= 0.45 * max(cx1 - cx0, cy1 - cy0)
    return holds_head(tuple(crop), tuple(head))


def match(crops: list[list[int]], heads: list[list[int]]) -> tuple[list[int | None], set[int]]:
    """Each crop's head (index, or None), each head held at most once; the heads held."""
    taken: set[int] = set()
    out: list[int | None] = []
    for c in crops:
        best = next((i for i, h in enumerate(heads) if i not in taken and holds(c, h)), None)
        if best is not None:
            taken.add(best)
        out.append(best)
    return out, taken


def transparent_copy(data: bytes) -> bytes | None:
    """The image with its white background made transparent (flood fill from the border, near-white only): a
    stand-in for BrickLink's transparent PNGs, which the marked sets do not hold."""
    import cv2

    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    h, w = rgb.shape[:2]
    mask = np.zeros((h + 2, w + 2), np.uint8)
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
    for x, y in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
        if rgb[y, x].min() >= 235 and not mask[y + 1, x + 1]:
            cv2.floodFill(rgb.copy(), mask, (x, y), 0, (12, 12, 12), (12, 12, 12), flags)
    bg = mask[1:-1, 1:-1] > 0
    if bg.mean() < 0.2:
        return None
    alpha = np.where(bg, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, "PNG")
    return buf.getvalue()


class Locator:
    """One ``--locator`` of ``crop lego-faces``, with the command's defaults."""

    def __init__(self, name: str, cascade: str | None, threshold: float | None):
        from gandata import crop

        self.crop = crop
        extra = {"threshold": threshold} if threshold is not None else {}
        locator = {"before": "auto"}.get(name, name)
        self.opts = crop.CropOptions(lego=True, locator=locator, size=64, min_face=24, **extra)
        path = None
        if locator != "layout" and "learned" not in locator:
            path = cascade
        self.detector = crop.Detector(path, self.opts)

    def __call__(self, data: bytes) -> list[list[int]]:
        white = (255, 255, 255)
        r = self.crop._process(data, "k", self.opts, self.detector, white, white)
        return [list(c["crop_box"]) for c in r.get("crops", [])]


def run(rows: list[dict], images: Path, locator: Locator, transparent: bool) -> list[dict]:
    import cv2

    cv2.setNumThreads(1)
    out = []
    for row in rows:
        data = (images / row["file"]).read_bytes()
        variants = [(row["bg"], data)]
        if transparent and row["bg"] == "white":
            t = transparent_copy(data)
            if t is not None:
                variants.append(("transparent", t))
        for bg, blob in variants:
            t0 = time.perf_counter()
            crops = locator(blob)
            ms = (time.perf_counter() - t0) * 1000
            owners, held = match(crops, row["heads"])
            out.append({"file": row["file"], "bg": bg, "heads": row["heads"], "crops": crops, "owners": owners,
                        "held": sorted(held), "ms": ms, "data": blob})
    return out


def score(results: list[dict]) -> dict:
    heads = sum(len(r["heads"]) for r in results)
    crops = sum(len(r["crops"]) for r in results)
    held = sum(len(r["held"]) for r in results)
    good = sum(o is not None for r in results for o in r["owners"])
    return {"images": len(results), "heads": heads, "crops": crops,
            "images_with_crop": sum(bool(r["crops"]) for r in results),
            "recall": held / heads if heads else None, "precision": good / crops if crops else None,
            "ms_per_image": float(np.median([r["ms"] for r in results])) if results else None}


def sheets(results: list[dict], out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cells, misses = [], []
    for r in results:
        im = Image.open(io.BytesIO(r["data"])).convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
        for c, owner in zip(r["crops"], r["owners"]):
            cell = im.crop(tuple(c)).resize((96, 96))
            ImageDraw.Draw(cell).rectangle((0, 0, 95, 95), outline=(0, 200, 0) if owner is not None else (230, 0, 0),
                                           width=3)
            cells.append(cell)
        if len(r["held"]) < len(r["heads"]) or any(o is None for o in r["owners"]):
            shown = im.copy()
            d = ImageDraw.Draw(shown)
            lw = max(2, shown.width // 120)
            for h in r["heads"]:
                d.rectangle(tuple(h), outline=(0, 80, 255), width=lw)
            for c in r["crops"]:
                d.rectangle(tuple(c), outline=(230, 0, 0), width=lw)
            shown.thumbnail((160, 160))
            misses.append(shown)
    for cellset, fname, size in ((cells, f"{name}-crops.png", 96), (misses, f"{name}-misses.png", 160)):
        cols = 16 if size == 96 else 10
        rows_n = max(1, (len(cellset) + cols - 1) // cols)
        sheet = Image.new("RGB", (cols * (size + 4), rows_n * (size + 4)), (255, 255, 255))
        for i, c in enumerate(cellset):
            sheet.paste(c, ((i % cols) * (size + 4), (i // cols) * (size + 4)))
        sheet.save(out / fname)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", action="append", required=True, help="Hand-marked boxes (JSONL); repeatable.")
    ap.add_argument("--images", action="append", required=True, help="The folder of each --set's images.")
    ap.add_argument("--locator", default="auto", help="Comma-separated --locator values (before: the cascade, "
                    "then the layout locator, on the code being run).")
    ap.add_argument("--cascade", default=str(Path(__file__).resolve().parents[2] / "shared" / "fixtures" /
                                             "cascades" / "lbpcascade_animeface.xml"))
    ap.add_argument("--threshold", type=float, help="--threshold of crop lego-faces (default: its own).")
    ap.add_argument("--weights", help="The learned locator's weights (default: the shipped ones), e.g. a file "
                    "tools/build_lego_heads.py wrote.")
    ap.add_argument("--transparent", action="store_true", help="Also score white images made transparent.")
    ap.add_argument("--out", help="Write contact sheets of the crops and the misses here.")
    ap.add_argument("--json", help="Write every number here.")
    args = ap.parse_args()
    if len(args.images) != len(args.set):
        sys.exit("give one --images per --set")
    if args.weights:
        from gandata import heads

        heads.WEIGHTS, heads.WEIGHTS_SHA256 = Path(args.weights), None
    report = {}
    for name in args.locator.split(","):
        locator = Locator(name, args.cascade, args.threshold)
        results = []
        for set_file, folder in zip(args.set, args.images):
            rows = [json.loads(line) for line in Path(set_file).read_text().splitlines() if line.strip()]
            results += run(rows, Path(folder), locator, args.transparent)
        by_bg = defaultdict(list)
        for r in results:
            by_bg[r["bg"]].append(r)
        report[name] = {"all": score(results), **{bg: score(rs) for bg, rs in sorted(by_bg.items())}}
        if args.out:
            sheets(results, Path(args.out), name)
    print("| locator | images | heads | crops | images with a crop | recall | precision | ms / image |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    def pct(v: float | None) -> str:
        return f"{100 * v:.1f} %" if v is not None else "–"

    for name, rows in report.items():
        for bg, s in rows.items():
            print(f"| {name} | {bg}: {s['images']} | {s['heads']} | {s['crops']} | {s['images_with_crop']} | "
                  f"{pct(s['recall'])} | {pct(s['precision'])} | {s['ms_per_image']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
