"""A run's checkpoints and random state: written whole or not at all, loaded only as plain tensors, checked whole on
load, the newest loadable one found; the RNG states a resumed run continues from; which data order it continues
with."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import shutil
import sys
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import FormatError, UserError, named
from ..fileio import atomic_file
from .kinds import BY_NAME, KINDS
from .options import TrainError, TrainOptions

CHECKPOINT_RE = "checkpoint-*.pt"


class BadCheckpoint(TrainError, FormatError):
    """A checkpoint (or a run's summary) that is not what gandata writes: damaged, foreign, or of another shape."""


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
        with warnings.catch_warnings():  # torch warns about a raw pickle's protocol before it refuses it
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise TrainError(f"{path} is a folder; give a checkpoint file, or the run folder where a run folder goes") \
            from None
    except Exception as e:  # UnpicklingError and friends: not a plain checkpoint
        raise BadCheckpoint(f"refusing to load {path}: it is not a plain gandata checkpoint ({_why_not_plain(e)})") \
            from None
    check_checkpoint(ck, path)
    return ck


def _why_not_plain(e: Exception) -> str:
    """Why torch's plain-tensor loader refused a file, in a few words — without torch's advice to load it with
    ``weights_only=False``, which would run whatever code the file names."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) or "weights_only" in text:
        named = re.search(r"GLOBAL ([\w.]+)", text)
        return (f"it names {named.group(1)}: " if named else "") + "loading it would unpickle objects, which can run " \
            "code; gandata loads checkpoints as plain tensors only"
    return f"{type(e).__name__}: {(text.splitlines() or ['empty or damaged'])[0][:200]}"


def check_checkpoint(ck: object, path: str | os.PathLike) -> None:
    """A checkpoint's whole shape, or one :class:`BadCheckpoint` naming the file and the field: the three networks'
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
    for key in ("G", "D", "G_ema"):  # a damaged run's weights: images of noise, a resume that cannot recover
        broken = next((name for name, t in ck[key].items() if t.is_floating_point() and not torch.isfinite(t).all()),
                      None)
        if broken is not None:
            raise BadCheckpoint(f"{path}: its {key} weights hold NaN or infinite values ({broken}); give an earlier "
                                "checkpoint of the run")


def latest_checkpoint(run: Path) -> Path | None:
    found = sorted(run.glob(CHECKPOINT_RE))
    return found[-1] if found else None


def newest_loadable(run: Path, device: torch.device, warn: bool = True) -> tuple[Path | None, dict | None]:
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


def newest_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint of a run folder that loads (a damaged newest one is passed over with a line)."""
    return newest_loadable(run, torch.device("cpu"))[0]


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


def stream_seed(o: TrainOptions, ck: Path | None) -> int:
    """The data order's seed: the run's seed, and on resume the images already shown (read from the name of the
    checkpoint it continues from), so a resumed run goes on with new batches instead of replaying the first ones."""
    if o.resume is None:
        return o.seed
    digits = re.findall(r"\d+", ck.stem) if ck is not None else []
    return o.seed + (int(digits[-1]) if digits else 0) * 1_000_003


ARCHITECTURE = ("kind", "resolution", "nz", "ngf", "ndf", "g_norm", "critic_norm", "critic_cond", "n_classes")


def architecture(ck: dict) -> dict:
    """The options that shape a checkpoint's networks (:data:`ARCHITECTURE`), as it was trained: its recorded options,
    with the resolution and the number of classes read from the generator's layers where the run took them from its
    data."""
    was = {k: (ck.get("options") or {}).get(k) for k in ARCHITECTURE}
    g = ck["G"]
    was["resolution"] = was["resolution"] or resolution_of(g)
    conditional = was["kind"] in BY_NAME and BY_NAME[was["kind"]].conditional
    classes = g["embed.weight"].shape[0] if "embed.weight" in g else None
    was["n_classes"] = (was["n_classes"] or classes) if conditional else None
    return was


def resolution_of(g_state: dict) -> int:
    """A generator's image side, from its layers: one stride-2 transposed convolution per doubling from 4 px."""
    ups = sum(1 for k in g_state if k.startswith("net.") and k.endswith(".weight") and g_state[k].dim() == 4)
    return 2 ** (ups + 1)


def architecture_changes(ck: dict, o: TrainOptions, resolution: int | None, n_classes: int) -> list[str]:
    """Each option that shapes the networks (:data:`ARCHITECTURE`) and differs between a checkpoint and ``o`` at
    ``resolution`` with ``n_classes``, in words (``ngf 8 → 16``); ``resolution`` None: not known yet (shards without
    a description, whose first image tells), left out."""
    was = architecture(ck)
    now = {**{k: getattr(o, k) for k in ARCHITECTURE}, "resolution": resolution,
           "n_classes": n_classes if o.spec.conditional else None}
    unknown = {"resolution"} if resolution is None else set()
    return [f"{k} {was[k]!r} → {now[k]!r}" for k in ARCHITECTURE
            if k not in unknown and was[k] is not None and was[k] != now[k]]


def other_architecture(path: str | os.PathLike, diff: list[str]) -> TrainError:
    """The one line for a checkpoint that cannot be continued with these options (``diff``: what differs)."""
    return TrainError(f"cannot resume from {path}: it was trained with another architecture ({', '.join(diff)}); use "
                      f"the options it was trained with, or another {named('out')} for a new run")


def load_networks(ck: dict, path: Path, o: TrainOptions, resolution: int, n_classes: int, G: nn.Module,
                  D: nn.Module, G_ema: nn.Module) -> None:
    """Load a checkpoint's networks, or say in one line that it was trained with another architecture, naming each
    option that shapes the networks and differs (the resolution and the classes included)."""
    diff = architecture_changes(ck, o, resolution, n_classes)
    if not diff:
        try:
            G.load_state_dict(ck["G"])
            D.load_state_dict(ck["D"])
            G_ema.load_state_dict(ck["G_ema"])
            return
        except (RuntimeError, KeyError) as e:  # an option that shapes nothing above: a version's other layers
            diff = [f"the layers differ ({(str(e).splitlines() or [''])[0][:120]})"]
    raise other_architecture(path, diff)


def options_of(ck: dict, path: Path) -> TrainOptions:
    """The resolved options a checkpoint was trained with."""
    known = {f.name for f in fields(TrainOptions)}
    try:
        return TrainOptions(**{k: v for k, v in ck["options"].items() if k in known})
    except (TypeError, UserError) as e:
        raise TrainError(f"{path}: its 'options' do not describe a run this version can build ({e})") from None


def recorded(run: Path) -> dict:
    """A run folder's ``options.json`` (empty when it is missing or not a JSON object)."""
    f = run / "options.json"
    try:
        saved = json.loads(f.read_text()) if f.exists() else {}
    except (OSError, ValueError):
        saved = {}
    return saved if isinstance(saved, dict) else {}
