"""One training loop for DCGAN, LSGAN, WGAN, WGAN-GP and conditional DCGAN, on one device or many (torchrun).

* ``--batch`` is global: each of the W ranks takes batch / W. Noise, fake labels and penalty weights are drawn for
  the whole global batch from a generator seeded by (seed, step, phase) and sliced per rank, so a run is
  reproducible, resumes bit for bit, and does the same arithmetic on 1 or N processes (exactly so where nothing
  depends on the per-rank batch, i.e. without batch norm).
* Length in kimg: thousands of real images shown to the critic. No epochs: the data stream is endless.
* With one critic step per generator step (dcgan, lsgan, cdcgan) the generator step reuses the critic step's fake
  batch (pytorch/examples' loop: one G forward per step); the WGANs draw fresh noise for it, as their papers' code.
* EMA of G with a half-life of ``ema_kimg`` thousand real images whatever the kind: β is set per generator step
  from the images that step consumed (n_critic × batch for the WGANs, 100 × batch in WGAN's warm-up).
* CPU threads fitted to the machine (``threads=0``): on CPU, the cores this process may use, shared by the ranks and
  reduced by what other processes run right now — with 4 other busy processes on 2 cores, 2 threads ran 2.2×
  slower than 1 (benchmarks/threads.py); on a GPU a few threads per rank. ``OMP_NUM_THREADS`` set by the user, or
  ``threads``, wins.
* A fixed-noise sample grid (one label per row for cdcgan) every snapshot, checkpoints
  holding everything needed to continue (G, D, EMA, optimisers, step, RNG states, options), written atomically on
  rank 0; ``resume="auto"`` continues from the newest one. Checkpoints load with ``torch.load(weights_only=True)``.
* Metrics every ``log_kimg`` to ``metrics.jsonl`` (and TensorBoard when installed), progress on rank 0 only.
* Multi-process: NCCL on GPUs, gloo on CPU; G and D wrapped in DDP separately with ``broadcast_buffers=False``;
  the network not being trained runs under ``no_sync`` with ``requires_grad`` off; no SyncBatchNorm; parameters
  are checked identical across ranks at every snapshot; the process group is torn down after a final barrier.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import shardset
from ..errors import UserError, hint, named
from ..fileio import FolderLock, atomic_write, atomic_write_json, read_jsonl, remove_stale_tmp
from ..paths import refuse_other_kind
from ..summary import Summary
from . import data as tdata
from .augment import Augment
from .checkpoints import (
    ARCHITECTURE,
    BadCheckpoint,
    architecture_changes,
    latest_checkpoint,
    load_checkpoint,
    load_networks,
    newest_loadable,
    other_architecture,
    rng_state,
    save_atomic,
    set_rng_state,
    stream_seed,
)
from .cpu import configure_threads, pick_device, reuse_heap
from .kinds import AUTO_AUGMENT_BELOW
from .losses import OBJECTIVES, penalty_of
from .models import RESOLUTIONS, build
from .options import TrainError, TrainOptions, changed_since, shards_digest
from .precision import autocast, scaler, slower_here
from .sampling import grid_labels, image_grid

PROGRESS_SECONDS = 10.0  # a progress line at least this often (rank 0), also between metrics rows
ERROR_FILE_ENV = "GANDATA_LAUNCH_ERROR"  # where rank 0 of --gpus N leaves a user's mistake for the command to say
RUN_LOCK_WAIT = 10.0  # seconds to wait for a run folder's lock: a killed run's loader workers take up to ~5 s to go


@dataclass
class TrainSummary(Summary):
    """The end of a training run (also ``RUN/summary.json``)."""

    OMIT_NONE = ("eval", "peak_gpu_mib", "already_trained")
    kind: str
    out: str
    kimg: float  # images shown to the critic, in thousands
    steps: int
    world: int  # processes
    resumed_from: str | None
    seconds: float
    resolution: int
    ddp: bool
    threads: int
    checkpoint: str | None = None  # the last snapshot
    grid: str | None = None
    params_sha256: str | None = None
    ranks_consistent: bool = True
    eval: dict | None = None  # the last snapshot's metrics (--eval)
    peak_gpu_mib: int | None = None
    already_trained: bool | None = None  # the run was finished: nothing was trained (see continuation)

    @classmethod
    def read(cls, run: Path) -> TrainSummary:
        known = {f.name for f in fields(cls)}
        try:
            data = json.loads((run / "summary.json").read_text())
            done = cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            done = None
        if done is None or not isinstance(done.kind, str) or not isinstance(done.kimg, (int, float)):
            raise BadCheckpoint(f"{run / 'summary.json'} is not a gandata run's summary; give the run another folder")
        return done

    def lines(self) -> list[str]:
        first = (f"already trained: {self.kind} for {self.kimg} kimg → {self.out}; nothing done (a longer run: raise "
                 "kimg)" if self.already_trained else
                 f"trained {self.kind} for {self.kimg} kimg ({self.steps} steps, {self.world} process(es), "
                 f"{self.seconds} s) → {self.out}")
        return [first, f"  checkpoint: {self.checkpoint}", f"  samples:    {self.grid}"]

    def brief(self) -> str:
        if self.already_trained:
            return f"already trained: {self.kimg} kimg ({self.checkpoint})"
        return f"{self.kimg} kimg, {self.steps} steps in {self.seconds} s; samples {self.grid}"


def ema_beta(ema_kimg: float, rampup: float, cur_nimg: int, step_nimg: int) -> float:
    """The EMA's β for one generator step that consumed ``step_nimg`` real images (n_critic × batch), so that the
    half-life is ``ema_kimg`` thousand images — or, early on, ``rampup`` × the images seen so far (stylegan2-ada)."""
    half_life = ema_kimg * 1000
    if rampup:
        half_life = min(half_life, cur_nimg * rampup)
    return 0.5 ** (step_nimg / max(half_life, 1e-8))


def step_generator(seed: int, step: int, phase: str) -> torch.Generator:
    """The generator for one phase of one step: the same on every rank, so global draws can be sliced."""
    digest = hashlib.sha256(f"{seed}:{step}:{phase}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def params_digest(*modules: nn.Module) -> str:
    """sha256 of the modules' parameters: what DDP keeps identical on every rank. Not the buffers: batch norm's
    running statistics are each rank's own (``broadcast_buffers=False``), so with them the ranks of every batch-norm
    kind disagreed at the first snapshot."""
    h = hashlib.sha256()
    for m in modules:
        for t in m.parameters():
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


OPTIMIZERS = {  # a kind's ``optimizer`` (kinds.py): its papers' optimiser, at the run's rate
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, betas=o.spec.betas),
    "rmsprop": lambda params, o: torch.optim.RMSprop(params, lr=o.lr),
}


def _optimizer(o: TrainOptions, params) -> torch.optim.Optimizer:
    return OPTIMIZERS[o.spec.optimizer](params, o)


def _dist() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@dataclass
class Shards:
    """What a run trains on, checked as every run checks it before it reads a tar (:meth:`of`): the shards' URLs,
    their set's description, labels, the resolution (None: the first image tells) and the number of classes."""

    urls: list[str]
    sset: shardset.ShardSet | None
    labels: dict | None
    resolution: int | None
    n_classes: int

    @classmethod
    def of(cls, o: TrainOptions) -> Shards:
        """``o``'s shards, or one line: a command where none may run, a spec that names no shards (a dataset
        folder, an empty split), a conditional kind without classes, a set of no samples, a size not built."""
        if not o.allow_commands:
            shardset.refuse_commands([o.shards, o.eval_real or ""], f"{named('shards')} or {named('eval_real')}")
        try:
            urls, sset = shardset.resolve(o.shards)
        except FileNotFoundError as e:
            raise TrainError(f"{named('shards', o.shards)}: {e}") from None
        labels = sset.labels if sset else None
        resolution = o.resolution or (sset.resolution if sset else None)
        n_classes = o.n_classes or (len(labels["names"]) if labels else 0)
        named_classes = len((labels or {}).get("names") or [])
        if o.n_classes and named_classes > o.n_classes:
            raise TrainError(f"{named('n_classes', o.n_classes)}, but {o.shards} has {named_classes} classes (its "
                             f"{shardset.INFO}); leave {named('n_classes')} out (the set says how many) or give at "
                             f"least {hint('n_classes', named_classes)}")
        if o.spec.conditional and n_classes < 2:
            names = (labels or {}).get("names") or []
            found = (f"it names {len(names)} class" if names else f"its {shardset.INFO} names no labels" if sset
                     else f"without a {shardset.INFO} nothing says how many classes it has")
            raise TrainError(f"{o.kind} needs at least 2 classes and {named('shards', o.shards)}: {found}; give "
                             f"{hint('n_classes', 'N')} for shards whose samples each have a .cls label (0 to N-1), "
                             f"or make labelled shards with {hint('label_field', 'FIELD', command='shard')}")
        if sset is not None and sset.total == 0:
            raise TrainError(f"{named('shards', o.shards)}: the set holds no samples ({shardset.INFO} counts 0); "
                             "shard a folder that has images")
        _check_resolution(resolution, named("resolution") if o.resolution else f"the shards ({o.shards})")
        return cls(urls, sset, labels, resolution, n_classes)


