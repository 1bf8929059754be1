"""Differentiable augmentation (DiffAugment, Zhao et al. 2020): the same kind of random transformations applied to
every image the critic sees, real and generated, in the critic's steps and the generator's, so that a critic
trained on a small set cannot learn the set by heart, and the generator is not taught the transformations (they
sit between it and the critic, and its gradients flow through them).

The policy's parts, as in the paper's code:

* ``color``: brightness (add U[-0.5, 0.5]), saturation (scale the distance from the pixel's channel mean by
  U[0, 2]), contrast (scale the distance from the image's mean by U[0.5, 1.5]);
* ``translation``: shift by up to 1/8 of the side in each direction, filling with zeros (the images are in [-1, 1]:
  zeros are mid-grey);
* ``cutout``: zero a square of half the side, placed at random (it may stick out of the image).

Each image gets its own draw. Every random number comes from a ``torch.Generator`` that the caller seeds (the
training loop: from the run's seed, the step and the phase, for the whole global batch, then sliced to its rank),
so a run is reproducible and resumes exactly, and a batch's transformation does not depend on what ran before it.
Labels are not touched: the transformations act on each image in place in the batch.
"""

from __future__ import annotations

import torch

from .kinds import parse_policy

TRANSLATION = 1 / 8
CUTOUT = 1 / 2


def draws(policy: tuple[str, ...], n: int, side: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Every random number the policy needs for ``n`` images of ``side`` pixels, drawn from ``g`` on the CPU in a
    fixed order (so that the same generator gives the same numbers on any device)."""
    out: dict[str, torch.Tensor] = {}
    for part in policy:
        if part == "color":
            out["brightness"] = torch.rand(n, 1, 1, 1, generator=g) - 0.5
            out["saturation"] = torch.rand(n, 1, 1, 1, generator=g) * 2
            out["contrast"] = torch.rand(n, 1, 1, 1, generator=g) + 0.5
        elif part == "translation":
            s = int(side * TRANSLATION + 0.5)
            out["shift"] = torch.randint(-s, s + 1, (n, 2), generator=g)
        elif part == "cutout":
            c = int(side * CUTOUT + 0.5)
            out["cut"] = torch.randint(0, side + (1 - c % 2), (n, 2), generator=g)
    return out


def apply(x: torch.Tensor, policy: tuple[str, ...], d: dict[str, torch.Tensor]) -> torch.Tensor:
    """``x`` (N×C×H×W) transformed by the draws ``d`` (of :func:`draws`, for these N images)."""
    dev = x.device
    for part in policy:
        if part == "color":
            x = x + d["brightness"].to(dev, x.dtype)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * d["saturation"].to(dev, x.dtype) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * d["contrast"].to(dev, x.dtype) + mean
        elif part == "translation":
            x = _translate(x, d["shift"].to(dev))
        elif part == "cutout":
            x = _cutout(x, d["cut"].to(dev))
    return x


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift each image by ``shift[i] = (dy, dx)`` pixels, zeros coming in: a gather from a zero-padded copy."""
    n, _, h, w = x.shape
    s = int(shift.abs().max().item()) if shift.numel() else 0
    if s == 0:
        return x
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    rows = (torch.arange(h, device=x.device)[None, :] - shift[:, :1] + s)  # n×h: the source row of each output row
    cols = (torch.arange(w, device=x.device)[None, :] - shift[:, 1:] + s)  # n×w
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # n×h×w×c
    return out.permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """Zero a square of ``CUTOUT`` × the side in each image, centred at ``cut[i] = (y, x)`` (less half the side)."""
    n, _, h, w = x.shape
    c = int(h * CUTOUT + 0.5)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    y0 = cut[:, :1] - c // 2
    x0 = cut[:, 1:] - c // 2
    inside_y = (ys >= y0) & (ys < y0 + c)  # n×h
    inside_x = (xs >= x0) & (xs < x0 + c)  # n×w
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])  # n×h×w
    return x * keep[:, None].to(x.dtype)


class Augment:
    """The loop's augmentation: ``aug(x, g_step, rows)`` draws for the global batch from ``g_step`` and transforms
    this rank's ``rows`` of it."""

    def __init__(self, policy: str):
        self.policy = parse_policy(policy)

    def __call__(self, x: torch.Tensor, g: torch.Generator, global_n: int, rows: slice) -> torch.Tensor:
        d = draws(self.policy, global_n, x.shape[-1], g)
        return apply(x, self.policy, {k: v[rows] for k, v in d.items()})
