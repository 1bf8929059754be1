"""Quality benchmark: do gandata's trainers learn as well as the implementations people would otherwise copy?

    pip install -e '.[bench]'                    # scikit-learn: the image set ships inside its wheel
    python benchmarks/quality.py                 # every trainer vs its reference: 40 kimg, 32 px, 5 seeds
    python benchmarks/quality.py --kinds dcgan --seeds 0-9 --jobs 2
    gandata eval RUN --real WORK/shards --extractor benchmarks/quality.py:extractor --metrics fid   # the same score

* Data: scikit-learn's handwritten digits (1 797 real 8×8 scans from UCI, 10 classes), shipped inside the
  scikit-learn wheel — nothing is downloaded. Each is scaled to 32×32 (Lanczos) and written as a dataset folder,
  then sharded by ``gandata shard`` with the digit as the class label: 80 % train, 20 % held out.
* Score: a small CNN classifier trained here on the train split (seeded; cached by the data's hash). Its 64-d
  penultimate features give a Fréchet distance (``trainers.metrics.frechet_distance``) between 2 000 generated
  images and the train split; "classes" is how many digits get at least a quarter of their fair share (2.5 %) of
  the classifier's predictions; for conditional models, "cond. acc." is the share of samples classified as the label
  they were asked for (per label and overall). The floor row scores the held-out reals the same way.
* Contestants, at equal budget (``--kimg`` thousand real images shown to the critic) and equal widths: gandata's
  trainers as a user runs them (their defaults; scored with the EMA generator that ``gandata sample`` and
  ``gandata eval`` use, and with the raw generator), and references written below in the canonical style:
  pytorch/examples' DCGAN (Sigmoid + BCELoss, two backwards, the D-step fake reused for G, batch 64); LSGAN = that
  DCGAN with Mao et al.'s 0-1 least squares; Arjovsky et al.'s WGAN (RMSprop 5e-5, clip 0.01, 5 critic steps and 100
  in the first 25 and every 500th G step); Gulrajani et al.'s WGAN-GP (Adam 1e-4 β (0, 0.9), λ 10, 5 critic steps,
  no normalisation in the critic); and the common conditional DCGAN (one-hot label concatenated to z, one-hot
  planes concatenated to D's input). Every generator is scored in eval mode (batch norm's running statistics: how
  a trained generator is used, and what ``gandata sample`` does) and, as a second column, in train mode (each batch
  of 100 normalised by its own statistics, as pytorch/examples draws its sample grids) — the reference's train-mode
  score is often better than its eval-mode one.
* Runs are separate processes, ``--jobs`` at a time, one CPU thread each; each result is a JSON file under
  ``--work``, so an interrupted benchmark continues where it stopped. A seed counts as "stuck" when its samples
  cover at most 2 classes (noise or total collapse).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent

from gandata.trainers import data as tdata  # noqa: E402
from gandata.trainers.metrics import Extractor, frechet_distance, gaussian_stats, weights_sha256  # noqa: E402

KINDS = ("dcgan", "lsgan", "wgan", "wgan-gp", "cdcgan")
N_CLASSES = 10
N_GEN = 2000
FEATURES = 64
DEFAULT_WORK = Path(os.environ.get("GANDATA_QUALITY_WORK", Path.home() / ".cache" / "gandata" / "quality"))


# ------------------------------------------------------------------------------------------------------ data


def prepare(work: Path) -> Path:
    """sklearn digits → a dataset folder → gandata shards (train / val, labelled by digit). Returns the shard folder."""
    shards = work / "shards"
    if (shards / "dataset.json").exists():
        return shards
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("the quality benchmark needs scikit-learn (its wheel ships the image set): pip install -e '.[bench]'")
    from PIL import Image

    from gandata import images
    from gandata.datasets import Dataset
    from gandata.shard import ShardOptions, shard

    digits = load_digits()
    with Dataset.create(work / "raw") as ds:
        for i, (im, target) in enumerate(zip(digits.images, digits.target)):
            if f"digit{i:04d}" in ds:
                continue
            pil = Image.fromarray(np.round(im * 255 / 16).astype(np.uint8)).convert("RGB")
            ds.add(f"digit{i:04d}", images.encode(images.resize(pil, 32), "png"), "png",
                   {"width": 32, "height": 32, "source": "sklearn-digits", "digit": str(int(target))})
    shard([work / "raw"], shards, "digits", ShardOptions(size=32, val_fraction=0.2, dedupe="none", label_field="digit",
                                                         maxcount=256, min_shards=4))
    return shards


def arrays(shards: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of one split of the (small) digits set, in shard order: uint8 N×3×H×W and int64 labels."""
    from gandata import shardset

    urls, ss = shardset.resolve(str(shards), split)
    n_classes = len(ss.label_names) if ss and ss.label_names else 0
    parts = list(tdata.in_order(urls, 4096, conditional=n_classes > 0, n_classes=n_classes))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ------------------------------------------------------------------------------------------------ classifier


