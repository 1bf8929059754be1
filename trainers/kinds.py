"""The GAN kinds as data: one record per trainer, which the training loop, the command line's options and help ask
instead of comparing names. No torch here (the command line's help reads it)."""

from __future__ import annotations

from dataclasses import dataclass

CRITIC_CONDITIONING = ("input", "projection", "both")  # cdcgan: how the critic sees the label
RESOLUTIONS = (32, 64, 128)  # image sides the generators and critics are built for (models.py)
AUGMENT_PARTS = ("color", "translation", "cutout")  # DiffAugment's policy (augment.py)
AUTO_AUGMENT_BELOW = 5000  # --augment auto: DiffAugment for train splits smaller than this (docs/quality.md)
METRICS = ("fid", "kid")  # what eval and --eval compute (metrics.py)


@dataclass(frozen=True)
class Kind:
    name: str
    paper: str  # the one-line help
    objective: str  # gan (non-saturating), lsgan (least squares) or wgan (critic scores): losses.py
    optimizer: str  # adam | rmsprop
    lr: float
    betas: tuple[float, float] | None
    critic_norm: str  # default; batch | group | none
    n_critic: int  # critic steps per generator step
    label_smoothing: float = 0.0  # default one-sided smoothing of the reals' target (objectives with targets only)
    batch: int = 64
    conditional: bool = False  # labels: G and D take them, the shards must have them
    penalty: str = "none"  # gp (gradient penalty), clip (weight clipping) or none
    warmup: bool = False  # WGAN's schedule: 100 critic steps for the first 25 G steps and every 500th

    @property
    def has_targets(self) -> bool:
        """The critic has targets (so label smoothing means something)."""
        return self.objective != "wgan"

    @property
    def batchnorm_critic(self) -> bool:
        """A batch-norm critic is allowed (not with a per-sample gradient penalty)."""
        return self.penalty != "gp"

    def critic_steps(self, n_critic: int, step: int, warmup: bool) -> int:
        """Critic steps before generator step ``step``."""
        return 100 if self.warmup and warmup and (step < 25 or step % 500 == 0) else n_critic


# the papers' defaults (DCGAN, LSGAN, WGAN, WGAN-GP; pytorch/examples). Batch 64 for the DCGAN family is
# pytorch/examples' (the paper used 128): at equal images shown, 128 halves the updates, and in benchmarks/quality.py
# 3 of 5 seeds of dcgan at 128 never left "D wins" where the reference at 64 learned. One-sided label smoothing 0.1 for
# dcgan (Salimans et al. 2016; pytorch/examples has none): without it dcgan's median seed was worse than the
# reference's and 5–8 of 64 runs ended above FD 550 (docs/quality.md).
_ADAM_DCGAN = dict(optimizer="adam", lr=2e-4, betas=(0.5, 0.999), critic_norm="batch", n_critic=1)
ALL = (
    Kind("dcgan", "Radford et al. 2015 (DCGAN), as in pytorch/examples: the non-saturating loss, Adam 2e-4 (0.5, "
         "0.999)", "gan", label_smoothing=0.1, **_ADAM_DCGAN),
    Kind("lsgan", "Mao et al. 2017 (LSGAN): least-squares loss on the DCGAN networks, Adam 2e-4 (0.5, 0.999)",
         "lsgan", **_ADAM_DCGAN),
    Kind("wgan", "Arjovsky et al. 2017 (WGAN): weight clipping ±0.01, RMSprop 5e-5, 5 critic steps (100 in warm-up)",
         "wgan", "rmsprop", 5e-5, None, "batch", 5, penalty="clip", warmup=True),
    Kind("wgan-gp", "Gulrajani et al. 2017 (WGAN-GP): gradient penalty 10, Adam 1e-4 (0, 0.9), 5 critic steps, no "
         "batch norm in the critic", "wgan", "adam", 1e-4, (0.0, 0.9), "group", 5, penalty="gp"),
    Kind("cdcgan", "conditional DCGAN on labelled shards: label embedding and class-conditional batch norm in G, a "
         "projection critic (Miyato & Koyama 2018) with the label also as input planes", "gan", conditional=True,
         **_ADAM_DCGAN),
)
BY_NAME = {k.name: k for k in ALL}
KINDS = tuple(BY_NAME)


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` → its parts (augment.py), in the order given; one line for an unknown part."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in AUGMENT_PARTS]
    if not parts or bad:
        raise ValueError(f"the augmentation policy takes {', '.join(AUGMENT_PARTS)}, separated by commas (got "
                         f"{text!r})")
    return parts


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,kid"`` → the metric names (metrics.py), lower-cased; ValueError naming the choices."""
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not names or any(m not in METRICS for m in names):
        raise ValueError(f"choose from {', '.join(METRICS)}, separated by commas (got {text!r})")
    return names
