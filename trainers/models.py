"""DCGAN-family generators and critics for 32, 64 and 128 px (depth follows the resolution).

* Generator: z → ConvTranspose 4×4 to 4×4, then stride-2 ConvTranspose blocks halving the channels up to the
  resolution, Tanh. Batch norm by default (``g_norm="none"`` removes it, as WGAN's ``DCGAN_G_nobn``).
  Conditional generators take the label twice, so that it cannot be drowned by the noise: an embedding drawn
  N(0, 1) — the noise's own scale — concatenated to z, and class-conditional batch norm (every normalisation's gain
  and bias are 1 + γ(y) and β(y), as in Miyato & Koyama's projection-discriminator cGAN). With the embedding at the
  usual N(0, 0.02) init, the label entered the first layer ~50× weaker than z and the trained generator ignored it.
* Critic: stride-2 convolutions doubling the channels down to 4×4 (no normalisation on the first), then a 4×4
  convolution to one logit — no sigmoid: every loss works on logits. Normalisation ``batch`` (DCGAN, LSGAN, WGAN),
  ``group`` (GroupNorm(1, C) = the official WGAN-GP layer norm over C,H,W) or ``none``. Conditional critics see the
  label as one-hot planes beside the image channels (``cond="input"``, the common conditional DCGAN), through a
  projection head ``logit += <embed(y), sum of the last features>`` (``"projection"``, Miyato & Koyama), or both
  (the default): in benchmarks/quality.py projection alone reached FD 349 and 58 % conditional accuracy at 40 kimg,
  input planes 9–11 and 97 % (2 seeds), both 7–11 and 95 % (5 seeds; the reference conditional DCGAN: 18, 90 %).
* Init N(0, 0.02) for convolutions and the critic's projection embedding; batch-norm weights N(1, 0.02), biases 0
  (pytorch/examples); the generator's label embedding N(0, 1) and its conditional gains and biases 0 (see above).
* Many classes: a label is an n-dimensional code (n × n embedding, n one-hot planes, a gain and a bias table of n
  rows in every layer) only up to ``LABEL_DIMS`` classes. Beyond, each network learns one code of ``LABEL_DIMS``
  dimensions per class (the generator's embedding, whose code also feeds every conditional batch norm through a
  linear map; in the critic, the input planes and the projection's linear map), so that memory grows by
  ``LABEL_DIMS`` numbers a class: at 100 000 classes the n × n embedding alone was 40 GB, the critic's one-hot
  planes 10 GB a batch at 10 000. Networks of up to ``LABEL_DIMS`` classes are the same as before, bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import hint
from .kinds import CRITIC_CONDITIONING, RESOLUTIONS

LABEL_DIMS = 128  # a label's code: one-hot (n dimensions) up to this many classes, a learned code of this size beyond


def _depth(resolution: int) -> int:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution} is not supported; use one of {RESOLUTIONS} "
                         f"({hint('size', command='shard')})")
    return int(math.log2(resolution)) - 2  # stride-2 steps between 4×4 and the resolution


def weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.Embedding, nn.Linear)):  # Linear: the label code's maps (over LABEL_DIMS classes)
        nn.init.normal_(m.weight, 0.0, 0.02)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias depend on the class: BN(x) · (1 + γ(y)) + β(y), γ and β starting at 0 — a
    table of a row per class, or (``code_dims``: many classes) linear maps of the class's code."""

    def __init__(self, channels: int, n_classes: int, code_dims: int | None = None):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        if code_dims:
            self.gain = nn.Linear(code_dims, channels, bias=False)
            self.bias = nn.Linear(code_dims, channels, bias=False)
        else:
            self.gain = nn.Embedding(n_classes, channels)
            self.bias = nn.Embedding(n_classes, channels)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``cond``: the class ids (a table), or their codes (linear maps)."""
        return self.bn(x) * (1 + self.gain(cond))[:, :, None, None] + self.bias(cond)[:, :, None, None]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(1, channels, eps=1e-5)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}; use batch, group or none")


class Generator(nn.Module):
    def __init__(self, resolution: int = 64, nz: int = 100, ngf: int = 64, channels: int = 3, n_classes: int = 0,
                 embed_dim: int | None = None, norm: str = "batch"):
        super().__init__()
        steps = _depth(resolution)
        self.nz, self.n_classes = nz, n_classes
        self.coded = n_classes > LABEL_DIMS  # the batch norms read the label's code, not a row per class
        self.embed = nn.Embedding(n_classes, embed_dim or min(n_classes, LABEL_DIMS)) if n_classes else None
        conditional_norm = bool(n_classes) and norm == "batch"

        def norm_layer(c: int) -> nn.Module:
            if conditional_norm:
                return ConditionalBatchNorm2d(c, n_classes, self.embed.embedding_dim if self.coded else None)
            return _norm(norm, c)

        width = ngf * 2 ** (steps - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz + (self.embed.embedding_dim if self.embed else 0), width, 4, 1, 0, bias=False),
            norm_layer(width),
            nn.ReLU(True),
        ]
        for _ in range(steps - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), norm_layer(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(weights_init)
        if self.embed is not None:  # at the noise's scale: see the module's docstring
            nn.init.normal_(self.embed.weight, 0.0, 1.0)
        for m in self.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.reset_parameters()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is None:
            return self.net(z[:, :, None, None])
        code = self.embed(labels)
        cond = code if self.coded else labels
        x = torch.cat([z, code], dim=1)[:, :, None, None]
        for layer in self.net:
            x = layer(x, cond) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x



class Critic(nn.Module):
    def __init__(self, resolution: int = 64, ndf: int = 64, channels: int = 3, norm: str = "batch", n_classes: int = 0,
                 cond: str = "both"):
        super().__init__()
        if cond not in CRITIC_CONDITIONING:
            raise ValueError(f"unknown critic conditioning {cond!r}; use one of {', '.join(CRITIC_CONDITIONING)}")
        steps = _depth(resolution)
        self.n_classes = n_classes
        self.input_labels = bool(n_classes) and cond in ("input", "both")
        projection = bool(n_classes) and cond in ("projection", "both")
        self.coded = n_classes > LABEL_DIMS and (self.input_labels or projection)
        in_ch = channels + (min(n_classes, LABEL_DIMS) if self.input_labels else 0)
        layers: list[nn.Module] = [nn.Conv2d(in_ch, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(steps - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), _norm(norm, width * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 4, 1, 0, bias=False)
        self.code = nn.Embedding(n_classes, LABEL_DIMS) if self.coded else None  # input planes and projection
        self.embed = (nn.Linear(LABEL_DIMS, width, bias=False) if self.coded else nn.Embedding(n_classes, width)) \
            if projection else None
        self.apply(weights_init)
        if self.code is not None:  # codes of unit length, as a one-hot label is
            nn.init.normal_(self.code.weight, 0.0, LABEL_DIMS ** -0.5)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        code = self.code(labels) if self.code is not None else None
        if self.input_labels:  # label planes beside the image channels: one-hot, or the class's code
            planes = (code if code is not None else nn.functional.one_hot(labels, self.n_classes)).to(x.dtype)
            planes = planes[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        h = self.features(x)
        logit = self.head(h).flatten()
        if self.embed is not None:
            logit = logit + (self.embed(code if code is not None else labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit


@torch.no_grad()
def label_influence(G: Generator, n_z: int = 32, seed: int = 0) -> float:
    """How much the label moves a conditional generator's output compared with the noise: the mean over z of the
    pixel variance across labels, divided by the mean over labels of the pixel variance across z. 1.0: changing the
    label changes the image as much as drawing another z; near 0: the generator ignores its label. The generator is
    used in the mode it is in (eval for a trained one, as ``gandata sample`` uses it)."""
    if not G.n_classes:
        raise ValueError("label_influence needs a conditional generator")
    device = next(G.parameters()).device
    k = G.n_classes
    z = torch.randn(n_z, G.nz, generator=torch.Generator().manual_seed(seed))
    x = G(z.repeat_interleave(k, 0).to(device), torch.arange(k).repeat(n_z).to(device)).float().view(n_z, k, -1)
    return float(x.var(dim=1).mean() / x.var(dim=0).mean().clamp_min(1e-12))


def build(o, resolution: int, n_classes: int) -> tuple[Generator, Critic]:
    """The generator and critic of a run's options (:class:`~gandata.trainers.options.TrainOptions`): conditional on
    ``n_classes`` labels where the kind is."""
    classes = n_classes if o.spec.conditional else 0
    G = Generator(resolution, o.nz, o.ngf, 3, classes, norm=o.g_norm)
    D = Critic(resolution, o.ndf, 3, o.critic_norm, classes, o.critic_cond)
    return G, D
