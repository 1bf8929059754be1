"""FID and KID for runs and checkpoints: our own small numerical code, a pluggable feature extractor, cached real
statistics, and the Inception weights found (never silently downloaded) and verified.

* ``frechet_distance``: ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½, with the trace of the square root taken
  from the eigenvalues of a symmetric PSD matrix (no complex ``sqrtm``, no singular-matrix fix-ups).
* ``kid``: the unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³ over 100 subsets of 1 000
  (stylegan2-ada's, torch-fidelity's and clean-fid's defaults); mean and standard deviation over the subsets.
* Extractors: ``inception`` (the FID Inception of pytorch-fid, ``trainers/inception.py``), ``tiny-random`` (a small
  seeded random conv net, for tests and dry runs: its numbers mean nothing), or ``module:function`` returning an
  :class:`Extractor`.
* Real statistics (mean, covariance, and a 10 000-row random pool of features for KID) are computed once per
  (shard set, extractor, N real) and cached under ``$GANDATA_CACHE/fid-stats``; the shard set is named by its
  shards' sha256 (from dataset.json, else hashed).
* Every result line records the extractor, its weights' sha256, the resize, N real, N generated and the KID settings:
  FIDs are only comparable when those match.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import shardset
from ..assets import cache_dir, download, failure
from ..declarations import EVAL
from ..errors import UserError, hint, named
from ..fileio import JsonlLog, atomic_file, read_jsonl
from ..options import check_call
from ..summary import Summary
from . import data as tdata
from . import inception
from .checkpoints import newest_checkpoint
from .cpu import pick_device, reuse_heap
from .kinds import parse_metrics
from .options import TrainError
from .sampling import load_generator


class EvalError(UserError):
    """A problem with an evaluation's inputs (weights, extractor, real set, run), said in one line."""

WEIGHTS_ENV = "GANDATA_INCEPTION_WEIGHTS"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_POOL = 10_000  # features kept per side for KID: a uniform random sample (reservoir) of all of them


_DEFAULT = EVAL.defaults()


# ------------------------------------------------------------------------------------------------ numerics


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (n − 1 normalisation, as pytorch-fid) of N×D features, in float64."""
    x = np.asarray(features, np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂). tr (Σ₁Σ₂)^½ equals tr (Σ₁^½ Σ₂ Σ₁^½)^½, whose matrix
    is symmetric PSD: its eigenvalues are real and non-negative up to rounding, so the square roots are too."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("the two sets of statistics have different dimensions")
    r = _sqrt_psd(s1)
    inner = r @ s2 @ r
    covmean_trace = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * covmean_trace)


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0, device: str | torch.device = "cpu") -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation over ``subsets`` of the unbiased MMD² estimate with
    k(x, y) = (x·y/d + 1)³, each on ``min(subset_size, N_real, N_fake)`` samples per side drawn without
    replacement."""
    d = real.shape[1]
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.default_rng(seed)
    r = torch.as_tensor(np.asarray(real, np.float32), device=device)
    f = torch.as_tensor(np.asarray(fake, np.float32), device=device)
    values = []
    for _ in range(subsets):
        x = f[torch.as_tensor(rng.choice(len(f), m, replace=False), device=device)]
        y = r[torch.as_tensor(rng.choice(len(r), m, replace=False), device=device)]
        kxx = (x @ x.T / d + 1).double() ** 3
        kyy = (y @ y.T / d + 1).double() ** 3
        kxy = (x @ y.T / d + 1).double() ** 3
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2 * kxy.sum() / (m * m)))
    return float(np.mean(values)), float(np.std(values))


class FeatureStats:
    """Running mean and covariance of features (float64 sums), plus a uniform random pool of rows for KID."""

    def __init__(self, dims: int, pool: int = KID_POOL, seed: int = 0):
        self.n = 0
        self.sum = np.zeros(dims)
        self.outer = np.zeros((dims, dims))
        self.pool = np.zeros((pool, dims), np.float32)
        self.rng = np.random.default_rng(seed)

    def add(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, np.float64)
        self.sum += x.sum(0)
        self.outer += x.T @ x
        cap = len(self.pool)
        for row in feats:  # reservoir sampling (algorithm R): every row kept with probability cap / n
            if self.n < cap:
                self.pool[self.n] = row
            else:
                j = int(self.rng.integers(0, self.n + 1))
                if j < cap:
                    self.pool[j] = row
            self.n += 1

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError("statistics need at least 2 images")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov

    def kid_pool(self) -> np.ndarray:
        return self.pool[: min(self.n, len(self.pool))]