class Classifier(nn.Module):
    """32×32 RGB in [0, 1] → 64-d features (``features``) and 10 logits (``forward``)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(128, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Features(nn.Module):
    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf

    def forward(self, x):
        return self.clf.features(x)


def classifier(work: Path = DEFAULT_WORK) -> Classifier:
    """The classifier trained on the train split (seed 0, 30 epochs, ±2 px shifts), cached by the data's hash."""
    shards = prepare(work)
    info = json.loads((shards / "dataset.json").read_text())
    digest = hashlib.sha256(json.dumps([s["sha256"] for s in info["splits"]["train"]["shards"]]).encode()).hexdigest()
    path = work / f"classifier-{digest[:16]}.pt"
    clf = Classifier()
    if path.exists():
        clf.load_state_dict(torch.load(path, weights_only=True))
        return clf.eval()
    x, y = arrays(shards, "train")
    x = x.float() / 255
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same sums in the same order on every machine, so the same classifier
    torch.manual_seed(0)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
            xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.set_num_threads(threads)
    clf.eval()
    xv, yv = arrays(shards, "val")
    with torch.no_grad():
        acc = float((clf(xv.float() / 255).argmax(1) == yv).float().mean())
    tmp = path.with_suffix(".tmp")
    torch.save(clf.state_dict(), tmp)
    os.replace(tmp, path)
    (work / "classifier.json").write_text(json.dumps({"file": path.name, "held_out_accuracy": acc}))
    return clf


def extractor(device: torch.device | str = "cpu") -> Extractor:
    """The classifier's features as a ``trainers.metrics.Extractor`` (``gandata eval --extractor
    benchmarks/quality.py:extractor``); the data and the classifier come from ``$GANDATA_QUALITY_WORK``."""
    clf = classifier()
    net = _Features(clf).eval().to(device)
    return Extractor("digits-classifier-64d", FEATURES, weights_sha256(net), "bilinear-32", net, torch.device(device))


class Scorer:
    def __init__(self, work: Path):
        self.clf = classifier(work)
        x, _ = arrays(prepare(work), "train")
        self.mu, self.sigma = gaussian_stats(self.features(x)[0])

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """uint8 N×3×H×W → (features, predicted class)."""
        feats, preds = [], []
        for i in range(0, len(images), 500):
            f = self.clf.features(images[i:i + 500].float() / 255)
            feats.append(f.numpy())
            preds.append(self.clf.head(f).argmax(1).numpy())
        return np.concatenate(feats).astype(np.float64), np.concatenate(preds)

    def score(self, images: torch.Tensor, asked: torch.Tensor | None = None) -> dict:
        feats, preds = self.features(images)
        mu, sigma = gaussian_stats(feats)
        share = np.bincount(preds, minlength=N_CLASSES) / len(preds)
        out = {"fd": frechet_distance(self.mu, self.sigma, mu, sigma),
               "classes": int((share >= 0.25 / N_CLASSES).sum()), "n": len(images)}
        if asked is not None:
            a = asked.numpy()
            out["cond_acc"] = float((preds == a).mean())
            out["cond_acc_per_label"] = [round(float((preds[a == k] == k).mean()), 3) for k in range(N_CLASSES)]
        return out


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def generate(G: nn.Module, nz: int, conditional: bool, seed: int = 12345, onehot: bool = False,
             batch: int = 100) -> tuple[torch.Tensor, torch.Tensor | None]:
    """N_GEN images (labels cycling 0-9 for conditional models) in batches of ``batch``, in G's current mode."""
    g = torch.Generator().manual_seed(seed)
    out, labels = [], []
    for i in range(0, N_GEN, batch):
        z = torch.randn(batch, nz, generator=g)
        if conditional:
            y = torch.arange(i, i + batch) % N_CLASSES
            labels.append(y)
            x = G(torch.cat([z, F.one_hot(y, N_CLASSES).float()], 1)) if onehot else G(z, y)
        else:
            x = G(z)
        out.append(to_uint8(x))
    return torch.cat(out), (torch.cat(labels) if conditional else None)


