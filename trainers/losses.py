"""The adversarial objectives and penalties as records the training loop calls (stylegan2-ada's ``Loss`` is the
model): no name is compared inside the loop. Objectives work on critic logits, in fp32 (AMP-safe: no sigmoid +
BCELoss).

The objective is a kind's ``objective`` (kinds.py), :data:`OBJECTIVES`:

* ``gan`` (dcgan, cdcgan): non-saturating — D: −log σ(D(x)) − log(1 − σ(D(G(z)))), G: −log σ(D(G(z))) (softplus form).
* ``lsgan``: 0-1 coding — D: ½(D(x)−1)² + ½D(G(z))², G: ½(D(G(z))−1)².
* ``wgan`` (wgan, wgan-gp): D: D(G(z)) − D(x), G: −D(G(z)).

The penalty is a kind's ``penalty`` (:func:`penalty_of`):

* ``gp`` (wgan-gp): :func:`gradient_penalty`, E[(‖∇x̂ D(x̂)‖₂ − 1)²] with one α ~ U[0,1] per sample, the norm over
  every non-batch dimension (C, H, W together), by ``autograd.grad(create_graph=True)`` on the inputs; the norm in
  fp32 whatever the forward's precision (fp16: the gradient taken of a scaled sum, then unscaled).
* ``clip`` (wgan): the critic's weights clipped after each update. ``none``: nothing.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class Objective:
    """An adversarial objective: the critic's loss and the generator's, on critic logits, in fp32. The loop asks its
    kind's record (``OBJECTIVES[kind.objective]``) and never compares names."""

    name = ""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
        """The critic's loss. ``real_target`` < 1 is one-sided label smoothing (gan, lsgan): the reals' target is
        lowered, the fakes' stays 0 (Salimans et al. 2016)."""
        raise NotImplementedError

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NonSaturating(Objective):
    name = "gan"

    def d_loss(self, d_real, d_fake, real_target=1.0):
        r, f = d_real.float(), d_fake.float()
        real = F.softplus(-r)
        if real_target != 1.0:
            real = real_target * real + (1 - real_target) * F.softplus(r)
        return real.mean() + F.softplus(f).mean()

    def g_loss(self, d_fake):
        return F.softplus(-d_fake.float()).mean()


class LeastSquares(Objective):
    name = "lsgan"

    def d_loss(self, d_real, d_fake, real_target=1.0):
        r, f = d_real.float(), d_fake.float()
        return 0.5 * ((r - real_target) ** 2).mean() + 0.5 * (f**2).mean()

    def g_loss(self, d_fake):
        return 0.5 * ((d_fake.float() - 1) ** 2).mean()


class Wasserstein(Objective):
    """Critic scores: no targets (``real_target`` has no meaning here)."""

    name = "wgan"

    def d_loss(self, d_real, d_fake, real_target=1.0):
        return d_fake.float().mean() - d_real.float().mean()

    def g_loss(self, d_fake):
        return -d_fake.float().mean()


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (NonSaturating(), LeastSquares(), Wasserstein())}


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
        out = critic(x_hat, labels)
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


class Penalty:
    """What a kind adds to its critic step (kinds.py ``penalty``): a term on the critic's loss and/or a change to the
    critic after its update. ``double_backward``: the term differentiates the critic twice (it is never compiled)."""

    double_backward = False

    def add(self, loss: torch.Tensor, critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor,
            labels: torch.Tensor | None, autocast, scaler) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss with the term, the term unweighted)``; no term: the loss unchanged and a zero to log."""
        return loss, torch.zeros((), device=loss.device)

    def after_step(self, critic: nn.Module) -> None:
        pass


class GradientPenalty(Penalty):
    """WGAN-GP: ``weight`` × :func:`gradient_penalty`, in the same backward as the critic's loss."""

    double_backward = True

    def __init__(self, weight: float):
        self.weight = weight

    def add(self, loss, critic, real, fake, alpha, labels, autocast, scaler):
        gp = gradient_penalty(critic, real, fake, alpha, labels, autocast, scaler)
        return loss + self.weight * gp, gp


class WeightClip(Penalty):
    """WGAN: the critic's weights clipped to ±``c`` after each of its updates."""

    def __init__(self, c: float):
        self.c = c

    def after_step(self, critic):
        clip_weights(critic, self.c)


def penalty_of(name: str, gp_lambda: float, clip: float) -> Penalty:
    """The record for a kind's ``penalty`` (``gp``, ``clip`` or ``none``) with the run's weights."""
    return {"gp": lambda: GradientPenalty(gp_lambda), "clip": lambda: WeightClip(clip), "none": Penalty}[name]()
