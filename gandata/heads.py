"""Where the heads of LEGO minifigures are: a box around each whole head — hair, hat, helmet or hood included, thin
protrusions (antennae, plumes, blades) not — with a confidence, for ``gandata crop lego-faces``.

Three locators give the same framing (the head box; crop.py adds ``--margin`` around it):

* ``learned``: a small convolutional detector (:class:`HeadNet`, ~0.3 M parameters, CenterNet-style: a heat map of
  head centres and each head's size, at 1/8 of the input) run on the image scaled to :data:`INPUT` px on its long
  side. Its weights ship with gandata (``gandata/models/lego-heads.pt``, checksum below) and are built by
  ``tools/build_lego_heads.py`` from public images it names (docs/quality.md). It finds heads in catalogue studio
  shots and in photos of figures in scenes.
* ``layout``: for catalogue studio shots (one figure, a plain or graded background, or transparency): the figure is
  separated from its background (alpha where the image has it, else a background surface fitted to the border:
  gradients and shadows included, and edges for white on white), the largest figure is kept (insets and second views
  dropped), its legs give the figure's scale, and the head is what stands on the shoulders at the figure's
  proportions — not the top rows (props, raised arms and plumes move those).
* ``cascade``: the anime-face cascade's face box (crop.py runs it), grown to the head box it sits in by the
  proportions measured on hand-marked heads (:func:`head_of_face`).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

INPUT = 384  # the learned detector's input: the image scaled to this long side
STRIDE = 8  # its output grid
WEIGHTS = Path(__file__).resolve().parent / "models" / "lego-heads.pt"
# the shipped weights' checksum (tools/build_lego_heads.py sets it when it writes them)
WEIGHTS_SHA256 = "b00c9312f43433790cf1f26ef7f7374921eef145474db40d220b90ddcb0b071b"


@dataclass
class Head:
    box: tuple[int, int, int, int]  # x, y, w, h in the image's pixels: the whole head
    confidence: float  # 0-1: how sure the locator is that this is a whole head
    method: str  # learned | layout | cascade


def holds(crop: tuple[int, int, int, int], head: tuple[int, int, int, int], contain: float = 0.95,
          share: float = 0.45) -> bool:
    """A crop box (x0, y0, x1, y1) holds a head box (x0, y0, x1, y1) when ``contain`` of the head lies inside it and
    the head's longer side is at least ``share`` of the crop's side: the whole head, filling a sensible part of the
    crop. What benchmarks/lego_heads.py and the tests count as a head found."""
    cx0, cy0, cx1, cy1 = crop
    hx0, hy0, hx1, hy1 = head
    iw, ih = max(0, min(cx1, hx1) - max(cx0, hx0)), max(0, min(cy1, hy1) - max(cy0, hy0))
    area = (hx1 - hx0) * (hy1 - hy0)
    return area > 0 and iw * ih >= contain * area and max(hx1 - hx0, hy1 - hy0) >= share * max(cx1 - cx0, cy1 - cy0)


# ---------------------------------------------------------------------------------------------- the figure


def figure_mask(rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The pixels of the figures in a studio shot (bool H×W): where ``alpha`` is opaque when the image has real
    transparency; else where the image differs from a background surface fitted to its border (a plain colour, a
    gradient, a soft shadow), or holds an edge (a white helmet on white), with holes filled."""
    return _figure(rgb, alpha)[0]