# ------------------------------------------------------------------------------------------------ references
# Written in the canonical style of each paper's code, sized for 32 px (one stride-2 block fewer than 64 px).


class RefG(nn.Module):
    """pytorch/examples' DCGAN generator at 32 px (``DCGAN_G`` in Arjovsky's code is the same network)."""

    def __init__(self, nz: int, ngf: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),  # 4×4
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),  # 8×8
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),  # 16×16
            nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())  # 32×32

    def forward(self, z):
        return self.main(z.view(z.shape[0], -1, 1, 1))


class RefD(nn.Module):
    """pytorch/examples' DCGAN discriminator at 32 px; ``norm=False`` drops batch norm (Gulrajani's critic),
    ``sigmoid`` ends it as pytorch/examples does, ``in_ch`` > 3 takes label planes (conditional DCGAN)."""

    def __init__(self, ndf: int, norm: bool = True, sigmoid: bool = False, in_ch: int = 3):
        super().__init__()

        def bn(c):
            return nn.BatchNorm2d(c) if norm else nn.Identity()

        layers = [nn.Conv2d(in_ch, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),  # 16×16
                  nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), bn(ndf * 2), nn.LeakyReLU(0.2, inplace=True),  # 8×8
                  nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), bn(ndf * 4), nn.LeakyReLU(0.2, inplace=True),  # 4×4
                  nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False)]
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x).view(-1)


def ref_weights_init(m):
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


class Loader:
    """What ``DataLoader(dataset, batch_size, shuffle=True)`` does: a new permutation every epoch, the last batch
    partial; images in [-1, 1] (``Normalize(0.5, 0.5)``); counts the real images it hands out."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
        self.x, self.y, self.batch = x.float() / 127.5 - 1, y, batch
        self.g = torch.Generator().manual_seed(seed)
        self.shown = 0
        self._it = iter(())

    def epoch(self):
        perm = torch.randperm(len(self.x), generator=self.g)
        for i in range(0, len(perm), self.batch):
            idx = perm[i:i + self.batch]
            yield self.x[idx], self.y[idx]

    def next(self):
        try:
            b = next(self._it)
        except StopIteration:
            self._it = self.epoch()
            b = next(self._it)
        self.shown += len(b[0])
        return b


def ref_dcgan(x, y, nimg, seed, width, nz=100, lsgan=False):
    """pytorch/examples dcgan/main.py's loop (``lsgan``: Mao et al.'s least squares on a linear D output)."""
    torch.manual_seed(seed)
    netG, netD = RefG(nz, width), RefD(width, sigmoid=not lsgan)
    netG.apply(ref_weights_init)
    netD.apply(ref_weights_init)
    criterion = nn.MSELoss() if lsgan else nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = Loader(x, y, 64, seed)
    while data.shown < nimg:
        real, _ = data.next()
        b = real.size(0)
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        label = torch.full((b,), 1.0)
        errD_real = criterion(netD(real), label) * (0.5 if lsgan else 1)
        errD_real.backward()
        noise = torch.randn(b, nz, 1, 1)
        fake = netG(noise)
        label.fill_(0.0)
        errD_fake = criterion(netD(fake.detach()), label) * (0.5 if lsgan else 1)
        errD_fake.backward()
        optD.step()
        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(1.0)
        errG = criterion(netD(fake), label) * (0.5 if lsgan else 1)
        errG.backward()
        optG.step()
    return netG


def ref_wgan(x, y, nimg, seed, width, nz=100):
    """martinarjovsky/WassersteinGAN main.py's loop (RMSprop, clamp before each critic step, Diters 100/5)."""
    torch.manual_seed(seed)
    netG, netD = RefG(nz, width), RefD(width)
    netG.apply(ref_weights_init)
    netD.apply(ref_weights_init)
    optD = torch.optim.RMSprop(netD.parameters(), lr=5e-5)
    optG = torch.optim.RMSprop(netG.parameters(), lr=5e-5)
    one, mone = torch.tensor(1.0), torch.tensor(-1.0)
    data = Loader(x, y, 64, seed)
    gen_iterations = 0
    while data.shown < nimg:
        for p in netD.parameters():
            p.requires_grad = True
        Diters = 100 if gen_iterations < 25 or gen_iterations % 500 == 0 else 5
        j = 0
        while j < Diters and data.shown < nimg:
            j += 1
            for p in netD.parameters():
                p.data.clamp_(-0.01, 0.01)
            real, _ = data.next()
            netD.zero_grad()
            errD_real = netD(real).mean()
            errD_real.backward(one)
            with torch.no_grad():
                fake = netG(torch.randn(real.size(0), nz, 1, 1))
            errD_fake = netD(fake).mean()
            errD_fake.backward(mone)
            optD.step()
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        errG = netD(netG(torch.randn(64, nz, 1, 1))).mean()
        errG.backward(one)
        optG.step()
        gen_iterations += 1
    return netG


