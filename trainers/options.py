"""A training run's options: what the loop reads, resolved against the kind's defaults and checked once, by the
command's declaration (:mod:`gandata.stages`); and how a run folder's recorded options compare with new ones."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import shardset
from ..errors import UserError
from .kinds import BY_NAME, KINDS, Kind


class TrainError(UserError):
    """A problem with the options or the data, said in one line."""


@dataclass
class TrainOptions:
    kind: str
    shards: str
    out: str
    kimg: float = 1000.0
    batch: int | None = None
    resolution: int | None = None  # default: from dataset.json, else the first batch
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    lr: float | None = None
    n_critic: int | None = None
    critic_norm: str | None = None
    critic_cond: str = "both"  # cdcgan: how the critic sees the label (input planes, projection head, both)
    g_norm: str = "batch"
    clip: float = 0.01
    critic_warmup: bool = True  # wgan: 100 critic steps for the first 25 G steps and every 500th
    gp_lambda: float = 10.0
    label_smoothing: float | None = None  # gan/lsgan critics: the reals' target is 1 − this (one-sided); dcgan 0.1
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05  # early on the EMA half-life is at most this share of the images seen (stylegan2-ada)
    snap_kimg: float = 50.0
    log_kimg: float = 1.0
    seed: int = 0
    workers: int = 2
    shuffle: int = 2000
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with gradient scalers): precision.py
    compile: bool = False  # torch.compile the generator and the critic (not a gradient-penalty critic)
    augment: str = "auto"  # none | diffaug | auto (diffaug for a set under AUTO_AUGMENT_BELOW train images)
    augment_policy: str = "color,translation,cutout"  # augment.py
    resume: str | None = None  # None | auto | a checkpoint path
    gpus: int = 1
    n_classes: int | None = None  # cdcgan: default from dataset.json's labels
    grid: int = 64
    threads: int = 0  # CPU threads of each process; 0: fitted to the machine (cpu.configure_threads)
    eval: str | None = None  # e.g. "fid,kid": evaluated at every snapshot (off by default)
    eval_real: str | None = None  # the real set for eval (default: the training shards)
    eval_n: int = 10_000  # generated images per evaluation
    eval_extractor: str = "inception"
    inception_weights: str | None = None
    allow_commands: bool = False  # pipe: shard specs run shell commands: the command line allows them, a pipeline
    # file only with allow_commands = true, a library call only when it says so
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> Kind:
        return BY_NAME[self.kind]

    def resolved(self) -> TrainOptions:
        """A copy with the kind's defaults filled in, checked by ``gandata train KIND``'s declaration (ranges and
        choices) and for what no single option can say (a batch-norm critic under a gradient penalty, smoothing
        without targets)."""
        if self.kind not in KINDS:
            raise TrainError(f"unknown trainer {self.kind!r}; use one of {', '.join(KINDS)}")
        from ..options import check_declared
        from ..stages import declared  # the declaration table; it imports only this package's kinds

        k = self.spec
        o = copy.deepcopy(self)
        o.batch = o.batch or k.batch
        o.lr = o.lr or k.lr
        o.n_critic = o.n_critic or k.n_critic
        o.critic_norm = o.critic_norm or k.critic_norm
        o.label_smoothing = k.label_smoothing if o.label_smoothing is None else o.label_smoothing
        if o.label_smoothing and not k.has_targets:
            raise TrainError(f"--label-smoothing has no meaning for {o.kind} (its critic has no targets); leave it 0")
        check_declared(o, declared("train", o.kind), TrainError)
        if o.critic_norm == "batch" and not k.batchnorm_critic:
            raise TrainError(f"{o.kind} needs a critic without batch norm (--critic-norm group or none): the gradient "
                             "penalty is per sample")
        if o.eval:
            from .metrics import parse_metrics

            parse_metrics(o.eval)
        return o


# what a run's result depends on, besides its shards (kimg only lengthens it)
SAME_RUN = ("kind", "batch", "lr", "n_critic", "critic_norm", "critic_cond", "g_norm", "nz", "ngf", "ndf", "clip",
            "critic_warmup", "gp_lambda", "label_smoothing", "ema_kimg", "ema_rampup", "seed", "shuffle", "precision",
            "resolution", "n_classes", "augment", "augment_policy")


def shards_digest(urls: list[str], sset: shardset.ShardSet | None) -> str:
    """What a run was trained on: its set's description (which names every shard's sha256), else the shards' names."""
    what = json.dumps(sset.info, sort_keys=True) if sset is not None else json.dumps(urls)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def changed_since(o: TrainOptions, run: Path) -> str | None:
    """How ``o`` differs from the options the run in ``run`` was trained with (``options.json``), in words, or
    None: the shards (their description's digest) and every option in :data:`SAME_RUN` that ``o`` sets."""
    try:
        was = json.loads((run / "options.json").read_text())
    except (OSError, ValueError):
        return None
    now = o.resolved()
    diff = [f"{k} {was.get(k)!r} (now {getattr(now, k)!r})" for k in SAME_RUN
            if k in was and getattr(now, k) is not None and was.get(k) != getattr(now, k)]
    if was.get("shards_digest"):
        try:
            urls, sset = shardset.resolve(now.shards)
        except FileNotFoundError:
            urls, sset = [], None
        if urls and shards_digest(urls, sset) != was["shards_digest"]:
            diff.insert(0, f"other shards ({now.shards} has changed since)")
    return ", ".join(diff) or None