# ------------------------------------------------------------------------------------------------ run


def train(options: TrainOptions, progress: bool = True) -> TrainSummary:
    """Train in this process (one rank of a torchrun job when WORLD_SIZE is set). Returns the final summary.
    The run folder is locked by rank 0 for the whole run; what a folder that already holds a run gets is
    :func:`continuation`'s to decide (under the lock: two commands started together cannot both decide)."""
    run = Path(options.out)
    if _dist()[0] != 0:
        o = continuation(options)
        return o if isinstance(o, TrainSummary) else Loop(o, progress)()
    for p in (run, *run.parents):
        if p.exists() and not p.is_dir():
            raise TrainError(f"{named('out', run)}: {p} is a file, not a folder")
    refuse_other_kind(run, "training run", named("out"))
    created = [p for p in (run, *run.parents) if not p.exists()]  # the folders this call makes, deepest first
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"{named('out', run)}: cannot make the folder ({e.strerror})") from None
    try:
        lock = FolderLock(run).acquire(wait=RUN_LOCK_WAIT)
        remove_stale_tmp(run)  # a checkpoint a killed run was writing
    except UserError:
        raise TrainError(f"another training run is writing to {run}; wait for it to end, or give another "
                         f"{named('out')}") from None
    try:
        o = continuation(options)
        return o if isinstance(o, TrainSummary) else Loop(o, progress)()
    except BaseException:
        lock.release()
        _remove_if_unused(run, created)
        raise
    finally:
        lock.release()


class RunChanged(TrainError):
    """The same command found its run folder holding a run trained with other options (``changed``, in words: what
    :func:`~gandata.trainers.options.changed_since` found)."""

    def __init__(self, run: Path, diff: dict[str, str]):
        self.run, self.changed = run, ", ".join(diff.values())
        # a new rate, other shards…: the checkpoint goes on with them (an architecture's option reshapes the networks)
        self.resumable = not set(diff) & set(ARCHITECTURE)
        ways = ["give the options it was trained with to continue it", f"another {named('out')} to start a run with "
                "these"]
        if self.resumable:
            ways.append(f"{hint('resume', 'auto')} to continue it with these")
        super().__init__(f"{run} holds a run trained with {self.changed}: {', '.join(ways[:-1])}, or {ways[-1]}")


