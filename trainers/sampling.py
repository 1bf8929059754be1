"""What a trained run gives back: its EMA generator, loaded from a checkpoint, and grids of samples from it."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..declarations import SAMPLE
from ..fileio import atomic_write
from ..options import check_call
from ..summary import Summary
from .checkpoints import load_checkpoint, newest_checkpoint, options_of, recorded, resolution_of
from .cpu import pick_device, reuse_heap
from .models import build
from .options import TrainError, TrainOptions

SAMPLE_CHUNK = 256  # images the generator draws at once in sample()

_DEFAULT = SAMPLE.defaults()


@dataclass
class SampleResult(Summary):
    checkpoint: str
    out: str
    n: int
    kind: str
    kimg: float
    label_names: list[str] | None

    def brief(self) -> str:
        return f"{self.n} samples of {self.kind} at {self.kimg:g} kimg → {self.out}"


class Grid:
    """A PNG grid of ``n`` images in ``rows`` rows with 2-px gaps, filled a chunk of images at a time: what it holds
    is the grid's own bytes (3 a pixel), never all the images as floats — ``sample --n 10000`` at 128 px peaked at
    8 GB when the images were generated, joined and converted whole."""

    def __init__(self, n: int, rows: int):
        self.n, self.rows, self.cols = n, rows, math.ceil(n / rows)
        self.pixels: np.ndarray | None = None
        self.filled = 0

    def add(self, images: torch.Tensor) -> Grid:
        """The next images (B×C×H×W in [-1, 1]) into their cells, in order."""
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        b, c, h, w = x.shape
        if self.pixels is None:
            self.pixels = np.full((self.rows * (h + 2) + 2, self.cols * (w + 2) + 2, 3), 32, np.uint8)
        for i in range(b):
            r, k = divmod(self.filled + i, self.cols)
            tile = x[i].transpose(1, 2, 0)
            self.pixels[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + k * (w + 2) : 2 + k * (w + 2) + w] = (
                tile if c == 3 else tile[..., :1]
            )
        self.filled += b
        return self

    def png(self) -> bytes:
        """The grid as PNG (the pixels are let go before encoding: the encoder holds its own copy)."""
        from PIL import Image

        from .. import images as gimages

        im = Image.fromarray(self.pixels)
        self.pixels = None
        return gimages.encode(im, "png")


def image_grid(images: torch.Tensor, rows: int) -> bytes:
    """B×C×H×W in [-1, 1] → a PNG of ``rows`` rows with 2-px gaps."""
    return Grid(len(images), rows).add(images).png()


def grid_labels(n: int, rows: int, n_classes: int) -> torch.Tensor:
    """One class per row of a grid of ``n`` (cycling through the classes)."""
    return torch.arange(n) // math.ceil(n / rows) % max(n_classes, 1)


def load_generator(ck_path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, TrainOptions, int, dict]:
    """The EMA generator of a checkpoint, in eval mode on ``device``; its options; its number of classes (0 unless
    conditional); and ``{"cur_nimg", "resolution", "label_names"}``."""
    ck_path = Path(ck_path)
    ck = load_checkpoint(ck_path)
    o = options_of(ck, ck_path)
    saved = recorded(ck_path.parent)
    resolution = saved.get("resolution") or resolution_of(ck["G_ema"])
    n_classes = saved.get("n_classes") or (ck["G_ema"]["embed.weight"].shape[0] if "embed.weight" in ck["G_ema"] else 0)
    G, _ = build(o, resolution, n_classes)
    try:
        G.load_state_dict(ck["G_ema"])
    except RuntimeError:
        raise TrainError(f"{ck_path} was written by an older gandata whose {o.kind} generator had other layers; "
                         "train it again with this version") from None
    G.to(device).eval()
    return G, o, n_classes if o.spec.conditional else 0, {"cur_nimg": int(ck["cur_nimg"]), "resolution": resolution,
                                                           "label_names": saved.get("label_names")}


def sample(path: str | os.PathLike, n: int = _DEFAULT["n"], out: str | os.PathLike = _DEFAULT["out"],
           label: int | None = None, device: str = _DEFAULT["device"], precision: str = _DEFAULT["precision"],
           seed: int = _DEFAULT["seed"]) -> SampleResult:
    """A grid of ``n`` images from a run's newest checkpoint (or a checkpoint file), drawn by the EMA generator."""
    from .precision import autocast, slower_here

    check_call(SAMPLE, TrainError, n=n, label=label, device=device, precision=precision, seed=seed)

    path = Path(path)
    ck_path = newest_checkpoint(path) if path.is_dir() else path
    if ck_path is None:
        raise TrainError(f"{path} holds no checkpoint-*.pt that loads; train first, or give a checkpoint file")
    dev = pick_device(device)
    reuse_heap()
    slow = slower_here(precision, dev)
    if slow:
        print(slow, file=sys.stderr, flush=True)
    G, o, n_classes, meta = load_generator(ck_path, dev)
    z = torch.randn(n, o.nz, generator=torch.Generator().manual_seed(seed)).to(dev)
    y = None
    rows = max(1, int(math.sqrt(n)))
    if o.spec.conditional:
        if label is not None and not 0 <= label < n_classes:
            raise TrainError(f"--label {label}: this model has labels 0-{n_classes - 1}")
        y = (torch.full((n,), label) if label is not None else grid_labels(n, rows, n_classes)).to(dev)
    elif label is not None:
        raise TrainError(f"--label only applies to cdcgan models; this one is {o.kind}")
    out = Path(out)
    if out.is_dir():
        raise TrainError(f"--out {out} is a folder; give the PNG's file name (e.g. {out / 'samples.png'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = Grid(n, rows)
    with torch.no_grad(), autocast(precision, dev):  # in chunks, each into the grid's pixels: memory stays bounded
        for i in range(0, n, SAMPLE_CHUNK):
            grid.add(G(z[i:i + SAMPLE_CHUNK], y[i:i + SAMPLE_CHUNK] if y is not None else None))
    atomic_write(out, grid.png())
    return SampleResult(checkpoint=str(ck_path), out=str(out), n=n, kind=o.kind, kimg=meta["cur_nimg"] / 1000,
                        label_names=meta["label_names"])
