"""Build the LEGO head detector's weights (gandata/models/lego-heads.pt) from public images and hand-marked boxes.

    python tools/build_lego_heads.py --catalogue DIR --photos DIR            # about an hour on 2 CPU cores
    python tools/build_lego_heads.py --catalogue DIR --photos DIR --minutes 5 --out /tmp/try.pt   # a quick try

What it learns from (docs/quality.md names the same):

* **BrickLink catalogue images** of minifigures (``https://img.bricklink.com/ItemImage/MN/0/<item>.png``, as also
  stored in the public repository github.com/darrenredmond/minifigure_id, ``data/minifigure_images/``): the items
  listed in ``benchmarks/heads/train-catalogue.jsonl`` and ``benchmarks/heads/catalogue-more.jsonl``, with the head
  boxes marked by hand in those files. ``--catalogue DIR`` is a folder holding ``<item>.png``; files it lacks are
  downloaded from BrickLink. BrickLink's images are for research use: they are read, never redistributed (only the
  weights are shipped). The 200 images of ``catalogue-fixtures.jsonl`` are NOT used: they are the held-out test.
* **Phone photos of minifigures** from github.com/hnky/dataset-lego-figures (``dataset/train/``), the ones listed in
  ``benchmarks/heads/train-photos.jsonl`` with their hand-marked head boxes (``--photos DIR``: a checkout of that
  repository). Its licence allows building models and forbids redistributing the photos; none is shipped. Its
  ``dataset/val`` and ``_test`` photos (``benchmarks/heads/photos.jsonl``) are NOT used: they are the held-out test.
* **Composites**: each catalogue figure separated from its background (:func:`gandata.heads.figure_mask`) and
  pasted, one to four at a time, at random sizes, positions, flips and colours, onto backgrounds drawn here
  (gradients, noise, stripes, bricks and blobs) or cut from the training photos away from their heads; blurred,
  noised and JPEG-compressed like phone photos. Among them, 80 figures drawn by ``gandata.demo.draw_minifig`` (the
  demo's own cartoon minifigures, so that the demo's crops work with the default locator).

Training: CenterNet-style targets (a Gaussian at each head centre on a 1/8 grid, the box's log size and offset
there), focal loss + L1, Adam with a cosine schedule, a fixed seed. Every input's sha256, the label files', the
steps and the losses go into ``<out>.json`` beside the weights; the weights are stored in half precision. When
``--out`` is the shipped path, the checksum in gandata/heads.py (``WEIGHTS_SHA256``) is updated too.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gandata import heads as H  # noqa: E402
from gandata.fileio import atomic_write  # noqa: E402

CATALOGUE_URL = "https://img.bricklink.com/ItemImage/MN/0/{item}"
PHOTOS_URL = "https://raw.githubusercontent.com/hnky/dataset-lego-figures/master/{file}"
SIDE = 288  # training canvas


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fetch(folder: Path | None, name: str, url: str) -> bytes:
    if folder is not None and (folder / name).is_file():
        return (folder / name).read_bytes()
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (a public https address)
        data = r.read()
    if folder is not None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return data


def decode(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    alpha = None
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        if rgba[..., 3].min() < 250:
            alpha = rgba[..., 3]
        white = np.full(rgba.shape[:2] + (3,), 255, np.float32)
        a = rgba[..., 3:4].astype(np.float32) / 255
        rgb = (rgba[..., :3] * a + white * (1 - a)).round().astype(np.uint8)
    else:
        rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb), alpha


class Figure:
    """A catalogue figure cut out of its image: RGBA crop and its heads relative to the crop."""

    @classmethod
    def drawn(cls, seed: int) -> Figure:
        """One of the demo's cartoon minifigures, cut out by its own transparency."""
        from gandata.demo import draw_minifig

        im, (x, y, w, h) = draw_minifig(seed, (240, 320), hat=seed % 2 == 1, scale=0.7 + 0.02 * (seed % 6),
                                        transparent=True)
        rgba = np.asarray(im)
        white = np.full(rgba.shape[:2] + (3,), 255, np.float32)
        a = rgba[..., 3:4].astype(np.float32) / 255
        rgb = (rgba[..., :3] * a + white * (1 - a)).round().astype(np.uint8)
        return cls(rgb, rgba[..., 3], [[x, y, x + w, y + h]])

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray | None, heads: list[list[int]]):
        mask = H.largest_figure(H.figure_mask(rgb, alpha))
        self.ok = False
        if mask is None or not heads:
            return
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        inside = [h for h in heads if x0 <= (h[0] + h[2]) / 2 <= x1 and y0 <= (h[1] + h[3]) / 2 <= y1]
        if not inside:
            return
        cover = np.mean([mask[h[1]:h[3], h[0]:h[2]].mean() for h in inside])
        frac = mask.mean()
        if cover < 0.6 or not 0.04 <= frac <= 0.8:
            return
        self.rgba = np.dstack([rgb, (mask * 255).astype(np.uint8)])[y0:y1, x0:x1]
        self.heads = [[h[0] - x0, h[1] - y0, h[2] - x0, h[3] - y0] for h in inside]
        self.ok = True