def ref_wgan_gp(x, y, nimg, seed, width, nz=100):
    """Gulrajani et al.'s WGAN-GP (improved_wgan_training, as the PyTorch ports write it)."""
    torch.manual_seed(seed)
    netG, netD = RefG(nz, width), RefD(width, norm=False)
    netG.apply(ref_weights_init)
    netD.apply(ref_weights_init)
    optD = torch.optim.Adam(netD.parameters(), lr=1e-4, betas=(0.0, 0.9))
    optG = torch.optim.Adam(netG.parameters(), lr=1e-4, betas=(0.0, 0.9))
    data = Loader(x, y, 64, seed)
    while data.shown < nimg:
        for p in netD.parameters():
            p.requires_grad = True
        for _ in range(5):
            real, _ = data.next()
            b = real.size(0)
            netD.zero_grad()
            with torch.no_grad():
                fake = netG(torch.randn(b, nz))
            alpha = torch.rand(b, 1, 1, 1)
            interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            grad = torch.autograd.grad(netD(interp).sum(), interp, create_graph=True)[0]
            gp = ((grad.view(b, -1).norm(2, dim=1) - 1) ** 2).mean() * 10
            d_cost = netD(fake).mean() - netD(real).mean() + gp
            d_cost.backward()
            optD.step()
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        g_cost = -netD(netG(torch.randn(64, nz))).mean()
        g_cost.backward()
        optG.step()
    return netG


def ref_cdcgan(x, y, nimg, seed, width, nz=100):
    """The common conditional DCGAN: one-hot y concatenated to z in G, one-hot planes concatenated to D's input."""
    torch.manual_seed(seed)
    netG, netD = RefG(nz + N_CLASSES, width), RefD(width, sigmoid=True, in_ch=3 + N_CLASSES)
    netG.apply(ref_weights_init)
    netD.apply(ref_weights_init)
    criterion = nn.BCELoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = Loader(x, y, 64, seed)

    def planes(labels, size):
        return F.one_hot(labels, N_CLASSES).float()[:, :, None, None].expand(-1, -1, size, size)

    while data.shown < nimg:
        real, real_y = data.next()
        b = real.size(0)
        netD.zero_grad()
        errD_real = criterion(netD(torch.cat([real, planes(real_y, 32)], 1)), torch.ones(b))
        errD_real.backward()
        fake_y = torch.randint(0, N_CLASSES, (b,))
        fake = netG(torch.cat([torch.randn(b, nz), F.one_hot(fake_y, N_CLASSES).float()], 1))
        errD_fake = criterion(netD(torch.cat([fake.detach(), planes(fake_y, 32)], 1)), torch.zeros(b))
        errD_fake.backward()
        optD.step()
        netG.zero_grad()
        errG = criterion(netD(torch.cat([fake, planes(fake_y, 32)], 1)), torch.ones(b))
        errG.backward()
        optG.step()
    return netG