def continuation(o: TrainOptions) -> TrainOptions | TrainSummary:
    """What a training command does in its run folder — the one rule for the command line, pipelines and library
    calls, so that running the same command again always continues:

    * a folder that holds no run (no checkpoint, no summary): ``o`` as it is (a new run, or ``--resume FILE``);
    * without ``resume`` (the same command again): the run's recorded options and shards must be these
      (:func:`~gandata.trainers.options.changed_since`; else :class:`RunChanged`, one line naming what changed); a
      finished run (:func:`_finished`: its summary at ``kimg`` or beyond, and the checkpoint of that step in this
      folder, loading) is the summary, ``already_trained``, nothing done; otherwise ``o`` with ``resume="auto"``:
      it continues from its newest loadable checkpoint (and trains again what a lost final checkpoint held);
    * ``resume="auto"`` continues whatever options changed (a new ``--lr``, other shards), a finished run again
      being its summary; ``resume=FILE`` continues from that checkpoint — and, once the run folder holds a newer
      one (the run went on from FILE), the same command continues from the newest, as ``auto``, with a line saying
      so; FILE must be a checkpoint that loads either way."""
    run = Path(o.out)
    newest = latest_checkpoint(run)
    if o.resume not in (None, "auto"):
        given = Path(o.resume)
        if newest is None or not given.is_file() or newest.resolve() == given.resolve() \
                or newest.stat().st_mtime <= given.stat().st_mtime:
            return o
        load_checkpoint(given)  # passed over or not, FILE is a checkpoint: a README or an empty file is one line
        if _dist()[0] == 0:
            print(f"{named('resume', o.resume)}: {run} went on past it (its newest checkpoint is {newest.name}), so "
                  f"the run continues from its newest; to go on from {given.name} instead, give another "
                  f"{named('out')}", file=sys.stderr, flush=True)
        o = replace(o, resume="auto")
    if newest is None and not (run / "summary.json").exists():
        return o
    if o.resume is None:
        diff = changed_since(o, run)
        if diff:
            raise RunChanged(run, diff)
    done = _finished(o, run)
    return done if done is not None else replace(o, resume="auto")


def _finished(o: TrainOptions, run: Path) -> TrainSummary | None:
    """The run's summary, ``already_trained``, when it was trained as this kind to ``o.kimg`` or beyond (the loop's
    own test: images shown ≥ int(kimg × 1000)) and that is proven: the checkpoint of its last step is in ``run`` and
    loads. None when it has further to go (or no summary), or when that checkpoint is missing or damaged — the run
    then continues from its newest checkpoint that loads and trains the rest again. Before a run is called finished
    the command is checked as a new run would be — its shards (:meth:`Shards.of`, no tar read) and, against the
    checkpoint, the options that shape the networks — so a finished run never lets bad input through. Its paths are
    this folder's: a run folder copied or moved names its own files, not the ones its summary recorded."""
    if not (run / "summary.json").exists():
        return None
    done = TrainSummary.read(run)
    if done.kind != o.kind or round(done.kimg * 1000) < int(o.kimg * 1000):
        return None
    shards = Shards.of(o)
    nimg = round(done.kimg * 1000)
    final = run / f"checkpoint-{nimg:09d}.pt"
    try:
        ck = load_checkpoint(final)
    except TrainError:  # missing or damaged: not finished (the resume says which checkpoint it continues from)
        return None
    diff = architecture_changes(ck, o, shards.resolution, shards.n_classes)
    if diff:
        raise other_architecture(final, diff)
    grid = run / f"fakes-{nimg:09d}.png"
    if isinstance(done.resumed_from, str) and isinstance(done.out, str) \
            and Path(done.resumed_from).parent == Path(done.out):
        done.resumed_from = str(run / Path(done.resumed_from).name)
    done.out, done.checkpoint, done.grid = str(run), str(final), str(grid) if grid.exists() else None
    done.already_trained = True
    return done


def _remove_if_unused(run: Path, created: list[Path]) -> None:
    """A run refused before it wrote anything (bad shards, bad options) leaves no folder behind: the ones it made are
    removed again while they hold nothing but the lock file."""
    try:
        if not created or any(p.name != ".lock" for p in run.iterdir()):
            return
        (run / ".lock").unlink(missing_ok=True)
        for folder in created:
            folder.rmdir()
    except OSError:
        pass  # not empty after all (another command wrote there): leave it