# ---------------------------------------------------------------------------------------------- backgrounds


def procedural(rng: np.random.Generator, side: int) -> np.ndarray:
    kind = rng.integers(6)
    c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ys, xs = np.mgrid[0:side, 0:side] / side
    if kind == 0:  # a gradient
        t = (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 1:  # noise at a scale
        s = int(rng.integers(2, 40))
        small = rng.integers(0, 256, (s, s, 3)).astype(np.float32)
        img = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC)
    elif kind == 2:  # stripes / planks
        f = rng.uniform(3, 30)
        t = (np.sin((xs if rng.random() < 0.5 else ys) * f * 6.28) + 1) / 2
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind == 3:  # bricks: a grid of studs and plates
        img = np.empty((side, side, 3), np.float32)
        img[:] = c1
        step = int(rng.integers(8, 40))
        for y in range(0, side, step):
            for x in range(0, side, step):
                cv2.circle(img, (x + step // 2, y + step // 2), max(2, step // 3),
                           tuple(float(v) for v in np.clip(c1 + rng.integers(-40, 40, 3), 0, 255)), -1)
    elif kind == 4:  # blobs and rectangles: clutter
        img = np.empty((side, side, 3), np.float32)
        img[:] = c1
        for _ in range(int(rng.integers(5, 30))):
            col = tuple(float(v) for v in rng.integers(0, 256, 3))
            x, y = (int(v) for v in rng.integers(0, side, 2))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), int(rng.integers(3, side // 4)), col, -1)
            else:
                cv2.rectangle(img, (x, y), (x + int(rng.integers(5, side // 2)), y + int(rng.integers(5, side // 2))),
                              col, -1)
    else:  # plain, near white or grey (the catalogue's)
        v = rng.integers(150, 256)
        img = np.full((side, side, 3), v, np.float32) + rng.normal(0, 2, (side, side, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_background(rng: np.random.Generator, photos: list[tuple[np.ndarray, list]], side: int) -> np.ndarray | None:
    rgb, heads = photos[int(rng.integers(len(photos)))]
    h, w = rgb.shape[:2]
    for _ in range(10):
        s = int(rng.integers(side // 3, min(h, w)))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        if all(x + s <= b[0] or b[2] <= x or y + s <= b[1] or b[3] <= y for b in heads):
            return cv2.resize(rgb[y:y + s, x:x + s], (side, side), interpolation=cv2.INTER_LINEAR)
    return None


# ----------------------------------------------------------------------------------------------- samples


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = img.astype(np.float32)
    out = out * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)  # contrast, brightness
    out = out * rng.uniform(0.85, 1.15, 3)  # white balance
    return np.clip(out, 0, 255).astype(np.uint8)


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.4:
        k = int(rng.integers(1, 3)) * 2 + 1
        img = cv2.GaussianBlur(img, (k, k), 0)
    if rng.random() < 0.3:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, enc = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        img = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(img)


def place(img: np.ndarray, heads: list[list[int]], rng: np.random.Generator, side: int,
          fill: int | None = None) -> tuple[np.ndarray, list[list[float]]]:
    """``img`` scaled (a random share of the canvas) and placed on a ``side`` canvas; its heads moved along."""
    h, w = img.shape[:2]
    target = rng.uniform(0.5, 1.3) * side / max(h, w)
    nw, nh = max(1, int(w * target)), max(1, int(h * target))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if target < 1 else cv2.INTER_LINEAR)
    canvas = np.full((side, side, 3), fill if fill is not None else int(small[0, 0].mean()), np.uint8)
    x = int(rng.integers(min(0, side - nw), max(0, side - nw) + 1))
    y = int(rng.integers(min(0, side - nh), max(0, side - nh) + 1))
    sx0, sy0, dx0, dy0 = max(0, -x), max(0, -y), max(0, x), max(0, y)
    cw, ch = min(nw - sx0, side - dx0), min(nh - sy0, side - dy0)
    canvas[dy0:dy0 + ch, dx0:dx0 + cw] = small[sy0:sy0 + ch, sx0:sx0 + cw]
    out = [[b[0] * target + x, b[1] * target + y, b[2] * target + x, b[3] * target + y] for b in heads]
    return canvas, out


def composite(rng: np.random.Generator, figures: list[Figure], photos: list, side: int) -> tuple:
    bg = photo_background(rng, photos, side) if photos and rng.random() < 0.5 else None
    canvas = procedural(rng, side) if bg is None else bg
    canvas = canvas.astype(np.float32)
    boxes = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3, 4]))):
        f = figures[int(rng.integers(len(figures)))]
        rgba = f.rgba[:, ::-1] if rng.random() < 0.5 else f.rgba
        heads = f.heads if rgba is f.rgba else [[rgba.shape[1] - b[2], b[1], rgba.shape[1] - b[0], b[3]]
                                                 for b in f.heads]
        fh, fw = rgba.shape[:2]
        scale = rng.uniform(0.25, 1.0) * side / fh
        nw, nh = max(2, int(fw * scale)), max(2, int(fh * scale))
        small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
        small[..., :3] = jitter(small[..., :3], rng)
        x, y = int(rng.integers(-nw // 4, side - 3 * nw // 4 + 1)), int(rng.integers(-nh // 5, side - nh // 2 + 1))
        sx0, sy0, dx0, dy0 = max(0, -x), max(0, -y), max(0, x), max(0, y)
        cw, ch = min(nw - sx0, side - dx0), min(nh - sy0, side - dy0)
        if cw <= 0 or ch <= 0:
            continue
        a = small[sy0:sy0 + ch, sx0:sx0 + cw, 3:4].astype(np.float32) / 255
        region = canvas[dy0:dy0 + ch, dx0:dx0 + cw]
        canvas[dy0:dy0 + ch, dx0:dx0 + cw] = region * (1 - a) + small[sy0:sy0 + ch, sx0:sx0 + cw, :3] * a
        for b in heads:
            nb = [b[0] * scale + x, b[1] * scale + y, b[2] * scale + x, b[3] * scale + y]
            # a head cut by the canvas's edge is kept only when most of it is inside
            inside = (min(nb[2], side) - max(nb[0], 0)) * (min(nb[3], side) - max(nb[1], 0))
            if inside > 0.6 * (nb[2] - nb[0]) * (nb[3] - nb[1]):
                boxes = [o for o in boxes if not _covered(o, nb)] + [nb]
    return degrade(np.clip(canvas, 0, 255).astype(np.uint8), rng), boxes


def _covered(old: list[float], new: list[float]) -> bool:
    """A head mostly hidden behind a figure pasted over it is no longer a target."""
    iw = max(0, min(old[2], new[2]) - max(old[0], new[0]))
    ih = max(0, min(old[3], new[3]) - max(old[1], new[1]))
    return iw * ih > 0.5 * (old[2] - old[0]) * (old[3] - old[1])


def targets(boxes: list[list[float]], side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heat map (1×g×g), the regression targets (4×g×g: log w, log h in cells, offset x, y) and their mask."""
    g = side // H.STRIDE
    heat = np.zeros((g, g), np.float32)
    reg = np.zeros((4, g, g), np.float32)
    mask = np.zeros((g, g), np.float32)
    ys, xs = np.mgrid[0:g, 0:g]
    for x0, y0, x1, y1 in boxes:
        w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2 / H.STRIDE, (y0 + y1) / 2 / H.STRIDE
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < g and 0 <= iy < g):
            continue
        sigma = max(0.7, 0.12 * math.sqrt(w * h) / H.STRIDE)
        heat = np.maximum(heat, np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma)))
        reg[:, iy, ix] = (math.log(w / H.STRIDE), math.log(h / H.STRIDE), cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return heat[None], reg, mask


class Samples:
    """An endless, seeded stream of training images with their head boxes."""

    def __init__(self, catalogue: list[tuple[np.ndarray, list]], figures: list[Figure], photos: list, seed: int):
        self.catalogue, self.figures, self.photos, self.seed = catalogue, figures, photos, seed

    def get(self, index: int) -> tuple[np.ndarray, list[list[float]]]:
        rng = np.random.default_rng([self.seed, index])
        r = rng.random()
        if r < 0.3 or (r < 0.55 and not self.photos):  # a catalogue image as it is, moved and scaled
            rgb, heads = self.catalogue[int(rng.integers(len(self.catalogue)))]
            img, boxes = place(jitter(rgb, rng), heads, rng, SIDE, fill=int(np.median(rgb[0])))
            img = degrade(img, rng) if rng.random() < 0.3 else img
        elif r < 0.55:  # a phone photo, cropped around, scaled
            rgb, heads = self.photos[int(rng.integers(len(self.photos)))]
            img, boxes = place(jitter(rgb, rng), heads, rng, SIDE)
            img = degrade(img, rng) if rng.random() < 0.3 else img
        else:
            img, boxes = composite(rng, self.figures, self.photos, SIDE)
        if rng.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
            boxes = [[SIDE - b[2], b[1], SIDE - b[0], b[3]] for b in boxes]
        boxes = [b for b in boxes if b[2] > 0 and b[3] > 0 and b[0] < SIDE and b[1] < SIDE]
        return img, boxes


def _dataset(samples: Samples):
    import torch

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            i, step = (info.id, info.num_workers) if info else (0, 1)
            while True:
                img, boxes = samples.get(i)
                heat, reg, mask = targets(boxes, SIDE)
                x = img.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0
                yield torch.from_numpy(x), torch.from_numpy(heat), torch.from_numpy(reg), torch.from_numpy(mask)
                i += step

    return Stream()


def focal(logits, heat):
    import torch

    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg = 1 - pos
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p ** 2 * (1 - heat) ** 4 * neg).sum()
    return (pos_loss + neg_loss) / pos.sum().clamp(min=1)


def train(samples: Samples, minutes: float, steps: int, batch: int, seed: int, log, snapshot=None) -> tuple:
    import torch

    torch.manual_seed(seed)
    net = H.new_model()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-5)
    loader = torch.utils.data.DataLoader(_dataset(samples), batch_size=batch, num_workers=1,
                                         persistent_workers=True, prefetch_factor=4)
    t0 = time.monotonic()
    history, step = [], 0
    lr0 = 2e-3
    for x, heat, reg, mask in loader:
        frac = max(step / steps, (time.monotonic() - t0) / (60 * minutes))  # the schedule ends with either budget
        for g in opt.param_groups:
            g["lr"] = lr0 * (0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))) * min(1.0, (step + 1) / 200)
        out = net(x)
        lh = focal(out[:, 0:1], heat)
        m = mask[:, None]
        n = mask.sum().clamp(min=1)
        lsize = (torch.abs(out[:, 1:3] - reg[:, 0:2]) * m).sum() / n
        loff = (torch.abs(out[:, 3:5] - reg[:, 2:4]) * m).sum() / n
        loss = lh + 0.5 * lsize + lsize.new_tensor(1.0) * loff
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            history.append({"step": step, "loss": round(loss.item(), 4), "heat": round(lh.item(), 4),
                            "size": round(lsize.item(), 4), "offset": round(loff.item(), 4),
                            "minutes": round((time.monotonic() - t0) / 60, 1)})
            log(json.dumps(history[-1]))
        if snapshot is not None and step % 500 == 0:
            snapshot(net)
        if frac >= 1.0:
            break
    net.eval()
    return net, history, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catalogue", type=Path, help="Folder of BrickLink catalogue images <item>.png (else "
                    "downloaded from BrickLink).")
    ap.add_argument("--photos", type=Path, help="A checkout of github.com/hnky/dataset-lego-figures (else "
                    "downloaded from GitHub).")
    ap.add_argument("--labels", type=Path, default=ROOT / "benchmarks" / "heads",
                    help="The folder of the hand-marked boxes (default: the repository's benchmarks/heads).")
    ap.add_argument("--out", type=Path, default=H.WEIGHTS)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    heads_dir = args.labels
    label_files = [heads_dir / "catalogue-more.jsonl", heads_dir / "train-catalogue.jsonl",
                   heads_dir / "train-photos.jsonl"]
    provenance: dict = {"labels": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in label_files
                                   if f.exists()}, "images": {}}
    catalogue, figures, photos = [], [], []
    for f in label_files[:2]:
        if not f.exists():
            continue
        for row in rows_of(f):  # a figure without a head (a droid of bricks) stays: it teaches "no head here"
            data = fetch(args.catalogue, row["file"], CATALOGUE_URL.format(item=row["file"]))
            provenance["images"][row["file"]] = hashlib.sha256(data).hexdigest()
            rgb, alpha = decode(data)
            catalogue.append((rgb, row["heads"]))
            fig = Figure(rgb, alpha, row["heads"]) if row["heads"] else None
            if fig is not None and fig.ok:
                figures.append(fig)
    if label_files[2].exists():
        for row in rows_of(label_files[2]):
            data = fetch(args.photos, row["file"], PHOTOS_URL.format(file=row["file"]))
            provenance["images"][row["file"]] = hashlib.sha256(data).hexdigest()
            photos.append((decode(data)[0], row["heads"]))
    drawn = [f for f in (Figure.drawn(seed) for seed in range(80)) if f.ok]
    print(f"{len(catalogue)} catalogue images ({len(figures)} figures cut out), {len(photos)} photos, "
          f"{len(drawn)} drawn figures", flush=True)
    figures += drawn
    t0 = time.monotonic()
    def weights(net) -> bytes:
        state = {"model": {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()},
                 "input": H.INPUT, "stride": H.STRIDE}
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()

    partial = Path(tempfile.gettempdir()) / f"{args.out.stem}.partial.pt"  # never in the package folder

    def snapshot(net) -> None:  # the weights so far, to look at while it trains (net is in train mode: copy it)
        import copy

        atomic_write(partial, weights(copy.deepcopy(net).eval()))

    net, history, steps = train(Samples(catalogue, figures, photos, args.seed), args.minutes, args.steps, args.batch,
                                args.seed, lambda s: print(s, flush=True), snapshot)
    blob = weights(net)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, blob)
    digest = hashlib.sha256(blob).hexdigest()
    meta = {"weights": args.out.name, "sha256": digest, "bytes": len(blob), "steps": steps, "batch": args.batch,
            "seed": args.seed, "minutes": round((time.monotonic() - t0) / 60, 1), "torch": torch.__version__,
            "catalogue_images": len(catalogue), "figures_cut_out": len(figures), "photos": len(photos),
            "history": history[-20:], **provenance}
    atomic_write(args.out.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True).encode())
    if args.out.resolve() == H.WEIGHTS.resolve():
        src = Path(H.__file__)
        src.write_text(re.sub(r"^WEIGHTS_SHA256 = .*$", f'WEIGHTS_SHA256 = "{digest}"', src.read_text(), count=1,
                              flags=re.M))
    print(f"wrote {args.out} ({len(blob)} bytes, sha256 {digest}) after {steps} steps")


if __name__ == "__main__":
    main()