def _figure(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[np.ndarray, float]:
    """:func:`figure_mask`, and the share of the border its background explains (1 with transparency)."""
    h, w = rgb.shape[:2]
    if alpha is not None and (alpha < 250).mean() > 0.02:
        fg, explained = alpha >= 128, 1.0
    else:
        fg, explained = _differs_from_border(rgb)
    fg = fg.astype(np.uint8)
    k = max(3, (min(h, w) // 150) | 1)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((k, k), np.uint8))
    fg = _fill_holes(fg)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return fg.astype(bool), explained


def _differs_from_border(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Pixels unlike the background: a quadratic surface per channel fitted to the image's border (robustly: the
    border pixels the figure covers, such as feet at the bottom edge, are dropped and the fit done again), compared
    with every pixel; plus edges, which outline a white figure on white. And the share of the border the surface
    explains (within 16 levels): near 1 for a studio shot's plain or graded background, less for a scene."""
    h, w = rgb.shape[:2]
    b = max(2, min(h, w) // 100)
    frame = np.zeros((h, w), bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    fy, fx = np.nonzero(frame)

    def design(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        sx, sy = xs / max(w - 1, 1) - 0.5, ys / max(h - 1, 1) - 0.5
        return np.stack([np.ones_like(sx), sx, sy, sx * sx, sy * sy, sx * sy], -1).astype(np.float32)

    a_all, t_all = design(fy, fx), rgb[fy, fx].astype(np.float32)

    def inliers(resid: np.ndarray) -> np.ndarray:
        med = float(np.median(resid))
        return resid <= max(12.0, med + 6.0 * float(np.median(np.abs(resid - med))))

    def refine(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = np.zeros((6, 3), np.float32)
        for _ in range(3):  # fit, drop the border pixels the figure covers, fit again
            if keep.sum() < 12:
                break
            coef, *_ = np.linalg.lstsq(a_all[keep], t_all[keep], rcond=None)
            new = inliers(np.abs(t_all - a_all @ coef).max(axis=1))
            if new.sum() < 0.3 * len(new) or (new == keep).all():
                break
            keep = new
        return coef, keep

    # started from the whole border (a gradient), and from what is near its median colour (legs at the bottom edge
    # or a figure against a side skew a first fit of all of it): the fit that explains more of the border wins
    fits = [refine(np.ones(len(fy), bool)), refine(inliers(np.abs(t_all - np.median(t_all, axis=0)).max(axis=1)))]
    coef, keep = max(fits, key=lambda f: int((np.abs(t_all - a_all @ f[0]).max(axis=1) <= 16).sum()))
    noise = float(np.median(np.abs(t_all[keep] - a_all[keep] @ coef).max(axis=1))) if keep.any() else 0.0
    sx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :, None]
    sy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None, None]
    c = coef.astype(np.float32)  # the surface, row and column terms apart (no h×w×6 design matrix)
    model = (c[0] + c[1] * sx + c[3] * sx * sx) + (c[2] * sy + c[4] * sy * sy) + c[5] * sy * sx
    fg = np.abs(rgb - model).max(axis=2) > max(22.0, 4 * noise + 10)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(cv2.GaussianBlur(grey, (3, 3), 0), 40, 100) > 0
    explained = float((np.abs(t_all - a_all @ coef).max(axis=1) <= 16).mean())
    return fg | edges, explained


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return (mask.astype(bool) | holes).astype(np.uint8)


def largest_figure(mask: np.ndarray) -> np.ndarray | None:
    """The largest figure of a mask (bool), with the pieces of it that a thin light band cut off (they touch it once
    it is grown by 3 % of its height); insets, second views and shadows apart from it are dropped. None when nothing
    is there."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n < 2:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    keep = labels == big
    if n > 2:
        k = max(3, int(0.03 * stats[big, cv2.CC_STAT_HEIGHT]) | 1)
        near = cv2.dilate(keep.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
        touching = np.unique(labels[near & (labels > 0)])
        keep = np.isin(labels, touching)
    return keep


# ---------------------------------------------------------------------------------------------- the layout

# proportions measured on 98 hand-marked catalogue heads (benchmarks/heads/catalogue-more.jsonl; medians, with the
# middle half in brackets): a minifigure's head, hair or hat included, is 0.289 (0.276-0.312) of the figure's height
# from the top of its head to its feet, as high as wide (0.98, 0.92-1.03), and stands over the middle of its legs
# (within 0.04 of a head's width for 80 % of the figures).
HEAD_OF_FIGURE = 0.29
HEAD_ASPECT = 0.98  # height / width
PROTRUSION = 0.35  # rows above the head narrower than this share of a head's width are plumes, antennae, crests
LAYOUT_SIDE = 320  # the layout is read on the image scaled to this long side at most
PLAIN_SHAPE = 0.9  # a figure fills at most 0.78 of its bounding box (the 200 catalogue fixtures); a block nearly all


@dataclass
class Shot:
    """An image read as a studio shot, on a copy at most :data:`LAYOUT_SIDE` px long (``scale``): its largest
    figure's mask (None: nothing on the background) and how plain its background is (the share of the border a
    fitted surface explains: a catalogue shot's, or transparency, near 1; a scene's less)."""

    mask: np.ndarray | None
    scale: float
    plain: float


PLAIN = 0.85  # a background explaining this share of the border is a studio shot's (96 % of catalogue images)


def read_shot(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Shot:
    scale = min(1.0, LAYOUT_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:  # the proportions need no more pixels than this
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        alpha = None if alpha is None else cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    mask, plain = _figure(rgb, alpha)
    return Shot(largest_figure(mask), scale, plain)


def layout_heads(rgb: np.ndarray, alpha: np.ndarray | None = None,
                 shot: Shot | None = None) -> tuple[list[Head], str | None]:
    """The head of the largest figure of a studio shot, from the figure's proportions; or no head and why. The
    figure's height (top of the head to the feet) gives the head's size, the middle of its legs the head's column,
    the first row wide enough to be a head (not a plume or an antenna) its top: props, raised arms, capes and
    insets move none of them. ``shot``: the image read already (:func:`read_shot`)."""
    shot = shot or read_shot(rgb, alpha)
    mask, scale = shot.mask, shot.scale
    if mask is None:
        return [], "no figure on the background"
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    fy0, fy1 = int(ys.min()), int(ys.max()) + 1
    fw = int(xs.max()) + 1 - int(xs.min())
    if mask.sum() < 0.01 * h * w or fy1 - fy0 < 24:
        return [], "figure too small"
    fill = float(mask.sum()) / ((fy1 - fy0) * fw)
    if fill > PLAIN_SHAPE:  # a block, a bar, a frame of one colour: nothing narrows at a neck or between the legs
        return [], f"a plain shape, not a figure (it fills {fill:.0%} of its box)"
    expected = HEAD_OF_FIGURE * (fy1 - fy0) / HEAD_ASPECT
    first_legs = np.nonzero(_legs(mask, fy0, fy1))[1]
    if first_legs.size == 0:
        return [], "no legs to stand on"
    cx = float(np.median(first_legs))
    # the head's top: the first row wide enough to be a head (a plume, an antenna or a crest is narrower) within a
    # head's reach of the column the legs stand on (a banner or a raised prop beside the head is not)
    reach = mask[:, max(0, int(cx - 0.75 * expected)): int(cx + 0.75 * expected) + 1].sum(axis=1)
    top = next((y for y in range(fy0, fy1) if reach[y] >= PROTRUSION * expected), fy0)
    fh = fy1 - top
    legs = _legs(mask, top, fy1)
    leg_cols = np.nonzero(legs)[1]
    if fh < 0.7 * fw or leg_cols.size == 0:  # capes and wings make a figure wide; a vehicle is wider still
        return [], f"not a standing figure (height/width {fh / max(fw, 1):.2f})"
    cx = float(np.median(leg_cols))
    head_h = HEAD_OF_FIGURE * fh
    head_w = head_h / HEAD_ASPECT
    # the head's own width where it is wider (a brim, big hair): the run of each head row through its column
    runs = [_run(mask[y], cx) for y in range(top, min(fy1, top + int(round(head_h))))]
    runs = [r for r in runs if r]
    if runs:
        head_w = float(np.clip(np.percentile(runs, 90), 0.85 * head_w, 1.4 * head_w))
    legs_w = float(np.median(legs.sum(axis=1)))
    ratio = head_w / max(legs_w, 1.0)
    # sure when the figure looks like a minifigure: legs below a head of the usual width, a standing shape
    conf = float(np.clip(1.0 - 1.5 * max(0.0, abs(ratio - 0.85) - 0.2), 0.1, 0.95))
    conf *= 1.0 if 1.6 <= fh / max(fw, 1) <= 3.5 else 0.6
    box = tuple(int(round(v / scale)) for v in (cx - head_w / 2, top, head_w, head_h))
    return [Head(box, round(conf, 3), "layout")], None


def _legs(mask: np.ndarray, y0: int, y1: int) -> np.ndarray:
    """The rows of the legs of a figure from ``y0`` (its head's top) to ``y1`` (its feet): 72-90 % of the way."""
    return mask[y0 + int(0.72 * (y1 - y0)): y0 + int(0.9 * (y1 - y0))]


def _run(row: np.ndarray, x: float) -> int:
    """The length of the run of ``row`` (bool) through column ``x`` (0 when ``x`` is background)."""
    c = int(round(x))
    if not 0 <= c < row.size or not row[c]:
        return 0
    left = row[c::-1]
    right = row[c:]
    n_left = int(np.argmin(left)) if not left.all() else left.size
    n_right = int(np.argmin(right)) if not right.all() else right.size
    return n_left + n_right - 1


# ------------------------------------------------------------------------------------------------ the default


def auto_heads(rgb: np.ndarray, alpha: np.ndarray | None, learned: LearnedHeads,
               threshold: float) -> tuple[list[Head], str | None]:
    """``--locator auto``, the best measured (docs/quality.md): in a scene, the learned detector's heads at
    ``threshold``; in a studio shot (a plain background, or transparency) one head, the largest figure's: the
    detector's most confident head on that figure (an inset or a second view is not it), grown to hold the layout's
    head where the two agree (each misses what the other holds: a tall hat, a wide brim); where the detector is not
    sure of one, the layout's head when the layout is sure of it. Every head's confidence is on the detector's
    scale (the layout's mapped onto it by :func:`layout_as_learned`), so ``threshold`` bounds them all."""
    found = learned(rgb, threshold)
    shot = read_shot(rgb, alpha)
    if shot.plain < PLAIN or shot.mask is None:
        return found, None if found else "no head found"
    on_figure = [h for h in found if _on_figure(shot, h)]
    laid, why = layout_heads(rgb, alpha, shot)
    laid = [Head(h.box, layout_as_learned(h.confidence), h.method) for h in laid]
    laid = [h for h in laid if h.confidence >= threshold]
    if not on_figure:
        return laid, why or (None if laid else "the figure does not look like a minifigure")
    best = max(on_figure, key=lambda h: h.confidence)
    if not laid or _overlap(best.box, laid[0].box)[0] < AGREE:
        return [best], None
    (bx, by, bw, bh), (lx, ly, lw, lh) = best.box, laid[0].box
    x0, y0, x1, y1 = min(bx, lx), min(by, ly), max(bx + bw, lx + lw), max(by + bh, ly + lh)
    return [Head((x0, y0, x1 - x0, y1 - y0), max(best.confidence, laid[0].confidence), "learned")], None


def layout_as_learned(confidence: float) -> float:
    """The layout's confidence on the detector's scale, for ``auto``: :data:`LAYOUT_SURE` is the detector's default
    threshold (0.5), 0 and 1 stay where they are, linear between — so the default keeps the layout's heads it kept,
    and a higher ``--threshold`` asks the layout for surer heads too (at 1, none: its confidence stops at 0.95)."""
    sure, default = LAYOUT_SURE, SURE["learned"]
    if confidence <= sure:
        return round(confidence / sure * default, 3)
    return round(default + (confidence - sure) / (1 - sure) * (1 - default), 3)


AGREE = 0.3  # the detector's and the layout's heads overlap this much (IoU): one head, seen twice
LAYOUT_SURE = 0.25  # the layout's confidence in a head it finds alone (measured on the training images)
# the confidence a head needs by default, on each locator's own scale (crop lego-faces --threshold): the detector's
# at 0.5 (auto and learned: docs/quality.md), the layout's at LAYOUT_SURE, every face the cascade finds
SURE = {"auto": 0.5, "learned": 0.5, "layout": LAYOUT_SURE, "cascade": 0.0}


def _on_figure(shot: Shot, head: Head) -> bool:
    """The head's centre row crosses the figure within half a head's width of the centre."""
    x, y, w, h = (v * shot.scale for v in head.box)
    row = int(y + h / 2)
    if not 0 <= row < shot.mask.shape[0]:
        return False
    return bool(shot.mask[row, max(0, int(x + w / 4)): max(0, int(x + 3 * w / 4)) + 1].any())


# ------------------------------------------------------------------------------------------------ the cascade

# a LEGO face found by the anime cascade → the whole head it sits in, in units of the face box: on the 7 of 98
# hand-marked training heads (benchmarks/heads/catalogue-more.jsonl) where the cascade fires at all, the head's top
# is a quarter of the box above it, and the head as wide and high as the box (medians; a little more here, so that
# hair and brims stay inside)
FACE_TO_HEAD = (-0.05, -0.26, 1.1, 1.1)  # x, y offsets and width, height of the head box in face-box units


def head_of_face(face: tuple[int, int, int, int], confidence: float = 0.5) -> Head:
    x, y, w, h = face
    dx, dy, sw, sh = FACE_TO_HEAD
    return Head((int(round(x + dx * w)), int(round(y + dy * h)), int(round(sw * w)), int(round(sh * h))),
                confidence, "cascade")


# --------------------------------------------------------------------------------------------- the learned one


def _model():
    import torch
    from torch import nn

    def cbr(i: int, o: int, s: int = 1, k: int = 3, g: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))

    def sep(c: int) -> nn.Sequential:  # depthwise then pointwise
        return nn.Sequential(cbr(c, c, 1, 3, c), cbr(c, c, 1, 1))

    class HeadNet(nn.Module):
        """Strides 4-32 with a top-down path back to 1/8; five outputs per cell: the head-centre logit, the box's
        log width and height (in cells) and the centre's offset within the cell."""

        def __init__(self):
            super().__init__()
            self.s4 = nn.Sequential(cbr(3, 16, 2), cbr(16, 32, 2), sep(32))
            self.s8 = nn.Sequential(cbr(32, 64, 2), sep(64), sep(64))
            self.s16 = nn.Sequential(cbr(64, 96, 2), sep(96), sep(96))
            self.s32 = nn.Sequential(cbr(96, 128, 2), sep(128), sep(128))
            self.l32, self.l16, self.l8 = nn.Conv2d(128, 64, 1), nn.Conv2d(96, 64, 1), nn.Conv2d(64, 64, 1)
            self.head = nn.Sequential(cbr(64, 64), nn.Conv2d(64, 5, 1))
            self.head[-1].bias.data[0] = -2.2  # a rare positive: start near p = 0.1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b8 = self.s8(self.s4(x))
            b16 = self.s16(b8)
            p = self.l32(self.s32(b16))
            p = nn.functional.interpolate(p, size=b16.shape[-2:], mode="nearest") + self.l16(b16)
            p = nn.functional.interpolate(p, size=b8.shape[-2:], mode="nearest") + self.l8(b8)
            return self.head(p)

    return HeadNet()


def new_model():
    """An untrained :class:`HeadNet` (tools/build_lego_heads.py trains it)."""
    return _model()


def to_input(rgb: np.ndarray, side: int = INPUT) -> tuple[np.ndarray, float]:
    """The image as the network takes it: scaled to ``side`` on its long side (padded to a multiple of 32 with
    grey), CHW float32 in -1…1; and the scale."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    canvas = np.full((ph, pw, 3), 127, np.uint8)
    canvas[:nh, :nw] = small
    return (canvas.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0), scale


def decode_output(out: np.ndarray, scale: float, threshold: float, top: int = 20) -> list[Head]:
    """Heads from the network's output (5×H×W, one image): the local maxima of the centre map above
    ``threshold``, their boxes in the image's pixels."""
    logits = out[0]
    prob = 1.0 / (1.0 + np.exp(-logits))
    peaks = (prob == cv2.dilate(prob, np.ones((3, 3), np.float32))) & (prob >= threshold)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-prob[ys, xs])[:top]
    heads = []
    for i in order:
        y, x = ys[i], xs[i]
        bw, bh = np.exp(out[1, y, x]) * STRIDE, np.exp(out[2, y, x]) * STRIDE
        cx, cy = (x + out[3, y, x]) * STRIDE, (y + out[4, y, x]) * STRIDE
        box = ((cx - bw / 2) / scale, (cy - bh / 2) / scale, bw / scale, bh / scale)
        heads.append(Head(tuple(int(round(v)) for v in box), round(float(prob[y, x]), 3), "learned"))
    return _suppress(heads)


def _suppress(heads: list[Head], iou: float = 0.4, inside: float = 0.6) -> list[Head]:
    """Most confident first, a head is dropped when it overlaps one kept (IoU ``iou``) or lies mostly within it or
    around it (``inside`` of the smaller box): one head, one box."""
    kept: list[Head] = []
    for h in heads:
        if all(o < iou and i < inside for o, i in (_overlap(h.box, k.box) for k in kept)):
            kept.append(h)
    return kept


def _overlap(a: tuple, b: tuple) -> tuple[float, float]:
    """(IoU, intersection over the smaller box) of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / max(aw * ah + bw * bh - inter, 1), inter / max(min(aw * ah, bw * bh), 1)


class LearnedHeads:
    """The shipped detector, loaded once per process (``weights``: another file, e.g. one the build script wrote),
    run on one image at a time by any number of threads (one torch thread each: crop's workers are the
    parallelism)."""

    _lock = threading.Lock()
    _cache: dict[str, object] = {}

    def __init__(self, weights: str | Path | None = None):
        self.path = Path(weights) if weights else WEIGHTS

    def origin(self) -> dict:
        """What a crop run records about the detector it used."""
        return {"locator": "learned", "weights": self.path.name, "sha256": WEIGHTS_SHA256 if self.path == WEIGHTS
                else None}

    def _net(self):
        import torch

        key = str(self.path)
        with self._lock:
            net = self._cache.get(key)
            if net is None:
                from .errors import UserError, hint

                try:
                    data = self.path.read_bytes()
                except OSError as e:
                    raise UserError(f"the LEGO head detector's weights {self.path} cannot be read ({e.strerror}); "
                                    f"reinstall gandata, or use {hint('locator', 'layout')}") from None
                if self.path == WEIGHTS and WEIGHTS_SHA256 and hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
                    raise UserError(f"the LEGO head detector's weights {self.path} are damaged (checksum); reinstall "
                                    f"gandata, or use {hint('locator', 'layout')}")
                import io

                net = _model()
                try:
                    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                    net.load_state_dict({k: v.float() for k, v in state["model"].items()})
                except Exception as e:  # noqa: BLE001 (torch's many errors for a file that is not these weights)
                    raise UserError(f"{self.path} is not the LEGO head detector's weights ({type(e).__name__}); "
                                    f"give the file tools/build_lego_heads.py wrote, or use "
                                    f"{hint('locator', 'layout')}") from None
                net.eval()
                self._cache[key] = net
        return net

    def __call__(self, rgb: np.ndarray, threshold: float = 0.3) -> list[Head]:
        """The heads in ``rgb`` with a confidence of at least ``threshold``, most confident first. Torch's threads
        are the caller's to set (crop runs one per worker thread)."""
        import torch

        net = self._net()
        x, scale = to_input(rgb)
        with torch.inference_mode():
            out = net(torch.from_numpy(x)[None])[0].numpy()
        return decode_output(out, scale, threshold)
