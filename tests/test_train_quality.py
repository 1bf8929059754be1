"""What makes the trainers learn, checked directly: the conditional generator uses its label, the EMA's half-life is
what --ema-kimg says for every kind, and CPU threads are fitted to the machine."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys

import gandata.trainers.checkpoints as tcheck
import gandata.trainers.cpu as tcpu
import gandata.trainers.train as ttrain
import numpy as np
import pytest
import torch
from conftest import lines_in, png_bytes, wait_for
from gandata.trainers.checkpoints import latest_checkpoint
from gandata.trainers.cpu import configure_threads
from gandata.trainers.models import Generator, label_influence
from gandata.trainers.options import TrainError, TrainOptions
from gandata.trainers.sampling import load_generator
from gandata.trainers.train import ema_beta, train
from PIL import Image, ImageDraw

from gandata.datasets import Dataset
from gandata.shard import ShardOptions, shard

pytestmark = pytest.mark.slow  # trains, starts processes, or runs Ray

TINY = dict(ngf=8, ndf=8, nz=16, workers=0, shuffle=64, log_kimg=0.05, device="cpu", grid=16, threads=1)
COLOURS = {"red": 0, "green": 1, "blue": 2}


@pytest.fixture(scope="module")
def colour_shards(tmp_path_factory):
    """Three classes that differ visibly: shapes drawn mostly in red, green or blue on a dark field."""
    base = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    with Dataset.create(base / "raw") as ds:
        for i in range(120):
            name = list(COLOURS)[i % 3]
            rgb = [40, 40, 40]
            rgb[COLOURS[name]] = 230
            im = Image.new("RGB", (32, 32), (20, 20, 20))
            d = ImageDraw.Draw(im)
            for _ in range(3):
                x0, y0 = (int(v) for v in rng.integers(0, 24, 2))
                d.ellipse((x0, y0, x0 + int(rng.integers(8, 16)), y0 + int(rng.integers(8, 16))), fill=tuple(rgb))
            ds.add(f"c{i:03d}", png_bytes(im), "png", {"width": 32, "height": 32, "source": "t", "colour": name})
    shard([base / "raw"], base / "shards", "c", ShardOptions(size=32, label_field="colour", val_fraction=0.0,
                                                             maxcount=40, min_shards=1))
    return base / "shards"


def test_the_label_enters_the_generator_at_the_noise_scale():
    """The issue's measurement: the label's share of the first layer's pre-activation. With the embedding at the
    usual N(0, 0.02) init it was 0.011 / 0.20 (the generator then ignored its labels); it must be of the order of
    √(classes / nz)."""
    torch.manual_seed(0)
    G = Generator(32, nz=100, ngf=64, n_classes=10)
    w = G.net[0].weight.detach()  # (nz + embedding, channels, 4, 4)
    z = torch.randn(512, 100)
    e = G.embed(torch.randint(0, 10, (512,))).detach()
    from_z = torch.einsum("bi,iokl->bokl", z, w[:100]).std()
    from_label = torch.einsum("bi,iokl->bokl", e, w[100:]).std()
    assert float(from_label / from_z) >= 0.2  # √(10/100) ≈ 0.32; the old init gave 0.055
    assert label_influence(G.eval()) >= 0.1  # and it reaches the output, before any training


def test_conditional_batch_norm_lets_the_label_move_every_layer():
    G = Generator(32, nz=16, ngf=8, n_classes=3)
    cbn = [m for m in G.modules() if type(m).__name__ == "ConditionalBatchNorm2d"]
    assert len(cbn) == 3  # one per normalised layer at 32 px
    with torch.no_grad():
        for m in cbn:
            m.bias.weight[1] += 2.0  # class 1 shifts every layer
    G.eval()
    z = torch.randn(8, 16)
    a, b = G(z, torch.zeros(8, dtype=torch.long)), G(z, torch.ones(8, dtype=torch.long))
    assert (a - b).abs().mean() > 0.05
    with pytest.raises(ValueError):
        label_influence(Generator(32, nz=16, ngf=8))


def test_cdcgan_samples_follow_their_label_after_a_short_run(colour_shards, tmp_path):
    """200 steps on three visibly different classes: asked for a class, the generator draws it. (A raised learning
    rate makes so short a run learn at all; what is tested is the label's path, not the defaults.)"""
    out = tmp_path / "c"
    train(TrainOptions(kind="cdcgan", shards=str(colour_shards), out=str(out), kimg=3.2, batch=16, snap_kimg=3.2,
                       seed=0, ema_kimg=0.2, lr=1e-3, **{**TINY, "ngf": 16, "ndf": 16}), progress=False)
    G, o, n_classes, _ = load_generator(latest_checkpoint(out), torch.device("cpu"))
    assert n_classes == 3
    influence = label_influence(G)
    assert influence >= 0.5, influence  # the label moves the picture at least half as much as z does
    z = torch.randn(60, o.nz, generator=torch.Generator().manual_seed(1))
    y = torch.arange(60) % 3
    with torch.no_grad():
        x = G(z, y)
    dominant = x.mean(dim=(2, 3)).argmax(1)  # the brightest channel of each sample
    wanted = torch.tensor([COLOURS[name] for name in sorted(COLOURS)])[y]  # label ids follow the sorted names
    assert float((dominant == wanted).float().mean()) >= 0.8


@pytest.mark.parametrize("kind,n_critic,warmup", [("dcgan", 1, False), ("wgan-gp", 5, False), ("wgan", 5, True)])
def test_ema_half_life_in_kimg_is_ema_kimg_for_every_kind(kind, n_critic, warmup, colour_shards, tmp_path, monkeypatch):
    """From the β the loop uses and the real images each generator step consumed, the effective half-life must be
    --ema-kimg (the old code counted one batch per generator step: n_critic × too long for the WGANs, 100× in
    WGAN's warm-up)."""
    calls = []
    real = ttrain.ema_beta

    def recording(ema_kimg, rampup, cur_nimg, step_nimg):
        b = real(ema_kimg, rampup, cur_nimg, step_nimg)
        calls.append((step_nimg, b))
        return b

    monkeypatch.setattr(ttrain, "ema_beta", recording)
    batch, ema_kimg = 8, 0.5
    opts = {**TINY, "log_kimg": 10}
    train(TrainOptions(kind=kind, shards=str(colour_shards), out=str(tmp_path / kind), kimg=1.0, batch=batch,
                       snap_kimg=10, ema_kimg=ema_kimg, ema_rampup=0, critic_warmup=warmup, n_critic=n_critic,
                       **opts), progress=False)
    assert calls
    for i, (step_nimg, beta) in enumerate(calls):
        critic_steps = 100 if warmup and (i < 25 or i % 500 == 0) else n_critic
        assert step_nimg == critic_steps * batch
        half_life_kimg = step_nimg * math.log(0.5) / math.log(beta) / 1000
        assert half_life_kimg == pytest.approx(ema_kimg, rel=1e-9)


def test_ema_ramp_up_caps_the_half_life_early():
    assert ema_beta(10, 0.05, cur_nimg=1000, step_nimg=64) == pytest.approx(0.5 ** (64 / 50))
    assert ema_beta(10, 0.05, cur_nimg=10**6, step_nimg=320) == pytest.approx(0.5 ** (320 / 10_000))
    assert ema_beta(10, 0, cur_nimg=0, step_nimg=64) == pytest.approx(0.5 ** (64 / 10_000))


def test_threads_fit_the_machine(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("GANDATA_AUTO_THREADS", raising=False)
        monkeypatch.setattr(tcpu.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
        cpu = torch.device("cpu")
        monkeypatch.setattr(tcpu, "others_load", lambda world: 0.1)
        assert configure_threads(cpu) == 8 and torch.get_num_threads() == 8
        assert configure_threads(cpu, world=2) == 4
        monkeypatch.setattr(tcpu, "others_load", lambda world: 6.2)  # six cores kept busy by others
        assert configure_threads(cpu) == 2
        monkeypatch.setattr(tcpu, "others_load", lambda world: 30.0)
        assert configure_threads(cpu) == 1
        assert configure_threads(torch.device("cuda", 0), world=2, workers=1) == 2  # 8 // 2 // 2
        assert configure_threads(cpu, threads=3) == 3  # asked for
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        assert configure_threads(cpu) == 1  # the user's setting is kept
        monkeypatch.setenv("GANDATA_AUTO_THREADS", "1")  # set by `--gpus N` for its ranks: fitted again
        monkeypatch.setattr(tcpu, "others_load", lambda world: 0.0)
        assert configure_threads(cpu, world=2) == 4
    finally:
        torch.set_num_threads(before)


def test_own_runnable_threads_are_counted(tmp_path):
    assert tcpu.own_runnable() >= 1  # this thread is running
    for i, state in enumerate("RSRDR"):  # a /proc/self of five threads, three running; names with ') ' in them
        (tmp_path / "task" / str(i)).mkdir(parents=True)
        (tmp_path / "task" / str(i) / "stat").write_text(f"{100 + i} (py) thread {i}) {state} 1 2 3\n")
    assert tcpu.own_runnable(str(tmp_path)) == 3
    assert tcpu.own_runnable(str(tmp_path / "absent")) == 0  # no /proc: nothing counted


def test_others_load_counts_what_runs_now(monkeypatch, tmp_path):
    proc = tmp_path / "loadavg"
    proc.write_text("0.20 0.10 0.00 5/300 99\n")
    monkeypatch.setattr(tcpu.os, "getloadavg", lambda: (7.5, 0, 0))  # a lagging average is not used
    monkeypatch.setattr(tcpu, "own_runnable", lambda: 1)
    assert tcpu.others_load(1, str(proc), samples=2) == 4.0  # five runnable threads, one of them this process's
    assert tcpu.others_load(2, str(proc), samples=1) == 3.0  # and a sibling rank of this job
    monkeypatch.setattr(tcpu, "own_runnable", lambda: 2)
    assert tcpu.others_load(1, str(proc), samples=1) == 3.0  # two of them this process's
    proc.write_text("3.20 2.10 2.00 1/300 99\n")
    assert tcpu.others_load(1, str(proc), samples=1) == 0.0  # just after a load ended: idle now
    assert tcpu.others_load(1, str(tmp_path / "none")) == 7.5  # no /proc (not Linux): the average alone


def test_resuming_with_another_architecture_is_one_line(colour_shards, tmp_path):
    out = tmp_path / "r"
    train(TrainOptions(kind="dcgan", shards=str(colour_shards), out=str(out), kimg=0.05, batch=8, snap_kimg=0.05,
                       **TINY), progress=False)
    with pytest.raises(TrainError, match=r"another architecture \(ngf 8 → 16\)"):
        train(TrainOptions(kind="dcgan", shards=str(colour_shards), out=str(out), kimg=0.1, batch=8, snap_kimg=0.05,
                           resume="auto", **{**TINY, "ngf": 16}), progress=False)


def test_two_fresh_runs_with_one_seed_see_the_same_batches(colour_shards, tmp_path):
    """The data order is seeded (WebDataset's defaults mix in the pid and the clock): same seed, same losses —
    with a loader worker process too."""
    losses = []
    for name in ("a", "b"):
        out = tmp_path / name
        train(TrainOptions(kind="dcgan", shards=str(colour_shards), out=str(out), kimg=0.16, batch=8, snap_kimg=1,
                           **{**TINY, "workers": 1, "log_kimg": 0.04}), progress=False)
        losses.append([json.loads(line)["d_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_progress_lines_carry_an_eta_and_a_resume_says_so(colour_shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ttrain, "PROGRESS_SECONDS", 0.0)  # a line after every step (10 s in real runs)
    out = tmp_path / "p"
    opts = dict(kind="dcgan", shards=str(colour_shards), out=str(out), batch=8, snap_kimg=0.04,
                **{**TINY, "log_kimg": 1})
    train(TrainOptions(kimg=0.04, **opts), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 4 and all(re.search(r"/0\.04 kimg .* img/s  ETA \d+:\d\d:\d\d$", line) for line in lines), (
        lines
    )
    train(TrainOptions(kimg=0.08, resume="auto", **opts), progress=True)
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("dcgan: resuming from ") and "checkpoint-000000040.pt at 0.04 kimg (step 5)" in first


def test_ctrl_c_writes_a_checkpoint_then_the_command_continues(colour_shards, tmp_path):
    """Ctrl-C from a terminal (SIGINT to the whole process group, loader worker included) before the first snapshot:
    the step finishes, a checkpoint is written, exit 130 with one instruction (the same command again); the command
    again — here with a shorter --kimg, which only sets where it ends — goes on from it and says so."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gandata.cli", "train", "dcgan", "--shards", str(colour_shards), "--out", str(out),
           "--kimg", "50", "--batch", "8", "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "1", "--device",
           "cpu", "--snap-kimg", "50", "--log-kimg", "0.04", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(proc, lambda: lines_in(out / "metrics.jsonl") >= 2, timeout=120)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at" in err and "run the same command again" in err and "Traceback" not in err, err
    assert "--resume" not in err, err  # it once said both, and the one it said first did not work
    [ck] = sorted(out.glob("checkpoint-*.pt"))
    nimg = tcheck.load_checkpoint(ck)["cur_nimg"]
    assert 0 < nimg < 50_000
    r = subprocess.run([*cmd[:cmd.index("--kimg") + 1], str(nimg / 1000 + 0.04), *cmd[cmd.index("--kimg") + 2:]],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resuming from {ck} at {nimg / 1000:g} kimg" in r.stderr
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == str(ck)


def test_a_run_folder_is_never_started_over_or_shared(colour_shards, tmp_path, monkeypatch):
    from gandata.fileio import FolderLock

    out = tmp_path / "run"
    opts = dict(kind="dcgan", shards=str(colour_shards), out=str(out), kimg=0.04, batch=8, snap_kimg=0.04, **TINY)
    train(TrainOptions(**opts), progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert train(TrainOptions(**opts), progress=False).already_trained  # the same again: finished, nothing done
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing overwritten
    monkeypatch.setattr(ttrain, "RUN_LOCK_WAIT", 0.1)
    with FolderLock(out):  # another run holds the folder
        with pytest.raises(TrainError, match="another training run is writing to"):
            train(TrainOptions(**{**opts, "kimg": 0.08}, resume="auto"), progress=False)
    assert train(TrainOptions(**{**opts, "kimg": 0.08}, resume="auto"), progress=False).resumed_from


def test_resume_passes_over_a_damaged_newest_checkpoint(colour_shards, tmp_path, capsys):
    out = tmp_path / "run"
    opts = dict(kind="dcgan", shards=str(colour_shards), out=str(out), batch=8, snap_kimg=0.04, **TINY)
    train(TrainOptions(kimg=0.08, **opts), progress=False)
    first, newest = sorted(out.glob("checkpoint-*.pt"))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated
    s = train(TrainOptions(kimg=0.12, resume="auto", **opts), progress=False)
    assert s.resumed_from == str(first) and s.kimg >= 0.12
    assert f"skipping {newest}: it does not load" in capsys.readouterr().err


def test_a_resumed_run_forgets_the_rows_it_will_log_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"kimg": k, "step": i}) + "\n" for i, k in enumerate((0.08, 0.16, 0.24, 0.32))))
    ttrain._forget_rows_after(path, 160)  # continuing from the checkpoint at 0.16 kimg
    assert [json.loads(line)["kimg"] for line in path.read_text().splitlines()] == [0.08, 0.16]
    ttrain._forget_rows_after(path, 0)  # no checkpoint: starting from zero
    assert path.read_text() == ""


def test_one_sided_label_smoothing_lowers_only_the_reals_target():
    from gandata.trainers.losses import OBJECTIVES

    gan, lsgan = OBJECTIVES["gan"], OBJECTIVES["lsgan"]

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(64, generator=g) * 4, torch.randn(64, generator=g) * 4
    assert torch.allclose(gan.d_loss(r, f, 0.9), bce(r, torch.full_like(r, 0.9)) + bce(f, torch.zeros_like(f)),
                          atol=1e-6)
    assert torch.allclose(gan.d_loss(r, f), bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)), atol=1e-6)
    assert torch.allclose(lsgan.d_loss(r, f, 0.9), 0.5 * ((r - 0.9) ** 2).mean() + 0.5 * (f**2).mean())
    # a real the critic is sure of no longer pulls its logit on towards +inf: the pull stops at logit(0.9)
    for logit, sign in ((math.log(9), 0), (8.0, 1), (1.0, -1)):
        x = torch.tensor([logit], requires_grad=True)
        gan.d_loss(x, torch.tensor([-50.0]), 0.9).backward()
        assert (abs(x.grad.item()) < 1e-6) if sign == 0 else (x.grad.item() * sign > 1e-3)
    # the fakes' side and the generator's loss are untouched
    assert torch.equal(gan.g_loss(f), torch.nn.functional.softplus(-f).mean())


def test_label_smoothing_options(colour_shards, tmp_path):
    from gandata.trainers.kinds import KINDS

    for kind in KINDS:  # 0.1 for dcgan (its tail of failed seeds, docs/quality.md), else off
        assert TrainOptions(kind=kind, shards="x", out="y").label_smoothing == (0.1 if kind == "dcgan"
                                                                                            else 0.0)
    assert TrainOptions(kind="dcgan", shards="x", out="y", label_smoothing=0.0).label_smoothing == 0.0
    for kind in ("wgan", "wgan-gp"):
        with pytest.raises(TrainError, match="no meaning for " + kind):
            TrainOptions(kind=kind, shards="x", out="y", label_smoothing=0.1)
    for bad in (-0.1, 0.5, 1.0):
        with pytest.raises(TrainError, match="--label-smoothing"):
            TrainOptions(kind="dcgan", shards="x", out="y", label_smoothing=bad)
    # the command line passes it through to the run
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "train", "dcgan", "--shards", str(colour_shards),
                        "--out", str(out), "--kimg", "0.064", "--batch", "16", "--label-smoothing", "0.2",
                        "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "0", "--device", "cpu", "--threads",
                        "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "options.json").read_text())["label_smoothing"] == 0.2
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "train", "wgan-gp", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--label-smoothing" not in r.stdout