# ---------------------------------------------------------------------------------------------- extractors


@dataclass
class Extractor:
    """uint8 images (N×3×H×W, RGB) → float32 features (N×dims)."""

    name: str
    dims: int
    weights_sha256: str
    resize: str
    module: nn.Module
    device: torch.device

    @property
    def id(self) -> dict:
        return {"extractor": self.name, "weights_sha256": self.weights_sha256, "resize": self.resize,
                "dims": self.dims}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(self.device).float().div_(255.0)
        return self.module(x).float().cpu().numpy()


def weights_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class TinyRandom(nn.Module):
    """A small random conv net (seeded): images → 16-d. Its features are meaningless; it exercises the whole path."""

    def __init__(self, seed: int = 0, dims: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, dims, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.relu(self.conv1(x * 2 - 1))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv2(x)), 1), 1)


def load_extractor(name: str = "inception", weights: str | os.PathLike | None = None,
                   device: str | torch.device = "auto", option: str = "extractor") -> Extractor:
    """``inception`` (weights found by :func:`find_weights`), ``tiny-random``, or ``module:function`` /
    ``path/to/file.py:function`` (called with the device, returning an :class:`Extractor`). ``option``: the key
    that named it (``eval_extractor`` in a training run), for its messages. A plugged-in extractor that cannot run
    here — a package it imports is missing (an optional extra), or it ends with ``sys.exit("why")`` — is one
    :class:`EvalError` line naming it."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    if name == "inception":
        path, digest = find_weights(weights)
        net = inception.FIDInception()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as e:  # the right checksum but not loadable: a torch that cannot read the file
            raise EvalError(f"cannot load the Inception weights {path}: {type(e).__name__}: {e}") from None
        return Extractor("fid-inception-2015-12-05", 2048, digest, inception.RESIZE, net.eval().to(dev), dev)
    if name == "tiny-random":
        net = TinyRandom()
        return Extractor(
            "tiny-random (meaningless numbers)", 16, weights_sha256(net), "bilinear-32", net.eval().to(dev), dev
        )
    if ":" in name:
        module, _, attr = name.rpartition(":")
        try:
            factory = getattr(_import(module), attr)
        except (ImportError, AttributeError, OSError, SyntaxError) as e:
            raise EvalError(f"{named(option, name)}: {e}") from None
        try:
            ext = factory(dev)
        except ImportError as e:  # a package of an extra it needs (benchmarks/quality.py: scikit-learn)
            raise EvalError(f"{named(option, name)}: {e}") from None
        except SystemExit as e:
            if not isinstance(e.code, str):  # an exit status, not a reason: not ours to reword
                raise
            raise EvalError(f"{named(option, name)}: {e.code}") from None
        if not isinstance(ext, Extractor):
            raise EvalError(
                f"{named(option, name)} returned {type(ext).__name__}, not a gandata.trainers.metrics.Extractor"
            )
        return ext
    raise EvalError(f"unknown {named(option)} {name!r}: use inception, tiny-random or module:function")


def _import(module: str):
    """A module by dotted name, or a Python file by path (``benchmarks/quality.py``)."""
    if module.endswith(".py") or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise ImportError(f"no such file {path}")
        spec = importlib.util.spec_from_file_location(f"gandata_extractor_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return importlib.import_module(module)


# ------------------------------------------------------------------------------------------------- weights


def weights_cache_path() -> Path:
    return cache_dir() / "weights" / inception.WEIGHTS_NAME


def _torch_hub_path() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(home) / "hub" / "checkpoints" / inception.WEIGHTS_NAME


_verified: dict[tuple, str] = {}


def _hash_file(path: str | os.PathLike, *algorithms: str) -> list[str]:
    hashes = [hashlib.new(a) for a in algorithms]
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashes:
                h.update(chunk)
    return [h.hexdigest() for h in hashes]


def verify_weights(path: Path, sha1: str = inception.WEIGHTS_SHA1,
                   sha256_prefix: str = inception.WEIGHTS_SHA256_PREFIX,
                   todo: str = "delete it and run `gandata fetch weights inception`") -> str:
    """The file's sha256 when it is the FID Inception file (its SHA-1, or torch.hub's sha256 prefix, matches);
    otherwise a one-line error ending in ``todo``: what to do — delete a damaged copy in a cache, but never a file
    the user named (it may be anything of theirs)."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, sha1, sha256_prefix)
    if memo in _verified:
        return _verified[memo]
    got_sha1, got_sha256 = _hash_file(path, "sha1", "sha256")
    if got_sha1 != sha1 and not got_sha256.startswith(sha256_prefix):
        raise EvalError(f"{path} is not the FID Inception weight file, or a damaged copy ({st.st_size} bytes, sha1 "
                        f"{got_sha1}; expected sha1 {sha1}): {todo}")
    _verified[memo] = got_sha256
    return got_sha256