REFERENCES = {"dcgan": ref_dcgan, "lsgan": lambda *a, **k: ref_dcgan(*a, **k, lsgan=True), "wgan": ref_wgan,
              "wgan-gp": ref_wgan_gp, "cdcgan": ref_cdcgan}


# ------------------------------------------------------------------------------------------------------ jobs


def run_job(job: dict, work: Path) -> dict:
    """One (implementation, kind, seed) run, trained and scored in this process."""
    torch.set_num_threads(1)
    shards = prepare(work)
    scorer = Scorer(work)
    kind, seed, nimg, width = job["kind"], job["seed"], int(job["kimg"] * 1000), job["width"]
    conditional = kind == "cdcgan"
    t0 = time.monotonic()
    result = dict(job)
    if job["impl"] == "reference":
        x, y = arrays(shards, "train")
        G = REFERENCES[kind](x, y, nimg, seed, width)
        result["seconds"] = round(time.monotonic() - t0, 1)
        for mode in ("eval", "train"):
            G.train(mode == "train")
            imgs, asked = generate(G, 100, conditional, onehot=True)
            result[f"{mode}_mode"] = scorer.score(imgs, asked)
    else:
        from gandata.trainers.checkpoints import latest_checkpoint, load_checkpoint
        from gandata.trainers.models import build
        from gandata.trainers.options import TrainOptions
        from gandata.trainers.sampling import load_generator
        from gandata.trainers.train import train

        out = work / "runs" / f"{job_name(job)}"
        if not latest_checkpoint(out) or load_checkpoint(latest_checkpoint(out))["cur_nimg"] < nimg:
            train(TrainOptions(kind=kind, shards=str(shards), out=str(out), kimg=job["kimg"], ngf=width, ndf=width,
                               seed=seed, device="cpu", workers=1, threads=1, snap_kimg=job["kimg"],
                               log_kimg=max(1.0, job["kimg"] / 10), grid=100, resume="auto",
                               **job.get("options", {})), progress=False)
        result["seconds"] = round(time.monotonic() - t0, 1)
        ck_path = latest_checkpoint(out)
        G_ema, o, _, _ = load_generator(ck_path, torch.device("cpu"))
        imgs, asked = generate(G_ema, o.nz, conditional)
        result["eval_mode"] = scorer.score(imgs, asked)
        imgs, asked = generate(copy.deepcopy(G_ema).train(), o.nz, conditional)  # a copy: train mode moves BN stats
        result["train_mode"] = scorer.score(imgs, asked)
        G_raw, _ = build(o, 32, N_CLASSES if conditional else 0)
        G_raw.load_state_dict(load_checkpoint(ck_path)["G"])
        imgs, asked = generate(G_raw.eval(), o.nz, conditional)
        result["raw_eval_mode"] = scorer.score(imgs, asked)
        if conditional:
            from gandata.trainers.models import label_influence

            result["label_influence"] = round(label_influence(G_ema), 3)
    return result


def job_name(job: dict) -> str:
    opts = "".join(f"-{k}{v}" for k, v in sorted(job.get("options", {}).items()))
    return f"{job['impl']}-{job['kind']}-w{job['width']}-k{job['kimg']:g}{opts}-s{job['seed']}"


