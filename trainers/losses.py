"""The adversarial objectives, on critic logits, computed in fp32 (AMP-safe: no sigmoid + BCELoss).

The objective is a kind's ``objective`` (kinds.py):

* ``gan`` (dcgan, cdcgan): non-saturating — D: −log σ(D(x)) − log(1 − σ(D(G(z)))), G: −log σ(D(G(z))) (softplus form).
* ``lsgan``: 0-1 coding — D: ½(D(x)−1)² + ½D(G(z))², G: ½(D(G(z))−1)².
* ``wgan`` (wgan, wgan-gp): D: D(G(z)) − D(x), G: −D(G(z)).
* ``gradient_penalty``: E[(‖∇x̂ D(x̂)‖₂ − 1)²] with one α ~ U[0,1] per sample, the norm over every non-batch
  dimension (C, H, W together), by ``autograd.grad(create_graph=True)`` on the inputs; the norm in fp32 whatever
  the forward's precision (fp16: the gradient taken of a scaled sum, then unscaled).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def d_loss(obj: str, d_real: torch.Tensor, d_fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """The critic's loss. ``real_target`` < 1 is one-sided label smoothing (gan, lsgan): the reals' target is
    lowered, the fakes' stays 0 (Salimans et al. 2016)."""
    r, f = d_real.float(), d_fake.float()
    if obj == "gan":
        real = F.softplus(-r)
        if real_target != 1.0:
            real = real_target * real + (1 - real_target) * F.softplus(r)
        return real.mean() + F.softplus(f).mean()
    if obj == "lsgan":
        return 0.5 * ((r - real_target) ** 2).mean() + 0.5 * (f**2).mean()
    return f.mean() - r.mean()


def g_loss(obj: str, d_fake: torch.Tensor) -> torch.Tensor:
    f = d_fake.float()
    if obj == "gan":
        return F.softplus(-f).mean()
    if obj == "lsgan":
        return 0.5 * ((f - 1) ** 2).mean()
    return -f.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor,
                     labels: torch.Tensor | None = None, autocast=None, scaler=None) -> torch.Tensor:
    """WGAN-GP's penalty. ``alpha`` has one value per sample (shape (B,)). Works through a DDP-wrapped critic when
    the result is added to a loss that also holds the critic's outputs on real and fake (one backward).

    In reduced precision (``autocast``) the critic's forward runs in it, and the gradient with respect to the
    inputs is taken of the fp32 sum of its outputs; with fp16 (an enabled ``scaler``) that sum is scaled before the
    gradient is taken (small gradients would underflow fp16) and the gradient unscaled after, as PyTorch's AMP
    recipe for gradient penalties says; the norm and the penalty are computed in fp32."""
    a = alpha.to(real.dtype).view(-1, *([1] * (real.dim() - 1)))
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    with autocast if autocast is not None else contextlib.nullcontext():
        out = critic(x_hat, labels) if labels is not None else critic(x_hat)
    total = out.float().sum()
    if scaler is not None and scaler.is_enabled():
        (grad,) = torch.autograd.grad(scaler.scale(total), x_hat, create_graph=True)
        grad = grad.float() / scaler.get_scale()
    else:
        (grad,) = torch.autograd.grad(total, x_hat, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@torch.no_grad()
def clip_weights(critic: nn.Module, c: float) -> None:
    for p in critic.parameters():
        p.clamp_(-c, c)
