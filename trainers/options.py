"""A training run's options: what the loop reads — the declared defaults of ``gandata train KIND``
(:mod:`gandata.declarations`), the kind's own defaults filled in, checked once by that declaration when the object is
made — and how a run folder's recorded options compare with new ones."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import shardset
from ..declarations import TRAIN, declared
from ..errors import UserError, named
from ..options import Declaration, Declared
from .kinds import BY_NAME, KINDS, Kind


class TrainError(UserError):
    """A problem with the options or the data, said in one line."""


_D = TRAIN["cdcgan"].defaults()  # every kind declares every option (those it lacks are not offered)


@dataclass
class TrainOptions(Declared):
    """A run's options. Made by a library call, its values are checked by ``gandata train KIND``'s declaration; made
    by the command line or a pipeline (checked already), they are taken as they are. Either way the kind's defaults
    (batch, lr, n_critic, critic_norm, label_smoothing) are filled in here, once."""

    ERROR: ClassVar[type[UserError]] = TrainError
    kind: str
    shards: str
    out: str
    kimg: float = _D["kimg"]
    batch: int | None = None  # None: the kind's
    resolution: int | None = None  # default: from dataset.json, else the first batch
    nz: int = _D["nz"]
    ngf: int = _D["ngf"]
    ndf: int = _D["ndf"]
    lr: float | None = None
    n_critic: int | None = None
    critic_norm: str | None = None
    critic_cond: str = _D["critic_cond"]  # cdcgan: how the critic sees the label (input planes, projection, both)
    g_norm: str = _D["g_norm"]
    clip: float = _D["clip"]
    critic_warmup: bool = _D["critic_warmup"]  # wgan: 100 critic steps for the first 25 G steps and every 500th
    gp_lambda: float = _D["gp_lambda"]
    label_smoothing: float | None = None  # gan/lsgan critics: the reals' target is 1 − this (one-sided); dcgan 0.1
    ema_kimg: float = _D["ema_kimg"]
    ema_rampup: float = _D["ema_rampup"]  # early on the EMA half-life is at most this share of the images seen
    snap_kimg: float = _D["snap_kimg"]
    log_kimg: float = _D["log_kimg"]
    seed: int = _D["seed"]
    workers: int = _D["workers"]
    shuffle: int = _D["shuffle"]
    device: str = _D["device"]  # auto | cpu | cuda
    precision: str = _D["precision"]  # fp32 | bf16 | fp16 (autocast; fp16 with gradient scalers): precision.py
    compile: bool = _D["compile"]  # torch.compile the generator and the critic (not a gradient-penalty critic)
    augment: str = _D["augment"]  # none | diffaug | auto (diffaug for a set under AUTO_AUGMENT_BELOW train images)
    augment_policy: str = _D["augment_policy"]  # augment.py
    resume: str | None = None  # None | auto | a checkpoint path
    gpus: int = _D["gpus"]
    n_classes: int | None = None  # cdcgan: default from dataset.json's labels
    grid: int = _D["grid"]
    threads: int = _D["threads"]  # CPU threads of each process; 0: fitted to the machine (cpu.configure_threads)
    eval: str | None = None  # e.g. "fid,kid": evaluated at every snapshot (off by default)
    eval_real: str | None = None  # the real set for eval (default: the training shards)
    eval_n: int = _D["eval_n"]  # generated images per evaluation
    eval_extractor: str = _D["eval_extractor"]
    inception_weights: str | None = None
    allow_commands: bool = False  # pipe: shard specs run shell commands: the command line allows them, a pipeline
    # file only with allow_commands = true, a library call only when it says so
    extra: dict = field(default_factory=dict)

    @property
    def spec(self) -> Kind:
        return BY_NAME[self.kind]

    def declaration(self) -> Declaration:
        return declared("train", self.kind)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TrainError(f"unknown trainer {self.kind!r}; use one of {', '.join(KINDS)}")
        k = self.spec
        if self.label_smoothing and not k.has_targets:  # not an option of this kind: no declaration names it
            raise TrainError(f"{named('label_smoothing')} has no meaning for {self.kind} (its critic has no targets); "
                             "leave it 0")
        super().__post_init__()
        self.batch = self.batch or k.batch
        self.lr = self.lr or k.lr
        self.n_critic = self.n_critic or k.n_critic
        self.critic_norm = self.critic_norm or k.critic_norm
        self.label_smoothing = k.label_smoothing if self.label_smoothing is None else self.label_smoothing


# what a run's result depends on, besides its shards (kimg only lengthens it)
SAME_RUN = ("kind", "batch", "lr", "n_critic", "critic_norm", "critic_cond", "g_norm", "nz", "ngf", "ndf", "clip",
            "critic_warmup", "gp_lambda", "label_smoothing", "ema_kimg", "ema_rampup", "seed", "shuffle", "precision",
            "resolution", "n_classes", "augment", "augment_policy")


def shards_digest(urls: list[str], sset: shardset.ShardSet | None) -> str:
    """What a run was trained on: its set's description (which names every shard's sha256), else the shards' names."""
    what = json.dumps(sset.info, sort_keys=True) if sset is not None else json.dumps(urls)
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def changed_since(o: TrainOptions, run: Path) -> dict[str, str]:
    """How ``o`` differs from the options the run in ``run`` was trained with (``options.json``): each option in
    :data:`SAME_RUN` that ``o`` sets and that differs, and ``shards`` when the shards' description (its digest)
    changed — as ``{option: what, in words}``, empty when nothing did (or nothing was recorded)."""
    try:
        was = json.loads((run / "options.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(was, dict):
        return {}
    diff = {}
    if was.get("shards_digest"):
        try:
            urls, sset = shardset.resolve(o.shards)
        except FileNotFoundError:
            urls, sset = [], None
        if urls and shards_digest(urls, sset) != was["shards_digest"]:
            diff["shards"] = f"other shards ({o.shards} has changed since)"
    for k in SAME_RUN:
        if k in was and getattr(o, k) is not None and was.get(k) != getattr(o, k):
            diff[k] = f"{k} {was.get(k)!r} (now {getattr(o, k)!r})"
    return diff