class Loop:
    """One rank's run, in the phases a step has: :meth:`critic_step` (n of them), :meth:`generator_step`, then
    :meth:`log` and :meth:`snapshot` when due. Whatever differs between the kinds is asked of ``self.kind`` (a
    :class:`~gandata.trainers.kinds.Kind`): objective, conditioning, penalty, warm-up, smoothing."""

    def __init__(self, o: TrainOptions, progress: bool):
        self.o, self.progress, self.kind = o, progress, o.spec
        self.objective = OBJECTIVES[self.kind.objective]
        self.penalty = penalty_of(self.kind.penalty, o.gp_lambda, o.clip)
        self.rank, self.world, local_rank = _dist()
        self.device = device = pick_device(o.device, local_rank)
        reuse_heap()  # before the loader workers are forked: they inherit it
        if o.eval and o.eval_extractor == "inception":  # every rank: none starts if rank 0 cannot evaluate
            from .metrics import find_weights

            find_weights(o.inception_weights)
        self.distributed = self.world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun: DDP even for one
        if self.distributed and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.threads = configure_threads(device, self.world, o.workers, o.threads)
        slow = slower_here(o.precision, device)
        if slow and self.rank == 0:
            print(slow, file=sys.stderr, flush=True)
        if o.batch % self.world:
            raise TrainError(f"{named('batch', o.batch)} does not divide among {self.world} processes")
        self.per_rank = o.batch // self.world
        self.run = Path(o.out)
        if self.rank == 0:
            self.run.mkdir(parents=True, exist_ok=True)
        _barrier(self.world)
        seed = o.seed * self.world + self.rank
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._data()
        self._networks()
        self._record()

    # ------------------------------------------------------------------------------------------------ setup

    def _data(self) -> None:
        o = self.o
        shards = Shards.of(o)
        self.urls, self.sset, self.labels = shards.urls, shards.sset, shards.labels
        self.resolution, self.n_classes = shards.resolution, shards.n_classes
        self.ckpt_path, self.ck = None, None
        if o.resume == "auto":
            self.ckpt_path, self.ck = newest_loadable(self.run, self.device, warn=self.rank == 0)
        elif o.resume:
            self.ckpt_path = Path(o.resume)
            self.ck = load_checkpoint(self.ckpt_path, map_location=self.device)
        loader = tdata.stream(self.urls, self.per_rank, conditional=self.kind.conditional, workers=o.workers,
                              shuffle=o.shuffle, seed=stream_seed(o, self.ckpt_path),
                              pin_memory=self.device.type == "cuda", commands=o.allow_commands,
                              n_classes=self.n_classes, resolution=self.resolution)
        self.batches = tdata.batches(loader)
        if self.resolution is None:
            first = next(self.batches)
            self.resolution = int(first[0].shape[-1])
            _check_resolution(self.resolution, f"the shards ({o.shards})")

    def _networks(self) -> None:
        o, device = self.o, self.device
        self.G, self.D = build(o, self.resolution, self.n_classes)
        self.G.to(device)
        self.D.to(device)
        # channels_last on a GPU: cuDNN's faster convolution layouts (with reduced precision above all); on the CPU
        # the default layout (the same arithmetic as before: a run's bytes do not change)
        self.layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.G.to(memory_format=self.layout)
        self.D.to(memory_format=self.layout)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.optG, self.optD = _optimizer(o, self.G.parameters()), _optimizer(o, self.D.parameters())
        self.step, self.cur_nimg, self.resumed_from = 0, 0, None
        ck = self.ck
        if ck is not None:
            load_networks(ck, self.ckpt_path, o, self.resolution, self.n_classes, self.G, self.D, self.G_ema)
            self.optG.load_state_dict(ck["optG"])
            self.optD.load_state_dict(ck["optD"])
            for group in (*self.optG.param_groups, *self.optD.param_groups):  # the command's --lr, as every option
                group["lr"] = o.lr
            self.step, self.cur_nimg = int(ck["step"]), int(ck["cur_nimg"])
            if ck.get("world") == self.world:
                set_rng_state(ck["rng"][self.rank] if isinstance(ck["rng"], list) else ck["rng"])
            self.resumed_from = str(self.ckpt_path)
        elif o.resume not in (None, "auto"):
            raise TrainError(f"{named('resume', o.resume)}: no such checkpoint")
        self.Gd, self.Dd = self.G, self.D
        if self.distributed:
            ids = [device.index] if device.type == "cuda" else None
            with warnings.catch_warnings():  # newer torch: a FutureWarning per wrapper and rank (still supported)
                warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
                self.Gd = nn.parallel.DistributedDataParallel(self.G, device_ids=ids, broadcast_buffers=False)
                self.Dd = nn.parallel.DistributedDataParallel(self.D, device_ids=ids, broadcast_buffers=False)
        self.Dgp = self.Dd  # the critic the gradient penalty differentiates twice: never compiled
        if o.compile:
            self._compile()
        self.autocast = autocast(o.precision, device)
        self.scale_d, self.scale_g = scaler(o.precision, device), scaler(o.precision, device)
        if ck is not None and self.scale_d.is_enabled() and isinstance(ck.get("scalers"), dict):
            self.scale_d.load_state_dict(ck["scalers"]["D"])
            self.scale_g.load_state_dict(ck["scalers"]["G"])
        self.augment = self._augmentation()
        self.slice = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
        self.draw_labels = tdata.label_sampler(self.labels, self.n_classes)
        # fixed noise for the grid (the same in every run with this seed); one label per row when conditional
        self.rows = int(math.sqrt(o.grid)) or 1
        self.gz = torch.randn(o.grid, o.nz, generator=step_generator(o.seed, -1, "grid")).to(device)
        self.gy = grid_labels(o.grid, self.rows, self.n_classes).to(device) if self.kind.conditional else None

    def _compile(self) -> None:
        """torch.compile the generator, and the critic unless a gradient penalty differentiates it twice (compiled
        graphs have no double backward). Where the compiler is missing or fails on these networks (tried on one
        small batch now, not in the middle of the run), one line says so and the run goes on eagerly."""
        try:
            G, D = torch.compile(self.Gd), self.Dd if self.penalty.double_backward else torch.compile(self.Dd)
            self.G.eval()  # the trial must not move batch norm's running statistics
            self.D.eval()
            with torch.no_grad():
                z = torch.zeros(2, self.o.nz, device=self.device)
                y = torch.zeros(2, dtype=torch.long, device=self.device) if self.kind.conditional else None
                D(G(z, y), y)
        except Exception as e:  # the backend's own exception types vary (a C compiler, Triton, an op)
            if self.rank == 0:
                print(f"{named('compile')}: torch.compile is not available here ({type(e).__name__}: "
                      f"{(str(e).splitlines() or [''])[0][:160]}); training without it", file=sys.stderr, flush=True)
            return
        finally:
            self.G.train()
            self.D.train()
        self.Gd, self.Dd = G, D

    def _augmentation(self) -> Augment | None:
        """DiffAugment when asked, or (``auto``) when the train split is under AUTO_AUGMENT_BELOW images."""
        o = self.o
        on = o.augment == "diffaug" or (o.augment == "auto" and self.sset is not None
                                        and 0 < self.sset.total < AUTO_AUGMENT_BELOW)
        self.augmenting = on
        return Augment(o.augment_policy) if on else None

    def _aug(self, x: torch.Tensor, phase: str) -> torch.Tensor:
        """``x`` as the critic sees it: augmented (when on) with this step's and phase's own draws."""
        if self.augment is None:
            return x
        return self.augment(x, step_generator(self.o.seed, self.step, "aug-" + phase), self.o.batch, self.slice)

    def _record(self) -> None:
        if self.rank != 0:
            return
        o = self.o
        resolved = {**asdict(o), "resolution": self.resolution, "n_classes": self.n_classes, "world": self.world,
                    "per_rank_batch": self.per_rank, "device": str(self.device), "threads": self.threads,
                    "label_names": self.labels["names"] if self.labels else None, "shard_urls": self.urls[:50],
                    "augmenting": self.augmenting,
                    "shards_digest": shards_digest(self.urls, self.sset), "torch": torch.__version__}
        atomic_write_json(self.run / "options.json", resolved)

    # ------------------------------------------------------------------------------------------------ steps

    def draw(self, phase: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Noise, fake labels and penalty weights of one phase of this step: drawn for the global batch from the
        step's own generator and sliced to this rank."""
        o = self.o
        g = step_generator(o.seed, self.step, phase)
        z = torch.randn(o.batch, o.nz, generator=g)[self.slice]
        y = self.draw_labels(o.batch, g)[self.slice].to(self.device) if self.kind.conditional else None
        alpha = torch.rand(o.batch, generator=g)[self.slice]
        return z.to(self.device), y, alpha.to(self.device)

    def next_batch(self, first: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next real batch on the device. Shards that cannot be read (any more) stop the run; what was trained
        since the last checkpoint is saved first (single process, at a step's first critic batch)."""
        try:
            batch = next(self.batches)
        except tdata.DataError as e:
            if first and self.world == 1 and self.step > self.saved_step:
                self.stop_if_diverged()
                saved = self.snapshot(evaluate=False)
                raise tdata.DataError(f"{e} (saved {saved['checkpoint']} first)") from None
            raise
        real, y = tdata.to_device(batch, self.device, self.kind.conditional)
        return real.contiguous(memory_format=self.layout), y

    def critic_step(self, i: int, keep_graph: bool) -> dict:
        """One critic update on a real batch and a fake one. ``keep_graph``: the fake batch keeps its graph to G, for
        the generator step to reuse (one G forward per step, as pytorch/examples' DCGAN loop)."""
        o = self.o
        real, y_real = self.next_batch(first=i == 0)
        z, y_fake, alpha = self.draw(f"d{i}")
        with torch.set_grad_enabled(keep_graph), self.autocast:
            generated = self.Gd(z, y_fake)
        fake = generated.detach()
        real, fake = self._aug(real, f"d{i}-real"), self._aug(fake, f"d{i}-fake")
        with self.autocast:
            d_real = self.Dd(real, y_real)
            d_fake = self.Dd(fake, y_fake)
        objective = self.objective.d_loss(d_real, d_fake, 1.0 - o.label_smoothing)
        loss, gp = self.penalty.add(objective, self.Dgp, real, fake, alpha, y_fake, self.autocast, self.scale_d)
        self.optD.zero_grad(set_to_none=True)
        self.scale_d.scale(loss).backward()
        self.scale_d.step(self.optD)
        self.scale_d.update()
        self.penalty.after_step(self.D)
        self.cur_nimg += o.batch
        # the loss the divergence guard reads: under fp16 a penalty made infinite by the gradient scale is the
        # scaler's to handle (it skips the step and lowers the scale), not a divergence
        watched = objective if self.scale_d.is_enabled() else loss
        return {"generated": generated, "y_fake": y_fake, "loss": loss, "watched": watched, "gp": gp,
                "d_real": d_real, "d_fake": d_fake}

    def generator_step(self, last: dict, reuse: bool, n_d: int) -> torch.Tensor:
        """One generator update (on the critic step's fake batch when ``reuse``, else on fresh noise), then the
        EMA of G."""
        o = self.o
        self.D.requires_grad_(False)
        self.G.requires_grad_(True)
        no_sync = self.Dd.no_sync() if self.distributed else contextlib.nullcontext()
        generated, y_fake = last["generated"], last["y_fake"]
        with self.autocast, no_sync:
            if not reuse:
                z, y_fake, _ = self.draw("g")
                generated = self.Gd(z, y_fake)
            d_gen = self.Dd(self._aug(generated, "g"), y_fake)
        lg = self.objective.g_loss(d_gen)
        self.optG.zero_grad(set_to_none=True)
        self.scale_g.scale(lg).backward()
        self.scale_g.step(self.optG)
        self.scale_g.update()
        beta = ema_beta(o.ema_kimg, o.ema_rampup, self.cur_nimg, n_d * o.batch)
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        return lg

    def train_step(self) -> None:
        """The critic's steps, then the generator's; the losses added to the running sums."""
        o = self.o
        n_d = self.kind.critic_steps(o.n_critic, self.step, o.critic_warmup)
        self.D.requires_grad_(True)
        reuse = n_d == 1
        self.G.requires_grad_(reuse)
        for i in range(n_d):
            last = self.critic_step(i, reuse)
        lg = self.generator_step(last, reuse, n_d)
        with torch.no_grad():
            loss, d_real, d_fake = last["loss"], last["d_real"], last["d_fake"]
            values = torch.stack([loss.detach().float(), lg.detach().float(),
                                  (d_real.float().mean() - d_fake.float().mean()).detach(),
                                  last["gp"].detach().float(), torch.ones((), device=self.device)])
            if self.scale_d.is_enabled():  # fp16: a step with a non-finite value was skipped by its gradient scaler
                finite = torch.isfinite(values).all()  # (not a divergence: see critic_step): counted, not averaged
                self.sums += torch.where(finite, values, torch.zeros_like(values))
                self.skipped += ~finite
            else:  # a non-finite value here is a divergence: the run stops before it is logged
                self.sums += values
            self.diverged |= ~(torch.isfinite(last["watched"].detach()) & torch.isfinite(lg.detach()))
        self.step += 1

    # -------------------------------------------------------------------------------------- logs, snapshots

    def stop_if_diverged(self) -> None:
        """Checked before every log line and snapshot (one sync, agreed by every rank): a loss that became NaN or
        infinite stops the run before a damaged checkpoint is written; the last one written is good."""
        flag = self.diverged.to(torch.int32)
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            last, lower = latest_checkpoint(self.run), hint("lr", float(f"{self.o.lr / 10:g}"))
            how = (f"go on from the last good checkpoint at a lower rate: {hint('resume', last)} {lower}" if last else
                   f"no checkpoint was written: start again at a lower rate ({lower})")
            raise TrainError(f"training diverged: a loss became NaN or infinite by {self.cur_nimg / 1000:g} kimg "
                             f"(step {self.step}, {named('lr', self.o.lr)}); {how}")

    def log(self) -> None:
        """A metrics row (``metrics.jsonl``, TensorBoard) and a progress line, averaged since the last row."""
        o, now = self.o, time.monotonic()
        vals = self.sums.tolist()
        n = vals[4]  # 0: every step since the last row skipped by the fp16 scaler, nothing to average
        d_loss, g_loss, gap, gp = (v / n if n and math.isfinite(v / n) else None for v in vals[:4])
        row = {"kimg": round(self.cur_nimg / 1000, 3), "step": self.step, "d_loss": d_loss, "g_loss": g_loss,
               "critic_gap": gap, "gp": gp,
               "images_per_s": round((self.cur_nimg - self.nimg_tick) / max(now - self.t_tick, 1e-9), 1),
               "seconds": round(now - self.t_start, 1)}
        if self.scale_d.is_enabled():
            row["skipped"] = int(self.skipped.item())  # steps whose gradient scaler found inf or NaN
            self.skipped.zero_()
        self.sums.zero_()
        self.t_tick, self.nimg_tick = now, self.cur_nimg
        self.next_log += int(o.log_kimg * 1000)
        if self.rank != 0:
            return
        self.metrics.write(json.dumps(row, allow_nan=False) + "\n")  # strict JSON: a value is a number or null
        self.metrics.flush()
        if self.writer is not None:
            for key in ("d_loss", "g_loss", "critic_gap", "gp", "images_per_s"):
                if row[key] is not None:
                    self.writer.add_scalar(key, row[key], self.cur_nimg)
        if self.progress:
            losses = ("every step skipped by the fp16 gradient scaler" if not n else
                      f"d {d_loss:.4f}  g {g_loss:.4f}  gap {gap:.4f}" if None not in (d_loss, g_loss, gap) else
                      "a loss is not finite")
            print(f"{o.kind} {row['kimg']:.1f}/{o.kimg:g} kimg  {losses}  {row['images_per_s']:.0f} img/s  "
                  f"ETA {_eta(self.cur_nimg, self.start_nimg, self.total, now - self.t_start)}",
                  file=sys.stderr, flush=True)
            self.last_line = now

    def heartbeat(self) -> None:
        """A progress line between metrics rows, at least every PROGRESS_SECONDS (rank 0)."""
        now = time.monotonic()
        if self.rank == 0 and self.progress and now - self.last_line >= PROGRESS_SECONDS:
            rate = (self.cur_nimg - self.start_nimg) / max(now - self.t_start, 1e-9)
            print(f"{self.o.kind} {self.cur_nimg / 1000:.1f}/{self.o.kimg:g} kimg  {rate:.0f} img/s  "
                  f"ETA {_eta(self.cur_nimg, self.start_nimg, self.total, now - self.t_start)}", file=sys.stderr,
                  flush=True)
            self.last_line = now

    def snapshot(self, evaluate: bool = True) -> dict:
        """Check the ranks agree, then on rank 0: the sample grid, an atomic checkpoint, and the metrics when asked
        (the other ranks wait at the barrier)."""
        o, world = self.o, self.world
        digest = params_digest(self.G, self.D)
        consistent = True
        states = [rng_state()]
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, {"digest": digest, "rng": rng_state()})
            consistent = all(g["digest"] == digest for g in gathered)
            states = [g["rng"] for g in gathered]
            if not consistent:
                raise RuntimeError(f"ranks disagree on the parameters at step {self.step}: a DDP bug, please report it")
        out = {"checkpoint": None, "grid": None, "params_sha256": digest, "ranks_consistent": consistent}
        if self.rank == 0:
            with torch.no_grad():
                fakes = self.G_ema(self.gz, self.gy)
            grid = self.run / f"fakes-{self.cur_nimg:09d}.png"
            atomic_write(grid, image_grid(fakes, self.rows))
            ck = {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                  "optG": self.optG.state_dict(), "optD": self.optD.state_dict(), "step": self.step,
                  "cur_nimg": self.cur_nimg, "world": world, "rng": states if world > 1 else states[0],
                  "options": json.loads(json.dumps(asdict(o))), "gandata": _version()}
            if self.scale_d.is_enabled():  # fp16: the gradient scales, so that a resumed run goes on with them
                ck["scalers"] = {"D": self.scale_d.state_dict(), "G": self.scale_g.state_dict()}
            path = self.run / f"checkpoint-{self.cur_nimg:09d}.pt"
            save_atomic(ck, path)
            out.update(checkpoint=str(path), grid=str(grid))
            if evaluate and self.evaluator is not None:
                out["eval"] = self.evaluator(self.G_ema, path, self.cur_nimg)
        _barrier(world)
        self.saved_step = self.step
        return out

    # -------------------------------------------------------------------------------------------------- run

    def _schedule(self) -> None:
        """Where the run stands and when it next logs and snapshots (from the step resumed at, or 0), the running
        loss sums and the clocks: what the steps, :meth:`log` and :meth:`snapshot` read and move on."""
        o = self.o
        self.total = int(o.kimg * 1000)
        self.next_log = (self.cur_nimg // int(o.log_kimg * 1000) + 1) * int(o.log_kimg * 1000)
        self.next_snap = (self.cur_nimg // int(o.snap_kimg * 1000) + 1) * int(o.snap_kimg * 1000)
        self.sums = torch.zeros(5, device=self.device)  # d_loss, g_loss, gap, gp, count
        self.skipped = torch.zeros((), dtype=torch.int64, device=self.device)  # fp16: steps the scaler skipped
        self.diverged = torch.zeros((), dtype=torch.bool, device=self.device)  # a non-finite loss since the check
        self.saved_step = self.step  # the step of the newest checkpoint (the one resumed from, or 0)
        self.t_start = self.t_tick = self.last_line = time.monotonic()
        self.nimg_tick = self.start_nimg = self.cur_nimg

    def _open_outputs(self) -> None:
        """Rank 0's logs (metrics.jsonl without the rows after the checkpoint resumed from, TensorBoard), the grid of
        real images of a new run, and the evaluator of ``--eval``."""
        o = self.o
        self.writer = self.metrics = self.evaluator = None
        if self.rank != 0:
            return
        if self.progress and self.resumed_from:
            print(f"{o.kind}: resuming from {self.resumed_from} at {self.cur_nimg / 1000:g} kimg (step {self.step})",
                  file=sys.stderr, flush=True)
        lost = self._lost_steps() if self.progress else None
        if lost:
            print(lost, file=sys.stderr, flush=True)
        self.writer = _tensorboard(self.run)
        _forget_rows_after(self.run / "metrics.jsonl", self.cur_nimg)
        self.metrics = open(self.run / "metrics.jsonl", "a")
        if self.step == 0:
            real = next(self.batches)[0][: o.grid]
            atomic_write(self.run / "reals.png", image_grid(real.float() / 127.5 - 1,
                                                           max(1, int(math.sqrt(len(real))))))
        if o.eval:
            from .metrics import SnapshotEval

            self.evaluator = SnapshotEval(o, self.device, self.n_classes if self.kind.conditional else 0,
                                          self.progress, self.resolution)

    def _lost_steps(self) -> str | None:
        """Why a run that its summary calls trained further continues from an earlier step (``resume="auto"`` found
        nothing newer that loads): the checkpoint of the summary's last step is missing or damaged — a line saying
        so, else None."""
        if self.o.resume != "auto":
            return None
        try:
            said = round(TrainSummary.read(self.run).kimg * 1000) if (self.run / "summary.json").exists() else 0
        except TrainError:
            return None
        if said <= self.cur_nimg:
            return None
        final = self.run / f"checkpoint-{said:09d}.pt"
        return (f"{self.o.kind}: {self.run} was trained to {said / 1000:g} kimg, but {final.name} "
                f"{'does not load' if final.exists() else 'is not in the folder'}, so it continues from "
                f"{self.cur_nimg / 1000:g} kimg")

    def _close_outputs(self) -> None:
        for f in (self.metrics, self.writer):
            if f is not None:
                f.close()
        if self.distributed and dist.is_initialized():
            _barrier(self.world)
            dist.destroy_process_group()

    def _train_until_done(self, ctrl_c: CtrlC | None) -> dict:
        """Steps until ``kimg``, with their logs and snapshots; Ctrl-C saves a checkpoint after the step in progress,
        then raises KeyboardInterrupt. Returns the last snapshot's description."""
        o, last = self.o, {}
        while self.cur_nimg < self.total:
            self.train_step()
            interrupted = ctrl_c is not None and ctrl_c.requested
            end = self.cur_nimg >= self.total
            if self.cur_nimg >= self.next_log or self.cur_nimg >= self.next_snap or end or interrupted:
                self.stop_if_diverged()
            if self.cur_nimg >= self.next_log or end:
                self.log()
            self.heartbeat()
            if self.cur_nimg >= self.next_snap or end:
                last = self.snapshot()
                self.next_snap += int(o.snap_kimg * 1000)
            elif interrupted:  # the one instruction (run the same command again) is the command line's
                saved = self.snapshot(evaluate=False)
                print(f"{o.kind}: interrupted at {self.cur_nimg / 1000:g} kimg; saved {saved['checkpoint']}",
                      file=sys.stderr, flush=True)
            if interrupted:
                raise KeyboardInterrupt
        return last

    def __call__(self) -> TrainSummary:
        self._schedule()
        self._open_outputs()
        ctrl_c = CtrlC.install() if self.world == 1 else None  # several ranks: each stops where the signal finds it
        try:
            last = self._train_until_done(ctrl_c)
        finally:
            if ctrl_c is not None:
                ctrl_c.uninstall()
            self._close_outputs()
        device = self.device
        trained = self.cur_nimg > self.start_nimg
        if not trained:  # resumed at or past kimg: the checkpoint it was resumed from is the run's last one
            grid = self.run / f"fakes-{self.cur_nimg:09d}.png"
            last = {"checkpoint": self.resumed_from, "grid": str(grid) if grid.exists() else None,
                    "params_sha256": params_digest(self.G, self.D)}
        result = TrainSummary(
            kind=self.o.kind, out=str(self.run), kimg=round(self.cur_nimg / 1000, 3), steps=self.step,
            world=self.world, resumed_from=self.resumed_from, seconds=round(time.monotonic() - self.t_start, 1),
            resolution=self.resolution, ddp=self.distributed, threads=self.threads, **last,
            peak_gpu_mib=round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
            already_trained=None if trained else True)
        if self.rank == 0:
            atomic_write_json(self.run / "summary.json", result.to_json())
        return result


class CtrlC:
    """Ctrl-C (SIGINT) or SIGTERM (a scheduler's or ``kill``'s stop) during training: the step in progress
    finishes, a checkpoint is written, then KeyboardInterrupt. A second signal stops at once. Only in the main
    thread of a single-process run."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    AT_ONCE = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}

    def __init__(self):
        self.requested, self.previous = False, {}

    @classmethod
    def install(cls) -> CtrlC | None:
        guard = cls()
        try:
            guard.previous = {sig: signal.signal(sig, guard._handle) for sig in cls.SIGNALS}
        except ValueError:  # not the main thread
            return None
        return guard

    def _handle(self, signum, frame) -> None:
        self.requested = True
        for sig, at_once in self.AT_ONCE.items():  # a second signal: Ctrl-C raises, SIGTERM ends the process
            signal.signal(sig, at_once)

    def uninstall(self) -> None:
        for sig in self.SIGNALS:
            previous = self.previous.get(sig)
            signal.signal(sig, previous if previous is not None else self.AT_ONCE[sig])


def _eta(cur_nimg: int, start_nimg: int, total: int, seconds: float) -> str:
    """Time left at this process's average rate so far, as h:mm:ss."""
    done = cur_nimg - start_nimg
    if done <= 0:
        return "?"
    left = int(max(total - cur_nimg, 0) * seconds / done)
    return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"


def _forget_rows_after(path: Path, cur_nimg: int) -> None:
    """Drop the metrics rows logged after the checkpoint a run continues from (they are logged again as the run
    redoes those steps), so that no kimg appears twice."""
    if not path.exists():
        return
    rows = list(read_jsonl(path))
    keep = [r for r in rows if round(float(r.get("kimg", 0)) * 1000) <= cur_nimg]
    if len(keep) != len(rows):
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in keep).encode())


def _check_resolution(resolution: int | None, what: str) -> None:
    if resolution is not None and resolution not in RESOLUTIONS:
        raise TrainError(f"{what}: {resolution} px is not a size the trainers build ({', '.join(map(str, RESOLUTIONS))}"
                         f" px); make shards at one of them with {hint('size', 64, command='shard')}")


def _barrier(world: int) -> None:
    if dist.is_initialized():
        dist.barrier()


def _version() -> str:
    from .. import __version__

    return __version__


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: JSONL only
        return None
    return SummaryWriter(str(run / "tensorboard"))


# ------------------------------------------------------------------------------------------------- launch


def launch(options: TrainOptions, progress: bool = True) -> TrainSummary:
    """Train with ``options.gpus`` processes: in this process when it is 1 or when already under torchrun,
    otherwise through torch's own launcher (``python -m torch.distributed.run --standalone``), after
    :func:`continuation` has decided what the run folder gets (a finished run starts no process)."""
    if options.gpus <= 1 or "WORLD_SIZE" in os.environ:
        return train(options, progress)
    _check_processes(options)
    Shards.of(options)  # a mistake in them is one line before any process starts
    o = continuation(options)
    if isinstance(o, TrainSummary):
        return o
    run = Path(o.out)
    refuse_other_kind(run, "training run", named("out"))
    created = [p for p in (run, *run.parents) if not p.exists()]
    run.mkdir(parents=True, exist_ok=True)
    _remove_stale_launches(run)
    # this command's own folder (another command may start beside it, and be refused): the options the ranks read,
    # the file rank 0 leaves a user's mistake in, and torch's launcher's logs (its default, a torchelastic_* folder
    # in the temporary folder, is never removed); all of it removed when the ranks are gone
    here = run / f"launch-{os.getpid()}"
    here.mkdir(exist_ok=True)
    spec, said = here / "options.json", here / "error.txt"
    atomic_write_json(spec, asdict(o))
    said.touch()
    cmd = [sys.executable, "-m", "gandata.trainers.train", "--launcher", "--standalone",
           f"--nproc-per-node={o.gpus}", f"--log-dir={here / 'logs'}", "-m", "gandata.trainers.train",
           "--options", str(spec)]
    env = dict(os.environ)
    if not env.get("OMP_NUM_THREADS"):  # torchrun would force 1 thread per process; ours are fitted in each rank
        env.update(OMP_NUM_THREADS="1", GANDATA_AUTO_THREADS="1")
    try:
        code = _run_ranks(cmd, {**env, ERROR_FILE_ENV: str(said)})
        error = said.read_text()
    finally:
        shutil.rmtree(here, ignore_errors=True)
    if error:  # a mistake rank 0 found (the shards, the options): its one line, and no folder left for it
        _remove_if_unused(run, created)
        raise TrainError(error)
    if code != 0:
        raise TrainError(f"the {o.gpus} training processes failed (exit {code}); see their output above")
    return TrainSummary.read(run)


def _check_processes(o: TrainOptions) -> None:
    """``--gpus N`` starts N processes: at most one a GPU torch sees, or on the CPU one a core (more only share
    the cores, each with a copy of the models — 1024 of them held a 2-core machine for twenty minutes)."""
    on_cpu = o.device == "cpu" or (o.device == "auto" and not torch.cuda.is_available())
    have = (os.cpu_count() or 1) if on_cpu else torch.cuda.device_count()
    if o.gpus > have:
        what = f"{have} CPU core{'s' if have != 1 else ''} (on the CPU: one process a core at most)" if on_cpu \
            else f"{have} GPU{'s' if have != 1 else ''} torch sees"
        raise TrainError(f"{named('gpus', o.gpus)} asks for {o.gpus} training processes, but this machine has "
                         f"{what}; give {hint('gpus', min(have, 1024) if have > 0 else 1)}")


def _remove_stale_launches(run: Path) -> None:
    """The launch folders of commands that were killed (SIGKILL leaves no time to remove them): those named by a
    process that is gone."""
    for folder in run.glob("launch-*"):
        pid = folder.name.removeprefix("launch-")
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _run_ranks(cmd: list[str], env: dict) -> int:
    """Run torch's launcher and wait for it. It runs in a session of its own, so a terminal's Ctrl-C reaches only
    this process, which passes it on once as SIGTERM (as it does its own SIGTERM) and waits: the launcher stops its
    ranks and exits, and no rank outlives the command — on Linux not even when this process is killed (SIGKILL):
    the kernel sends the launcher SIGTERM then. A signal ends in KeyboardInterrupt once the ranks are gone (the
    newest checkpoint is where the same command continues)."""
    linux = sys.platform.startswith("linux")
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=functools.partial(_term_with_parent, os.getpid()) if linux else None)
    stopped: list[int] = []

    def stop(signum, frame) -> None:
        if not stopped:
            stopped.append(signum)
            proc.send_signal(signal.SIGTERM)

    previous = {}
    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: no signals to pass on
        pass
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped:
        raise KeyboardInterrupt
    return code


def _term_with_parent(parent: int) -> None:
    """In the launcher's child, before it runs, and in each rank: SIGTERM when the parent dies (Linux's
    PR_SET_PDEATHSIG)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _main(argv: list[str]) -> None:
    """``python -m gandata.trainers.train --options FILE``: one rank of what ``--gpus N`` launches (``--launcher
    ARGS``: torch's launcher itself, see :func:`_launcher`). A user's own ``torchrun`` command runs the CLI instead:
    ``torchrun … -m gandata train KIND --shards …``."""
    if argv[:1] == ["--launcher"]:
        _launcher(argv[1:])
    if argv[:1] != ["--options"] or len(argv) != 2:
        sys.exit("usage: python -m gandata.trainers.train --options FILE (for your own torchrun command use "
                 "'-m gandata train KIND' and its options)")
    if sys.platform.startswith("linux"):  # a rank never outlives the launcher (killed, or its stop cut short)
        if os.getppid() == 1:
            leave_now(1)
        _term_with_parent(os.getppid())
    try:
        train(TrainOptions(**json.loads(Path(argv[1]).read_text())))
    except UserError as e:  # one line, said once: by the command that launched the ranks, from rank 0's file
        said = os.environ.get(ERROR_FILE_ENV)
        if not said:
            print(f"gandata: error: {e}", file=sys.stderr, flush=True)
        elif _dist()[0] == 0:
            Path(said).write_text(str(e))
        leave_now(1)
    leave_now(0)


def _launcher(argv: list[str]) -> None:
    """torch's launcher (``torch.distributed.run``), quiet where the command says it all: stopped by the command
    (Ctrl-C, SIGTERM: the ranks are gone when it returns) it ends with 130 and no traceback of its own; a rank that
    failed has said why (its traceback, or its one line to the command), so the launcher's report is left out."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    for name in list(logging.root.manager.loggerDict):  # no lines about the ranks it stops or that failed
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun.main(argv)
    except SignalException:
        leave_now(130)
    except ChildFailedError as e:
        leave_now(e.get_first_failure()[1].exitcode or 1)
    leave_now(0)


def leave_now(code: int) -> None:
    """End a torchrun rank that has finished its work: everything it wrote is closed and atomic, and the process
    group is destroyed. Python's own teardown is skipped: there, C++ threads of the distributed backend could be
    destroyed while still joinable (``terminate called without an active exception``, SIGABRT), failing a run that
    had succeeded — seen in 1 of 5 full test runs on 2 busy cores."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)



if __name__ == "__main__":
    _main(sys.argv[1:])
