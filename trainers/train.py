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
import errno
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import shardset
from ..errors import FormatError, UserError
from ..fileio import FolderLock, atomic_file, atomic_write, atomic_write_json, read_jsonl, remove_stale_tmp
from ..summary import Summary
from . import data as tdata
from .kinds import CRITIC_CONDITIONING, DEFAULTS, KINDS
from .losses import clip_weights, d_loss, g_loss, gradient_penalty
from .models import RESOLUTIONS, Critic, Generator

CHECKPOINT_RE = "checkpoint-*.pt"
PROGRESS_SECONDS = 10.0  # a progress line at least this often (rank 0), also between metrics rows
RUN_LOCK_WAIT = 10.0  # seconds to wait for a run folder's lock: a killed run's loader workers take up to ~5 s to go

class TrainError(UserError):
    """A problem with the options or the data, said in one line."""


class BadCheckpoint(TrainError, FormatError):
    """A checkpoint (or a run's summary) that is not what gandata writes: damaged, foreign, or of another shape."""


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
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA)
    resume: str | None = None  # None | auto | a checkpoint path
    gpus: int = 1
    n_classes: int | None = None  # cdcgan: default from dataset.json's labels
    grid: int = 64
    threads: int = 0  # CPU threads of each process; 0: fitted to the machine (configure_threads)
    eval_metrics: str | None = None  # e.g. "fid,kid": evaluated at every snapshot (off by default)
    eval_real: str | None = None  # the real set for eval_metrics (default: the training shards)
    eval_n: int = 10_000  # generated images per evaluation
    eval_extractor: str = "inception"
    inception_weights: str | None = None
    allow_commands: bool = False  # pipe: shard specs run shell commands: the command line allows them, a pipeline
    # file only with allow_commands = true, a library call only when it says so
    extra: dict = field(default_factory=dict)

    def resolved(self) -> TrainOptions:
        if self.kind not in KINDS:
            raise TrainError(f"unknown trainer {self.kind!r}; use one of {', '.join(KINDS)}")
        d = DEFAULTS[self.kind]
        o = copy.deepcopy(self)
        o.batch = o.batch or d["batch"]
        o.lr = o.lr or d["lr"]
        o.n_critic = o.n_critic or d["n_critic"]
        o.critic_norm = o.critic_norm or d["critic_norm"]
        o.label_smoothing = d["label_smoothing"] if o.label_smoothing is None else o.label_smoothing
        if o.kind == "wgan-gp" and o.critic_norm == "batch":
            raise TrainError("wgan-gp needs a critic without batch norm (--critic-norm group or none): the gradient "
                             "penalty is per sample")
        if o.precision not in ("fp32", "bf16"):
            raise TrainError("--precision must be fp32 or bf16")
        if o.critic_cond not in CRITIC_CONDITIONING:
            raise TrainError(f"--critic-cond must be one of {', '.join(CRITIC_CONDITIONING)}")
        if not 0 <= o.label_smoothing < 0.5:
            raise TrainError("--label-smoothing must be at least 0 and below 0.5 (the critic's target for reals is 1 "
                             "minus it)")
        if o.label_smoothing and o.kind in ("wgan", "wgan-gp"):
            raise TrainError(f"--label-smoothing has no meaning for {o.kind} (its critic has no targets); leave it 0")
        if o.threads < 0:
            raise TrainError("--threads must be 0 (fitted to the machine) or a positive number")
        if o.kimg <= 0 or o.batch < 1 or o.snap_kimg <= 0 or o.log_kimg <= 0:
            raise TrainError("--kimg, --batch, --snap-kimg and --log-kimg must be positive")
        if o.eval_metrics:
            from .metrics import parse_metrics

            parse_metrics(o.eval_metrics)
            if o.eval_n < 2:
                raise TrainError("--eval-n must be at least 2")
        return o


# ------------------------------------------------------------------------------------------------- helpers


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
    already_trained: bool | None = None  # a pipeline found the run finished and did not train

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
        return [f"trained {self.kind} for {self.kimg} kimg ({self.steps} steps, {self.world} process(es), "
                f"{self.seconds} s) → {self.out}", f"  checkpoint: {self.checkpoint}", f"  samples:    {self.grid}"]

    def brief(self) -> str:
        if self.already_trained:
            return f"already trained: {self.kimg} kimg ({self.checkpoint})"
        return f"{self.kimg} kimg, {self.steps} steps in {self.seconds} s; samples {self.grid}"


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


def _dist() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainError("--device cuda asked for, but torch sees no GPU; use --device cpu or auto")
    return torch.device("cuda", local_rank)