def find_weights(option: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The Inception weight file, looked up in this order: ``option`` (``--inception-weights``), the environment
    variable ``GANDATA_INCEPTION_WEIGHTS``, gandata's cache, torch.hub's cache (where pytorch-fid puts it).
    Never downloads."""
    for given, how in ((option, named("inception_weights")), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise EvalError(f"{how} names {path}, which does not exist; give the path of "
                                 f"{inception.WEIGHTS_NAME}")
            return path, verify_weights(path, todo=f"{how} must name {inception.WEIGHTS_NAME} "
                                        f"({inception.WEIGHTS_SIZE}): give its path, or leave {how} out to use the "
                                        "copy `gandata fetch weights inception` puts in the cache")
    for path in (weights_cache_path(), _torch_hub_path()):
        if path.is_file():
            return path, verify_weights(path)
    raise EvalError(
        f"FID and KID need the Inception weights {inception.WEIGHTS_NAME} ({inception.WEIGHTS_SIZE}, sha1 "
        f"{inception.WEIGHTS_SHA1}), and none was found (looked at {named('inception_weights')}, ${WEIGHTS_ENV}, "
        f"{weights_cache_path()}, {_torch_hub_path()}). Either run `gandata fetch weights inception` on a machine "
        f"with network access, or download {inception.WEIGHTS_URL} elsewhere and pass "
        f"{hint('inception_weights', 'FILE')} "
        f"(or set {WEIGHTS_ENV})")


def fetch_weights(url: str = inception.WEIGHTS_URL, dest: str | os.PathLike | None = None,
                  sha1: str = inception.WEIGHTS_SHA1, sha256_prefix: str = inception.WEIGHTS_SHA256_PREFIX,
                  progress: bool = True) -> WeightsResult:
    """Download the weight file into the cache (or ``dest``), resuming a partial download, and verify it. The file
    appears under its final name only once verified."""
    import requests

    final = Path(dest) if dest else weights_cache_path()
    if final.is_file():
        todo = (f"give another {named('out')} (a name not taken)" if dest
                else "delete it and run the same command again")
        return WeightsResult(path=str(final), sha256=verify_weights(final, sha1, sha256_prefix, todo), downloaded=0)
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    try:
        download(url, part, "inception weights (bytes)", progress)
    except requests.RequestException as e:
        raise EvalError(f"could not download {url} ({failure(e)}); download it on another machine and pass "
                         f"{hint('inception_weights', 'FILE')} (or set {WEIGHTS_ENV})") from None
    try:
        digest = verify_weights(part, sha1, sha256_prefix)
    except EvalError:
        part.unlink()
        raise EvalError(f"the file downloaded from {url} has the wrong checksum (expected sha1 {sha1}); it was "
                         "deleted: try again, or download it elsewhere and pass "
                         f"{hint('inception_weights', 'FILE')}") from None
    os.replace(part, final)
    return WeightsResult(path=str(final), sha256=digest, downloaded=final.stat().st_size)


# ------------------------------------------------------------------------------------------------- reals


def _shard_digests(urls: list[str], sset: shardset.ShardSet | None) -> list[str]:
    known = {Path(s["name"]).name: s["sha256"] for s in (sset.shards() if sset else []) if s.get("sha256")}
    out = []
    for u in urls:
        name = Path(u).name
        if name in known:
            out.append(known[name])
        elif Path(u).is_file():
            out.append(_hash_file(u, "sha256")[0])
        else:  # a URL or pipe: its name stands for its content
            out.append("url:" + u)
    return out


def real_stats(spec: str, extractor: Extractor, n_real: int | None = None, batch: int = 64,
               progress: bool = True, commands: bool = False, option: str = "real") -> dict:
    """Mean, covariance and KID pool of the real images' features (and the set's ``labels``), from
    the cache when this (shard set, extractor, N real) was done before. ``n_real`` None: every image of the set.
    ``option``: the key that named ``spec`` (a training run's ``eval_real`` or ``shards``), for its messages."""
    from ..progress import Progress

    if not commands:
        shardset.refuse_commands([spec], named(option))
    try:
        urls, sset = shardset.resolve(spec)
    except FileNotFoundError as e:
        raise EvalError(f"{named(option, spec)}: {e}") from None
    key_src = {"shards": _shard_digests(urls, sset), **extractor.id, "n_real": n_real, "pool": KID_POOL}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "fid-stats" / f"{key[:32]}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return {"mu": z["mu"], "sigma": z["sigma"], "pool": z["pool"], "n": int(z["n"]), "key": key,
                        "cached": str(path), "labels": sset.labels if sset else None,
            "resolution": sset.resolution if sset else None}
        except (OSError, ValueError, KeyError):
            path.unlink()  # damaged: computed again
    total = n_real or (sset.samples_in("train") if sset else None) or None
    stats = FeatureStats(extractor.dims)
    with Progress("real features", total, enabled=progress) as bar:
        try:
            for images, _ in tdata.in_order(urls, batch, n_real, commands=commands):
                stats.add(extractor(images))
                bar.advance(len(images))
        except ValueError as e:
            raise EvalError(str(e)) from None
    if stats.n < 2:
        raise EvalError(f"{named(option, spec)}: fewer than 2 images")
    mu, sigma = stats.mean_cov()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        np.savez(f, mu=mu, sigma=sigma, pool=stats.kid_pool(), n=stats.n, key=json.dumps(key_src))
    return {"mu": mu, "sigma": sigma, "pool": stats.kid_pool(), "n": stats.n, "key": key, "cached": None,
            "labels": sset.labels if sset else None,
            "resolution": sset.resolution if sset else None}