def _options(text: str) -> dict:
    """``batch=64,ema_kimg=5`` → gandata TrainOptions overrides (numbers parsed)."""
    out = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def floor(work: Path) -> dict:
    scorer = Scorer(work)
    xv, yv = arrays(prepare(work), "val")
    return scorer.score(xv, yv)


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where data, runs and results go (resumable)")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--impls", default="gandata,reference")
    ap.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3,7")
    ap.add_argument("--kimg", type=float, default=40.0)
    ap.add_argument("--width", type=int, default=32, help="ngf = ndf for every contestant")
    ap.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--gandata-options", default="", help="overrides for gandata's runs, e.g. batch=64 (a variant)")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    if a.job:
        job = json.loads(a.job)
        res = run_job(job, a.work)
        path = a.work / "results" / f"{job_name(job)}.json"
        path.parent.mkdir(exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(res))
        os.replace(path.with_suffix(".tmp"), path)
        return
    prepare(a.work)
    t0 = time.monotonic()
    clf_info = (classifier(a.work), json.loads((a.work / "classifier.json").read_text()))[1]
    variant = _options(a.gandata_options)
    jobs = [dict(impl=impl, kind=kind, seed=seed, kimg=a.kimg, width=a.width,
                 **({"options": variant} if variant and impl == "gandata" else {}))
            for kind in a.kinds.split(",") for seed in _seeds(a.seeds) for impl in a.impls.split(",")]

    def path_of(j):
        return a.work / "results" / f"{job_name(j)}.json"

    todo = [j for j in jobs if not path_of(j).exists()]
    print(f"{len(jobs)} runs, {len(todo)} to do, {a.jobs} at a time; classifier held-out accuracy "
          f"{clf_info['held_out_accuracy']:.3f}", file=sys.stderr, flush=True)

    def one(j):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, __file__, "--work", str(a.work), "--job", json.dumps(j)], env=env,
                           capture_output=True, text=True)
        if r.returncode:
            print(f"FAILED {j}: {r.stderr[-2000:]}", file=sys.stderr, flush=True)
        else:
            s = json.loads(path_of(j).read_text())
            print(f"{j['impl']:9s} {j['kind']:8s} seed {j['seed']}: FD {s['eval_mode']['fd']:8.1f} (train mode "
                  f"{s['train_mode']['fd']:.1f})  classes {s['eval_mode']['classes']:2d}  {s['seconds']:.0f} s  "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(a.jobs) as pool:
        list(pool.map(one, todo))
    results = [json.loads(path_of(j).read_text()) for j in jobs if path_of(j).exists()]
    print(table(results, floor(a.work), a))


def table(results: list[dict], fl: dict, a) -> str:
    def med(values):
        return float(np.median(values))

    lines = [f"{a.kimg:g} kimg, 32 px, ngf = ndf = {a.width}, sklearn digits (1 429 train / 368 held out), {N_GEN} "
             f"samples; Fréchet distance (FD) in the classifier's {FEATURES}-d features, lower is better; generators "
             "in eval mode, and in train mode in the last FD column.", "",
             "| run | seeds | FD per seed | FD median | classes (median) | stuck | cond. acc. (median) | FD median, "
             "train mode |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| held-out reals (floor, {fl['n']} images) | — | — | {fl['fd']:.1f} | {fl['classes']} | — | "
             f"{fl['cond_acc']:.2f} | — |"]
    for kind in KINDS:
        for impl, key, name in (("reference", "eval_mode", f"reference {kind}"),
                                ("gandata", "eval_mode", f"gandata {kind} (EMA)"),
                                ("gandata", "raw_eval_mode", f"gandata {kind} (raw G)")):
            rs = sorted((r for r in results if r["kind"] == kind and r["impl"] == impl), key=lambda r: r["seed"])
            if not rs:
                continue
            sc = [r[key] for r in rs]
            fds = [s["fd"] for s in sc]
            cond = f"{med([s['cond_acc'] for s in sc]):.2f}" if "cond_acc" in sc[0] else "—"
            train = f"{med([r['train_mode']['fd'] for r in rs]):.0f}" if key == "eval_mode" else "—"
            lines.append(f"| {name} | {len(rs)} | {' / '.join(f'{v:.0f}' for v in fds)} | {med(fds):.0f} | "
                         f"{med([s['classes'] for s in sc]):.0f} | {sum(s['classes'] <= 2 for s in sc)} | {cond} | "
                         f"{train} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