def configure_threads(device: torch.device, world: int = 1, workers: int = 0, threads: int = 0) -> int:
    """Set torch's intra-op threads for this process and return the number. ``threads`` > 0 is taken as given; else
    ``OMP_NUM_THREADS`` from the user is kept; else on CPU: the usable cores divided among the ranks and reduced by
    what other processes keep busy (:func:`others_load`), at least 1; on CUDA: a few per rank (the GPU computes, the
    threads only feed it)."""
    if threads > 0:
        torch.set_num_threads(threads)
        return threads
    if os.environ.get("OMP_NUM_THREADS") and not os.environ.get("GANDATA_AUTO_THREADS"):
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if device.type == "cuda":
        n = max(1, min(4, cores // world // (workers + 1)))
    else:
        free = cores - int(others_load(world) + 0.5)
        n = max(1, min(cores // world, free // world))
    torch.set_num_threads(n)
    return n


def _own_runnable() -> int:
    """This process's threads that are running or runnable now (state R in /proc/self/task/*/stat), at least 1."""
    n = 0
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                n += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                pass
    except OSError:
        pass
    return max(n, 1)


def others_load(world: int = 1, proc_loadavg: str = "/proc/loadavg", samples: int = 5) -> float:
    """How many cores other processes keep busy right now: the median of a few readings (20 ms apart) of the
    runnable threads of the machine (``/proc/loadavg``'s fourth field) less this process's own runnable threads and
    the job's other ranks. The 1-minute load average lags a minute behind a load that starts or ends (it chose 1
    thread on an idle machine just after a benchmark), so it is only the fallback where there is no ``/proc``."""
    readings = []
    for i in range(samples):
        try:
            total = int(Path(proc_loadavg).read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        readings.append(total - _own_runnable() - (world - 1))
        if i + 1 < samples:
            time.sleep(0.02)
    if readings:
        return max(0.0, float(sorted(readings)[len(readings) // 2]))
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0


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


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's contents. Only plain tensors and containers are accepted (``weights_only=True``): a file that
    needs arbitrary unpickling is refused."""
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise TrainError(f"{path} is a folder; give a checkpoint file, or the run folder where a run folder goes") \
            from None
    except Exception as e:  # UnpicklingError and friends: not a plain checkpoint
        first = (str(e).splitlines() or ["empty or damaged"])[0][:200]
        raise BadCheckpoint(f"refusing to load {path}: it is not a plain gandata checkpoint ({type(e).__name__}: "
                         f"{first})") from None
    check_checkpoint(ck, path)
    return ck


def check_checkpoint(ck: object, path: str | os.PathLike) -> None:
    """A checkpoint's whole shape, or one :class:`TrainError` naming the file and the field: the three networks'
    and two optimisers' states, whole step and image counts, and the options it was trained with."""

    def bad(field: str, what: str) -> BadCheckpoint:
        return BadCheckpoint(f"{path}: {field} {what}; it is not a gandata checkpoint (or a damaged one)")

    if not isinstance(ck, dict):
        raise bad("the file", "does not hold a dictionary")
    for key in ("G", "D", "G_ema"):
        if not isinstance(ck.get(key), dict) or not all(isinstance(t, torch.Tensor) for t in ck[key].values()):
            raise bad(f"{key!r}", "is missing or not a network's state")
    for key in ("optG", "optD"):
        if not isinstance(ck.get(key), dict):
            raise bad(f"{key!r}", "is missing or not an optimiser's state")
    for key in ("step", "cur_nimg"):
        if isinstance(ck.get(key), bool) or not isinstance(ck.get(key), int) or ck[key] < 0:
            raise bad(f"{key!r}", f"must be a whole number (got {ck.get(key)!r:.40})")
    options = ck.get("options")
    if not isinstance(options, dict) or options.get("kind") not in KINDS:
        raise bad("'options'", f"must name the kind it was trained as ({', '.join(KINDS)})")


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted(run.glob(CHECKPOINT_RE))
    return found[-1] if found else None


def save_atomic(obj: dict, path: Path) -> None:
    """A checkpoint, whole or not at all. torch reports a full disk as a RuntimeError from its zip writer; it is
    raised here as the OSError it is (ENOSPC, naming the file), and the temporary file is removed."""
    try:
        with atomic_file(path) as f:
            torch.save(obj, f)
    except RuntimeError as e:
        free = shutil.disk_usage(path.parent).free
        if free < (64 << 20) or "unexpected pos" in str(e) or "No space" in str(e):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise


def image_grid(images: torch.Tensor, rows: int) -> bytes:
    """B×C×H×W in [-1, 1] → a PNG of ``rows`` rows with 2-px gaps."""
    from PIL import Image

    from .. import images as gimages

    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    b, c, h, w = x.shape
    cols = math.ceil(b / rows)
    grid = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 32, np.uint8)
    for i in range(b):
        r, k = divmod(i, cols)
        tile = x[i].transpose(1, 2, 0)
        grid[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + k * (w + 2) : 2 + k * (w + 2) + w] = (
            tile if c == 3 else tile[..., :1]
        )
    return gimages.encode(Image.fromarray(grid), "png")


def params_digest(*modules: nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build(o: TrainOptions, resolution: int, n_classes: int) -> tuple[nn.Module, nn.Module]:
    conditional = o.kind == "cdcgan"
    G = Generator(resolution, o.nz, o.ngf, 3, n_classes if conditional else 0, norm=o.g_norm)
    D = Critic(resolution, o.ndf, 3, o.critic_norm, n_classes if conditional else 0, o.critic_cond)
    return G, D


def _optimizer(o: TrainOptions, params) -> torch.optim.Optimizer:
    d = DEFAULTS[o.kind]
    if d["opt"] == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr)
    return torch.optim.Adam(params, lr=o.lr, betas=d["betas"])


# ---------------------------------------------------------------------------------------------------- run


def train(options: TrainOptions, progress: bool = True) -> TrainSummary:
    """Train in this process (one rank of a torchrun job when WORLD_SIZE is set). Returns the final summary.
    The run folder is locked by rank 0 for the whole run; a folder that already holds a run is continued only with
    ``resume``, never silently started over."""
    o = options.resolved()
    run = Path(o.out)
    if _dist()[0] != 0:
        _refuse_a_finished_run(o, run)
        return _train(o, progress)
    for p in (run, *run.parents):
        if p.exists() and not p.is_dir():
            raise TrainError(f"--out {run}: {p} is a file, not a folder")
    created = [p for p in (run, *run.parents) if not p.exists()]  # the folders this call makes, deepest first
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"--out {run}: cannot make the folder ({e.strerror})") from None
    try:
        lock = FolderLock(run).acquire(wait=RUN_LOCK_WAIT)
        remove_stale_tmp(run)  # a checkpoint a killed run was writing
    except UserError:
        raise TrainError(f"another training run is writing to {run}; wait for it to end, or give another --out") \
            from None
    try:
        _refuse_a_finished_run(o, run)  # under the lock: two runs started together cannot both pass it
        return _train(o, progress)
    except BaseException:
        lock.release()
        _remove_if_unused(run, created)
        raise
    finally:
        lock.release()


def _refuse_a_finished_run(o: TrainOptions, run: Path) -> None:
    if o.resume is None and (latest_checkpoint(run) is not None or (run / "metrics.jsonl").exists()
                             or (run / "summary.json").exists()):
        raise TrainError(f"{run} already holds a run; continue it with --resume auto, or give another --out (or "
                         "delete the folder) to start a new one")


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


def _train(o: TrainOptions, progress: bool) -> TrainSummary:
    rank, world, local_rank = _dist()
    device = pick_device(o.device, local_rank)
    if o.eval_metrics and o.eval_extractor == "inception":  # every rank: none may start if rank 0 cannot evaluate
        from .metrics import find_weights

        find_weights(o.inception_weights)
    distributed = world > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # under torchrun: DDP even for one process
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    threads = configure_threads(device, world, o.workers, o.threads)
    if o.batch % world:
        raise TrainError(f"--batch {o.batch} does not divide among {world} processes")
    per_rank = o.batch // world
    run = Path(o.out)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    _barrier(world)
    torch.manual_seed(o.seed * world + rank)
    np.random.seed((o.seed * world + rank) % 2**32)
    random.seed(o.seed * world + rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if not o.allow_commands:
        shardset.refuse_commands([o.shards, o.eval_real or ""], "--shards or --eval-real")
    try:
        urls, sset = shardset.resolve(o.shards)
    except FileNotFoundError as e:
        raise TrainError(f"--shards {o.shards}: {e}") from None
    labels = sset.labels if sset else None
    resolution = o.resolution or (sset.resolution if sset else None)
    n_classes = o.n_classes or (len(labels["names"]) if labels else 0)
    if o.kind == "cdcgan" and n_classes < 2:
        raise TrainError("cdcgan needs labelled shards (gandata shard --label-field FIELD) with at least 2 classes")
    if sset is not None and sset.total == 0:
        raise TrainError(f"--shards {o.shards}: the set holds no samples ({shardset.INFO} counts 0); shard a "
                         "folder that has images")
    _check_resolution(resolution, "--resolution" if o.resolution else f"the shards ({o.shards})")
    ckpt_path, ck = None, None
    if o.resume == "auto":
        ckpt_path, ck = _newest_loadable(run, device, warn=rank == 0)
    elif o.resume:
        ckpt_path = Path(o.resume)
        ck = load_checkpoint(ckpt_path, map_location=device)
    loader = tdata.stream(urls, per_rank, conditional=o.kind == "cdcgan", workers=o.workers, shuffle=o.shuffle,
                          seed=_stream_seed(o, ckpt_path), pin_memory=device.type == "cuda", commands=o.allow_commands,
                          n_classes=n_classes, resolution=resolution)
    batches = tdata.batches(loader)
    if resolution is None:
        first = next(batches)
        resolution = int(first[0].shape[-1])
        _check_resolution(resolution, f"the shards ({o.shards})")
    G, D = build(o, resolution, n_classes)
    G.to(device)
    D.to(device)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    optG, optD = _optimizer(o, G.parameters()), _optimizer(o, D.parameters())
    step, cur_nimg = 0, 0
    resumed_from = None
    if ck is not None:
        _load_networks(ck, ckpt_path, o, G, D, G_ema)
        optG.load_state_dict(ck["optG"])
        optD.load_state_dict(ck["optD"])
        for group in (*optG.param_groups, *optD.param_groups):  # the command's --lr, as every other option
            group["lr"] = o.lr
        step, cur_nimg = int(ck["step"]), int(ck["cur_nimg"])
        if ck.get("world") == world:
            set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])
        resumed_from = str(ckpt_path)
    elif o.resume not in (None, "auto"):
        raise TrainError(f"--resume {o.resume}: no such checkpoint")

    if rank == 0:
        resolved = {**asdict(o), "resolution": resolution, "n_classes": n_classes, "world": world,
                    "per_rank_batch": per_rank, "device": str(device), "threads": threads,
                    "label_names": labels["names"] if labels else None, "shard_urls": urls[:50],
                    "shards_digest": shards_digest(urls, sset),
                    "torch": torch.__version__}
        atomic_write_json(run / "options.json", resolved)

    Gd, Dd = G, D
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        Gd = nn.parallel.DistributedDataParallel(G, device_ids=ids, broadcast_buffers=False)
        Dd = nn.parallel.DistributedDataParallel(D, device_ids=ids, broadcast_buffers=False)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if o.precision == "bf16" and device.type == "cuda"
                else contextlib.nullcontext())
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    draw_labels = tdata.label_sampler(labels, n_classes)

    def draw(phase: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        g = step_generator(o.seed, step, phase)
        z = torch.randn(o.batch, o.nz, generator=g)[sl]
        y = None
        if o.kind == "cdcgan":
            y = draw_labels(o.batch, g)[sl].to(device)
        alpha = torch.rand(o.batch, generator=g)[sl]
        return z.to(device), y, alpha.to(device)

    # fixed noise for the grid (the same in every run with this seed); one label per row for cdcgan
    rows = int(math.sqrt(o.grid)) or 1
    gz = torch.randn(o.grid, o.nz, generator=step_generator(o.seed, -1, "grid")).to(device)
    gy = (
        (torch.arange(o.grid) // math.ceil(o.grid / rows) % max(n_classes, 1)).to(device)
        if o.kind == "cdcgan"
        else None
    )

    total = int(o.kimg * 1000)
    next_log = (cur_nimg // int(o.log_kimg * 1000) + 1) * int(o.log_kimg * 1000)
    next_snap = (cur_nimg // int(o.snap_kimg * 1000) + 1) * int(o.snap_kimg * 1000)
    sums = torch.zeros(5, device=device)  # d_loss, g_loss, gap, gp, count
    diverged = torch.zeros((), dtype=torch.bool, device=device)  # a non-finite loss since the last check
    saved_step = step  # the step of the newest checkpoint (the one resumed from, or 0)
    t_start, t_tick, nimg_tick = time.monotonic(), time.monotonic(), cur_nimg
    start_nimg, last_line = cur_nimg, time.monotonic()
    if rank == 0 and progress and resumed_from:
        print(f"{o.kind}: resuming from {resumed_from} at {cur_nimg / 1000:g} kimg (step {step})", file=sys.stderr,
              flush=True)
    writer = _tensorboard(run) if rank == 0 else None
    if rank == 0:
        _forget_rows_after(run / "metrics.jsonl", cur_nimg)
    metrics = open(run / "metrics.jsonl", "a") if rank == 0 else None
    if rank == 0 and step == 0:
        real = next(batches)[0][: o.grid]
        atomic_write(run / "reals.png", image_grid(real.float() / 127.5 - 1, max(1, int(math.sqrt(len(real))))))
    evaluator = None
    if o.eval_metrics and rank == 0:
        from .metrics import SnapshotEval

        evaluator = SnapshotEval(o, device, n_classes if o.kind == "cdcgan" else 0, progress, resolution)
    summary: dict = {}
    ctrl_c = CtrlC.install() if world == 1 else None  # several ranks: each stops where the signal finds it
    try:
        while cur_nimg < total:
            # ---- critic
            n_d = o.n_critic
            if o.kind == "wgan" and o.critic_warmup and (step < 25 or step % 500 == 0):
                n_d = 100
            D.requires_grad_(True)
            # one critic step per G step (the DCGAN family): the G step reuses this fake batch, as pytorch/examples
            # does — one G forward per step instead of two
            reuse = n_d == 1
            G.requires_grad_(reuse)
            for i in range(n_d):
                try:
                    batch = next(batches)
                except tdata.DataError as e:  # the shards cannot be read (any more): keep what was trained
                    if i == 0 and world == 1 and step > saved_step:
                        _stop_if_diverged(diverged, world, o, cur_nimg, step, run)
                        saved = _snapshot(run, rank, world, step, cur_nimg, o, G, D, G_ema, optG, optD, gz, gy,
                                          rows)
                        raise tdata.DataError(f"{e} (saved {saved['checkpoint']} first)") from None
                    raise
                real, y_real = tdata.to_device(batch, device, o.kind == "cdcgan")
                z, y_fake, alpha = draw(f"d{i}")
                with torch.set_grad_enabled(reuse), autocast:
                    generated = Gd(z, y_fake) if y_fake is not None else Gd(z)
                fake = generated.detach()
                with autocast:
                    d_real = Dd(real, y_real) if y_real is not None else Dd(real)
                    d_fake = Dd(fake, y_fake) if y_fake is not None else Dd(fake)
                loss = d_loss(o.kind, d_real, d_fake, 1.0 - o.label_smoothing)
                gp = torch.zeros((), device=device)
                if o.kind == "wgan-gp":
                    gp = gradient_penalty(Dd, real, fake, alpha, y_fake)
                    loss = loss + o.gp_lambda * gp
                optD.zero_grad(set_to_none=True)
                loss.backward()
                optD.step()
                if o.kind == "wgan":
                    clip_weights(D, o.clip)
                cur_nimg += o.batch
            # ---- generator
            D.requires_grad_(False)
            G.requires_grad_(True)
            no_sync = Dd.no_sync() if distributed else contextlib.nullcontext()
            with autocast, no_sync:
                if not reuse:
                    z, y_fake, _ = draw("g")
                    generated = Gd(z, y_fake) if y_fake is not None else Gd(z)
                d_gen = Dd(generated, y_fake) if y_fake is not None else Dd(generated)
            lg = g_loss(o.kind, d_gen)
            optG.zero_grad(set_to_none=True)
            lg.backward()
            optG.step()
            beta = ema_beta(o.ema_kimg, o.ema_rampup, cur_nimg, n_d * o.batch)
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.copy_(p.detach().lerp(p_ema, beta))
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)
                sums += torch.stack([loss.detach().float(), lg.detach().float(),
                                     (d_real.float().mean() - d_fake.float().mean()).detach(), gp.detach().float(),
                                     torch.ones((), device=device)])
                diverged |= ~(torch.isfinite(loss.detach()) & torch.isfinite(lg.detach()))
            step += 1

            due = cur_nimg >= next_log or cur_nimg >= next_snap or cur_nimg >= total
            if due or (ctrl_c is not None and ctrl_c.requested):
                _stop_if_diverged(diverged, world, o, cur_nimg, step, run)
            if cur_nimg >= next_log or cur_nimg >= total:
                now = time.monotonic()
                vals = sums.tolist()
                n = max(vals[4], 1)
                row = {"kimg": round(cur_nimg / 1000, 3), "step": step, "d_loss": vals[0] / n, "g_loss": vals[1] / n,
                       "critic_gap": vals[2] / n, "gp": vals[3] / n,
                       "images_per_s": round((cur_nimg - nimg_tick) / max(now - t_tick, 1e-9), 1),
                       "seconds": round(now - t_start, 1)}
                sums.zero_()
                t_tick, nimg_tick = now, cur_nimg
                next_log += int(o.log_kimg * 1000)
                if rank == 0:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    if writer is not None:
                        for k in ("d_loss", "g_loss", "critic_gap", "gp", "images_per_s"):
                            writer.add_scalar(k, row[k], cur_nimg)
                    if progress:
                        print(
                            f"{o.kind} {row['kimg']:.1f}/{o.kimg:g} kimg  d {row['d_loss']:.4f}  g {row['g_loss']:.4f}"
                            f"  gap {row['critic_gap']:.4f}  {row['images_per_s']:.0f} img/s  "
                            f"ETA {_eta(cur_nimg, start_nimg, total, now - t_start)}",
                            file=sys.stderr,
                            flush=True,
                        )
                        last_line = now
            if rank == 0 and progress and time.monotonic() - last_line >= PROGRESS_SECONDS:
                now = time.monotonic()
                rate = (cur_nimg - start_nimg) / max(now - t_start, 1e-9)
                print(f"{o.kind} {cur_nimg / 1000:.1f}/{o.kimg:g} kimg  {rate:.0f} img/s  "
                      f"ETA {_eta(cur_nimg, start_nimg, total, now - t_start)}", file=sys.stderr, flush=True)
                last_line = now
            if cur_nimg >= next_snap or cur_nimg >= total:
                summary = _snapshot(run, rank, world, step, cur_nimg, o, G, D, G_ema, optG, optD, gz, gy, rows,
                                    evaluator)
                saved_step = step
                next_snap += int(o.snap_kimg * 1000)
            elif ctrl_c is not None and ctrl_c.requested:
                saved = _snapshot(run, rank, world, step, cur_nimg, o, G, D, G_ema, optG, optD, gz, gy, rows)
                print(f"{o.kind}: interrupted at {cur_nimg / 1000:g} kimg; saved {saved['checkpoint']} — run the same "
                      "command with --resume auto to continue", file=sys.stderr, flush=True)
            if ctrl_c is not None and ctrl_c.requested:
                raise KeyboardInterrupt
    finally:
        if ctrl_c is not None:
            ctrl_c.uninstall()
        if metrics is not None:
            metrics.close()
        if writer is not None:
            writer.close()
        if distributed and dist.is_initialized():
            _barrier(world)
            dist.destroy_process_group()
    result = TrainSummary(
        kind=o.kind, out=str(run), kimg=round(cur_nimg / 1000, 3), steps=step, world=world,
        resumed_from=resumed_from, seconds=round(time.monotonic() - t_start, 1), resolution=resolution,
        ddp=distributed, threads=threads, **summary,
        peak_gpu_mib=round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None)
    if rank == 0:
        atomic_write_json(run / "summary.json", result.to_json())
    return result


class CtrlC:
    """Ctrl-C (SIGINT) during training: the step in progress finishes, a checkpoint is written, then
    KeyboardInterrupt. A second Ctrl-C stops at once. Only in the main thread of a single-process run."""

    def __init__(self):
        self.requested, self.previous = False, None

    @classmethod
    def install(cls) -> CtrlC | None:
        guard = cls()
        try:
            guard.previous = signal.signal(signal.SIGINT, guard._handle)
        except ValueError:  # not the main thread
            return None
        return guard

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C raises at once

    def uninstall(self) -> None:
        signal.signal(signal.SIGINT, self.previous if self.previous is not None else signal.default_int_handler)


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


def _newest_loadable(run: Path, device: torch.device, warn: bool = True) -> tuple[Path | None, dict | None]:
    """The newest checkpoint of ``run`` that loads, newest first: a damaged one (a truncated copy, a full disk) is
    passed over with a line, and the one before it is used."""
    for path in sorted(run.glob(CHECKPOINT_RE), reverse=True):
        try:
            return path, load_checkpoint(path, map_location=device)
        except TrainError as e:
            if warn:
                print(f"skipping {path}: it does not load ({str(e)[:160]}); trying the one before", file=sys.stderr,
                      flush=True)
    return None, None


SAME_RUN = ("kind", "batch", "lr", "n_critic", "critic_norm", "critic_cond", "g_norm", "nz", "ngf", "ndf", "clip",
            "critic_warmup", "gp_lambda", "label_smoothing", "ema_kimg", "ema_rampup", "seed", "shuffle", "precision",
            "resolution", "n_classes")  # what a run's result depends on, besides its shards (kimg only lengthens it)


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


def newest_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint of a run folder that loads (a damaged newest one is passed over with a line)."""
    return _newest_loadable(run, torch.device("cpu"))[0]


def _stream_seed(o: TrainOptions, ck: Path | None) -> int:
    """The data order's seed: the run's seed, and on resume the images already shown (read from the name of the
    checkpoint it continues from), so a resumed run goes on with new batches instead of replaying the first ones."""
    if o.resume is None:
        return o.seed
    digits = re.findall(r"\d+", ck.stem) if ck is not None else []
    return o.seed + (int(digits[-1]) if digits else 0) * 1_000_003


def _load_networks(ck: dict, path: Path, o: TrainOptions, G: nn.Module, D: nn.Module, G_ema: nn.Module) -> None:
    """Load a checkpoint's networks, or say in one line that it was trained with another architecture."""
    try:
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        G_ema.load_state_dict(ck["G_ema"])
    except (RuntimeError, KeyError) as e:
        was = ck.get("options") or {}
        keys = ("kind", "nz", "ngf", "ndf", "critic_norm", "critic_cond", "g_norm")
        diff = [f"{k} {was.get(k)!r} → {getattr(o, k)!r}" for k in keys if k in was and was.get(k) != getattr(o, k)]
        why = ", ".join(diff) if diff else f"the layers differ ({str(e).splitlines()[0][:120]})"
        raise TrainError(f"cannot resume from {path}: it was trained with another architecture ({why}); use the "
                         "options it was trained with, or another --out for a new run") from None


def _stop_if_diverged(diverged: torch.Tensor, world: int, o: TrainOptions, cur_nimg: int, step: int,
                      run: Path) -> None:
    """Checked before every log line and snapshot (one sync, agreed by every rank): a loss that became NaN or
    infinite stops the run before a damaged checkpoint is written; the last one written is good."""
    flag = diverged.to(torch.int32)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        last = latest_checkpoint(run)
        raise TrainError(f"training diverged: a loss became NaN or infinite by {cur_nimg / 1000:g} kimg (step {step}); "
                         f"lower --lr (now {o.lr:g}) and start again, or --resume from the last good checkpoint "
                         f"({last if last else 'none was written'})")


def _check_resolution(resolution: int | None, what: str) -> None:
    if resolution is not None and resolution not in RESOLUTIONS:
        raise TrainError(f"{what}: {resolution} px is not a size the trainers build ({', '.join(map(str, RESOLUTIONS))}"
                         " px); make shards at one of them with gandata shard --size 64")


def _barrier(world: int) -> None:
    if dist.is_initialized():
        dist.barrier()


def _snapshot(run: Path, rank: int, world: int, step: int, cur_nimg: int, o: TrainOptions, G, D, G_ema, optG, optD,
              gz, gy, rows, evaluator=None) -> dict:
    """Check the ranks agree, then on rank 0: the sample grid, an atomic checkpoint, and the metrics when asked
    (the other ranks wait at the barrier)."""
    digest = params_digest(G, D)
    consistent = True
    states = [rng_state()]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, {"digest": digest, "rng": rng_state()})
        consistent = all(g["digest"] == digest for g in gathered)
        states = [g["rng"] for g in gathered]
        if not consistent:
            raise RuntimeError(f"ranks disagree on the parameters at step {step}: a DDP bug, please report it")
    out = {"checkpoint": None, "grid": None, "params_sha256": digest, "ranks_consistent": consistent}
    if rank == 0:
        with torch.no_grad():
            fakes = G_ema(gz, gy) if gy is not None else G_ema(gz)
        grid = run / f"fakes-{cur_nimg:09d}.png"
        atomic_write(grid, image_grid(fakes, rows))
        ck = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(), "optG": optG.state_dict(),
              "optD": optD.state_dict(), "step": step, "cur_nimg": cur_nimg, "world": world,
              "rng": states if world > 1 else states[0], "options": json.loads(json.dumps(asdict(o))),
              "gandata": _version()}
        path = run / f"checkpoint-{cur_nimg:09d}.pt"
        save_atomic(ck, path)
        out.update(checkpoint=str(path), grid=str(grid))
        if evaluator is not None:
            out["eval"] = evaluator(G_ema, path, cur_nimg)
    _barrier(world)
    return out


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
    otherwise through torch's own launcher (``python -m torch.distributed.run --standalone``)."""
    if options.gpus <= 1 or "WORLD_SIZE" in os.environ:
        return train(options, progress)
    run = Path(options.out)
    run.mkdir(parents=True, exist_ok=True)
    spec = run / "launch.json"
    atomic_write_json(spec, asdict(options))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={options.gpus}",
           "-m", "gandata.trainers.train", "--options", str(spec)]
    env = dict(os.environ)
    if not env.get("OMP_NUM_THREADS"):  # torchrun would force 1 thread per process; ours are fitted in each rank
        env.update(OMP_NUM_THREADS="1", GANDATA_AUTO_THREADS="1")
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise TrainError(
            f"the {options.gpus} training processes failed (exit {proc.returncode}); see their output above"
        )
    return TrainSummary.read(run)


def load_generator(ck_path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, TrainOptions, int, dict]:
    """The EMA generator of a checkpoint, in eval mode on ``device``; its options; its number of classes (0 unless
    cdcgan); and ``{"cur_nimg", "label_names"}``."""
    ck_path = Path(ck_path)
    ck = load_checkpoint(ck_path)
    known = {f.name for f in fields(TrainOptions)}
    try:
        o = TrainOptions(**{k: v for k, v in ck["options"].items() if k in known}).resolved()
    except (TypeError, UserError) as e:
        raise TrainError(f"{ck_path}: its 'options' do not describe a run this version can build ({e})") from None
    opts_file = ck_path.parent / "options.json"
    try:
        saved = json.loads(opts_file.read_text()) if opts_file.exists() else {}
    except (OSError, ValueError):
        saved = {}
    saved = saved if isinstance(saved, dict) else {}
    resolution = saved.get("resolution") or _resolution_of(ck["G_ema"])
    n_classes = saved.get("n_classes") or (ck["G_ema"]["embed.weight"].shape[0] if "embed.weight" in ck["G_ema"] else 0)
    G, _ = build(o, resolution, n_classes)
    try:
        G.load_state_dict(ck["G_ema"])
    except RuntimeError:
        raise TrainError(f"{ck_path} was written by an older gandata whose {o.kind} generator had other layers; "
                         "train it again with this version") from None
    G.to(device).eval()
    return G, o, n_classes if o.kind == "cdcgan" else 0, {"cur_nimg": int(ck["cur_nimg"]), "resolution": resolution,
                                                          "label_names": saved.get("label_names")}


SAMPLE_CHUNK = 256  # images the generator draws at once in sample()


def sample(path: str | os.PathLike, n: int = 64, out: str | os.PathLike = "samples.png", label: int | None = None,
           device: str = "auto", precision: str = "fp32", seed: int = 0) -> SampleResult:
    """A grid of ``n`` images from a run's newest checkpoint (or a checkpoint file), drawn by the EMA generator."""
    path = Path(path)
    ck_path = newest_checkpoint(path) if path.is_dir() else path
    if ck_path is None:
        raise TrainError(f"{path} holds no checkpoint-*.pt that loads; train first, or give a checkpoint file")
    dev = pick_device(device)
    G, o, n_classes, meta = load_generator(ck_path, dev)
    z = torch.randn(n, o.nz, generator=torch.Generator().manual_seed(seed)).to(dev)
    y = None
    rows = max(1, int(math.sqrt(n)))
    if o.kind == "cdcgan":
        if label is not None and not 0 <= label < n_classes:
            raise TrainError(f"--label {label}: this model has labels 0-{n_classes - 1}")
        y = (torch.full((n,), label) if label is not None else torch.arange(n) // math.ceil(n / rows) % n_classes).to(
            dev
        )
    elif label is not None:
        raise TrainError(f"--label only applies to cdcgan models; this one is {o.kind}")
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" and dev.type == "cuda"
                else contextlib.nullcontext())
    out = Path(out)
    if out.is_dir():
        raise TrainError(f"--out {out} is a folder; give the PNG's file name (e.g. {out / 'samples.png'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    with torch.no_grad(), autocast:  # in chunks: the generator's activations for 10 000 images at once are GBs
        for i in range(0, n, SAMPLE_CHUNK):
            zi, yi = z[i:i + SAMPLE_CHUNK], y[i:i + SAMPLE_CHUNK] if y is not None else None
            parts.append((G(zi, yi) if yi is not None else G(zi)).float().cpu())
    atomic_write(out, image_grid(torch.cat(parts), rows))
    return SampleResult(checkpoint=str(ck_path), out=str(out), n=n, kind=o.kind, kimg=meta["cur_nimg"] / 1000,
                        label_names=meta["label_names"])


def _resolution_of(g_state: dict) -> int:
    ups = sum(1 for k in g_state if k.startswith("net.") and k.endswith(".weight") and g_state[k].dim() == 4)
    return 2 ** (ups + 1)


def _main(argv: list[str]) -> None:
    """``python -m gandata.trainers.train --options FILE``: one rank of what ``--gpus N`` launches. A user's own
    ``torchrun`` command runs the CLI instead: ``torchrun … -m gandata train wgan-gp --shards …``."""
    if argv[:1] != ["--options"] or len(argv) != 2:
        sys.exit("usage: python -m gandata.trainers.train --options FILE (for your own torchrun command use "
                 "'-m gandata train KIND --shards …')")
    train(TrainOptions(**json.loads(Path(argv[1]).read_text())))


if __name__ == "__main__":
    _main(sys.argv[1:])