# --------------------------------------------------------------------------------------------- evaluation


def fake_stats(G: nn.Module, nz: int, n_classes: int, extractor: Extractor, n: int, batch: int = 64, seed: int = 0,
               labels=None, device: torch.device | None = None, progress: bool = True) -> FeatureStats:
    """Features of ``n`` generated images, quantised to uint8 like the reals."""
    from ..progress import Progress

    device = device or next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    stats = FeatureStats(extractor.dims, seed=seed + 1)
    with Progress("generated features", n, enabled=progress) as bar:
        done = 0
        while done < n:
            k = min(batch, n - done)
            z = torch.randn(k, nz, generator=g).to(device)
            y = None
            if n_classes:  # labels drawn only for a conditional G (the draws move the generator)
                y = (labels(k, g) if labels else torch.randint(0, n_classes, (k,), generator=g)).to(device)
            x = G(z, y)
            images = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            stats.add(extractor(images))
            done += k
            bar.advance(k)
    return stats


def score(real: dict, fake: FeatureStats, metrics: tuple[str, ...], seed: int = 0,
          device: str | torch.device = "cpu") -> dict:
    out: dict = {}
    if "fid" in metrics:
        mu, sigma = fake.mean_cov()
        out["fid"] = frechet_distance(real["mu"], real["sigma"], mu, sigma)
    if "kid" in metrics:
        pool = fake.kid_pool()
        out["kid"], out["kid_std"] = kid(real["pool"], pool, seed=seed, device=device)
        out.update(kid_subsets=KID_SUBSETS, kid_subset_size=min(KID_SUBSET_SIZE, len(real["pool"]), len(pool)),
                   kid_pool_real=len(real["pool"]), kid_pool_gen=len(pool))
    return out


def result_line(ckpt: Path | str, kimg: float, real_spec: str, real: dict, extractor: Extractor, n: int, seed: int,
                names: tuple[str, ...], values: dict, seconds: float) -> dict:
    """One metrics line: the values and everything they depend on (FIDs compare only when all of it matches)."""
    return {"checkpoint": Path(ckpt).name, "kimg": kimg, **values, "metrics": sorted(names), "n_gen": n,
            "n_real": real["n"], "real": real_spec, "real_key": real["key"][:16], **extractor.id, "seed": seed,
            "seconds": round(seconds, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _config(line: dict) -> tuple:
    return (line.get("checkpoint"), line.get("n_gen"), line.get("real_key"), line.get("extractor"),
            line.get("weights_sha256"), line.get("resize"), line.get("seed"), tuple(line.get("metrics") or ()))


@dataclass
class EvalSummary(Summary):
    """The metric lines of one ``gandata eval`` (as written to, or found in, ``log``)."""

    results: list[dict]  # eval.jsonl lines: checkpoint, kimg, fid, kid, kid_std, n_gen, n_real, extractor, …
    log: str

    def to_json(self) -> dict:
        return {"results": self.results}

    def lines(self) -> list[str]:
        out = [
            f"{r['checkpoint']} ({r['kimg']:g} kimg): {_shown(r)}" + ("  (from eval.jsonl)" if r.get("reused") else "")
            for r in self.results
        ]
        r = self.results[-1]
        out.append(f"  N gen {r['n_gen']}, N real {r['n_real']}, {r['extractor']} (weights sha256 "
                   f"{r['weights_sha256'][:12]}…), resize {r['resize']}; lines in {self.log}")
        return out

    def brief(self) -> str:
        last = self.results[-1]
        shown = ", ".join(f"{k} {last[k]:.4g}" for k in ("fid", "kid") if k in last)
        return f"{shown} at {last['kimg']:g} kimg (N gen {last['n_gen']}, {last['extractor']})"


def _shown(r: dict) -> str:
    return "  ".join(f"{k} {r[k]:.4g}" + (f" ± {r['kid_std']:.2g}" if k == "kid" else "") for k in ("fid", "kid")
                     if k in r)


@dataclass
class WeightsResult(Summary):
    path: str
    sha256: str
    downloaded: int  # bytes downloaded now (0: the file was already there)

    def brief(self) -> str:
        return f"{self.path} (sha256 {self.sha256}) is ready; " + ("downloaded now" if self.downloaded
                                                                    else "it was already there")


def evaluate(target: str | os.PathLike, real: str, n: int = _DEFAULT["n"],
             metrics: str | tuple[str, ...] = _DEFAULT["metrics"], extractor: str | Extractor = _DEFAULT["extractor"],
             inception_weights: str | os.PathLike | None = None, n_real: int | None = None,
             every: bool = _DEFAULT["every"], batch: int = _DEFAULT["batch"], seed: int = _DEFAULT["seed"],
             device: str = _DEFAULT["device"], progress: bool = True, allow_commands: bool = False) -> EvalSummary:
    """FID/KID of a checkpoint, a run's newest checkpoint, or (``every``) each of a run's checkpoints. Results are
    appended to the run's ``eval.jsonl``; a checkpoint already evaluated with the same settings is not redone."""
    metrics = metrics if isinstance(metrics, str) else ",".join(metrics)
    check_call(EVAL, EvalError, n=n, metrics=metrics, n_real=n_real, batch=batch, seed=seed, device=device)
    names = parse_metrics(metrics)
    reuse_heap()
    weights, commands = inception_weights, allow_commands
    target = Path(target)
    if target.is_dir():
        ckpts = sorted(target.glob("checkpoint-*.pt")) if every else [p for p in [newest_checkpoint(target)] if p]
        if not ckpts:
            raise EvalError(f"{target} holds no checkpoint-*.pt; train first, or give a checkpoint file")
        run = target
    elif target.is_file():
        ckpts, run = [target], target.parent
    else:
        raise EvalError(f"{target} does not exist")
    ext = extractor if isinstance(extractor, Extractor) else load_extractor(extractor, weights, device)
    reals = real_stats(real, ext, n_real, batch, progress, commands)
    log_path = run / "eval.jsonl"
    done = {_config(line): line for line in read_jsonl(log_path)} if log_path.exists() else {}
    results = []
    for ck in ckpts:
        key = _config({"checkpoint": ck.name, "n_gen": n, "real_key": reals["key"][:16], **ext.id, "seed": seed,
                       "metrics": sorted(names)})
        if key in done:
            results.append({**done[key], "reused": True})
            continue
        t0 = time.monotonic()
        try:
            G, o, n_classes, meta = load_generator(ck, ext.device)
        except TrainError as e:
            if not every:
                raise
            print(f"skipping {ck.name}: {e}", file=sys.stderr, flush=True)
            continue
        if reals["resolution"] and meta["resolution"] != reals["resolution"]:
            raise EvalError(f"{ck} makes {meta['resolution']} px images and {real} holds {reals['resolution']} px "
                            "ones: a FID across sizes measures the resize; evaluate against a set of the same size "
                            "(or train again on these shards)")
        fake = fake_stats(
            G,
            o.nz,
            n_classes,
            ext,
            n,
            batch,
            seed,
            tdata.label_sampler(reals["labels"], n_classes),
            ext.device,
            progress,
        )
        values = score(reals, fake, names, seed, ext.device)
        line = result_line(ck, meta["cur_nimg"] / 1000, real, reals, ext, n, seed, names, values,
                           time.monotonic() - t0)
        with JsonlLog(log_path) as log:
            log.append(line)
        results.append(line)
    return EvalSummary(results=results, log=str(log_path))


class SnapshotEval:
    """Metrics of the EMA generator at each training snapshot, on rank 0; the real statistics are computed (or
    found in the cache) at the first one. Lines go to the run's ``eval.jsonl`` like ``gandata eval``'s."""

    def __init__(self, o, device: torch.device, n_classes: int, progress: bool = True,
                 resolution: int | None = None):
        self.o, self.n_classes, self.progress = o, n_classes, progress
        self.names = parse_metrics(o.eval)
        self.real_spec = o.eval_real or o.shards
        if o.eval_real and resolution:  # refused before training, not at the first snapshot
            try:
                _, sset = shardset.resolve(o.eval_real)
            except FileNotFoundError as e:
                raise EvalError(f"{named('eval_real', o.eval_real)}: {e}") from None
            if sset is not None and sset.resolution and sset.resolution != resolution:
                raise EvalError(f"{named('eval_real', o.eval_real)} holds {sset.resolution} px images and the run "
                                f"trains at {resolution} px: a FID across sizes measures the resize; give a set of "
                                "the same size")
        self.ext = load_extractor(o.eval_extractor, o.inception_weights, device, option="eval_extractor")
        self.reals: dict | None = None

    def __call__(self, G: nn.Module, ckpt: Path, cur_nimg: int) -> dict:
        t0 = time.monotonic()
        if self.reals is None:
            named_by = "eval_real" if self.o.eval_real else "shards"
            self.reals = real_stats(self.real_spec, self.ext, None, progress=self.progress,
                                    commands=self.o.allow_commands, option=named_by)
        labels = tdata.label_sampler(self.reals["labels"], self.n_classes)
        fake = fake_stats(G, self.o.nz, self.n_classes, self.ext, self.o.eval_n, seed=self.o.seed, labels=labels,
                          device=self.ext.device, progress=False)
        values = score(self.reals, fake, self.names, self.o.seed, self.ext.device)
        line = result_line(ckpt, cur_nimg / 1000, self.real_spec, self.reals, self.ext, self.o.eval_n, self.o.seed,
                           self.names, values, time.monotonic() - t0)
        with JsonlLog(Path(ckpt).parent / "eval.jsonl") as log:
            log.append(line)
        if self.progress:
            shown = "  ".join(f"{k} {line[k]:.4g}" for k in ("fid", "kid") if k in line)
            print(f"eval at {line['kimg']:g} kimg: {shown}  (N gen {line['n_gen']}, N real {line['n_real']}, "
                  f"{line['extractor']})", file=sys.stderr, flush=True)
        return line
