"""The bundled trainers on CPU: tiny models, 32 px, a few steps — end to end, the losses, DDP over gloo, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import webdataset as wds
from conftest import drawn_image, kill_when, labelled_set, png_bytes
from gandata.trainers.checkpoints import load_checkpoint, rng_state, set_rng_state
from gandata.trainers.losses import gradient_penalty
from gandata.trainers.models import Critic, Generator
from gandata.trainers.options import TrainError, TrainOptions
from gandata.trainers.sampling import sample
from gandata.trainers.train import train

pytestmark = pytest.mark.slow  # trains, starts processes, or runs Ray

TINY = dict(ngf=8, ndf=8, nz=16, workers=0, shuffle=64, log_kimg=0.05, device="cpu", grid=16)


@pytest.fixture(scope="module")
def labelled_shards(tmp_path_factory) -> Path:
    """Real gandata shards at 32 px with three classes."""
    return labelled_set(tmp_path_factory.mktemp("shards"), 96, names=("bald", "hair", "hat"), field="category",
                        val_fraction=0.0, maxcount=32)


@pytest.fixture(scope="module")
def same_image_shards(tmp_path_factory) -> Path:
    """Shards whose samples are all the same picture: every order of the stream gives the same batches, so runs on
    1 or 2 processes, or interrupted and resumed, must compute exactly the same thing."""
    base = tmp_path_factory.mktemp("same")
    png = png_bytes(drawn_image(7, (32, 32)))
    for s in range(2):
        with wds.TarWriter(str(base / f"same-{s:06d}.tar")) as w:
            for i in range(16):
                w.write({"__key__": f"s{s}i{i:03d}", "png": png})
    return base


@pytest.mark.parametrize("kind", ["dcgan", "lsgan", "wgan", "wgan-gp", "cdcgan"])
def test_every_trainer_runs_end_to_end(kind, labelled_shards, tmp_path):
    out = tmp_path / kind
    summary = train(TrainOptions(kind=kind, shards=str(labelled_shards), out=str(out), kimg=0.1, batch=8,
                                 snap_kimg=0.05, critic_warmup=False, **TINY), progress=False)
    assert summary.kimg >= 0.1 and summary.ranks_consistent and summary.resolution == 32
    ckpts = sorted(out.glob("checkpoint-*.pt"))
    assert len(ckpts) >= 2 and (out / "reals.png").exists() and sorted(out.glob("fakes-*.png"))
    ck = load_checkpoint(ckpts[-1])
    assert {"G", "D", "G_ema", "optG", "optD", "step", "cur_nimg", "rng", "options"} <= set(ck)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(k in rows[0] for k in ("d_loss", "g_loss", "critic_gap", "gp", "images_per_s"))
    opts = json.loads((out / "options.json").read_text())
    assert opts["resolution"] == 32 and opts["batch"] == 8 and opts["world"] == 1
    if kind == "cdcgan":
        assert opts["label_names"] == ["bald", "hair", "hat"] and opts["n_classes"] == 3
    r = sample(out, n=9, out=tmp_path / "s.png", label=1 if kind == "cdcgan" else None, device="cpu")
    assert r.n == 9 and (tmp_path / "s.png").stat().st_size > 0


def test_paper_defaults_are_resolved():
    gp = TrainOptions(kind="wgan-gp", shards="x", out="y")
    assert (gp.batch, gp.lr, gp.n_critic, gp.critic_norm) == (64, 1e-4, 5, "group")
    dc = TrainOptions(kind="dcgan", shards="x", out="y")
    assert (dc.batch, dc.lr, dc.n_critic, dc.critic_norm) == (64, 2e-4, 1, "batch")  # pytorch/examples
    w = TrainOptions(kind="wgan", shards="x", out="y")
    assert (w.batch, w.lr, w.n_critic) == (64, 5e-5, 5)
    with pytest.raises(TrainError, match="without batch norm"):
        TrainOptions(kind="wgan-gp", shards="x", out="y", critic_norm="batch")
    for res, depth in ((32, 3), (64, 4), (128, 5)):
        g, d = Generator(res, 16, 8), Critic(res, 8)
        assert g(torch.randn(2, 16)).shape == (2, 3, res, res) and d(torch.zeros(2, 3, res, res)).shape == (2,)
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules()) == depth + 1


def test_gradient_penalty_matches_a_float64_reference_over_all_non_batch_dims():
    torch.manual_seed(0)
    critic = Critic(32, 8, norm="group").double()
    real, fake = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randn(4, 3, 32, 32, dtype=torch.float64)
    alpha = torch.rand(4, dtype=torch.float64)
    got = gradient_penalty(critic, real, fake, alpha)
    # the reference, written out: one alpha per sample, the gradient's norm over C, H and W together
    x = (alpha.view(4, 1, 1, 1) * real + (1 - alpha.view(4, 1, 1, 1)) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x)
    want = ((g.reshape(4, -1).pow(2).sum(1).sqrt() - 1) ** 2).mean()
    assert torch.allclose(got.double(), want, rtol=1e-6)
    per_pixel = ((g.norm(2, dim=1) - 1) ** 2).mean()  # the known bug: norm over channels only
    assert not torch.allclose(got.double(), per_pixel, rtol=1e-2)
    got.backward()  # differentiable with respect to the critic's parameters (double backward)
    assert all(p.grad is not None for p in critic.parameters())


def test_wgan_clipping_holds(labelled_shards, tmp_path):
    out = tmp_path / "wgan"
    train(TrainOptions(kind="wgan", shards=str(labelled_shards), out=str(out), kimg=0.12, batch=8, snap_kimg=0.12,
                       critic_warmup=False, **TINY), progress=False)
    ck = load_checkpoint(sorted(out.glob("checkpoint-*.pt"))[-1])
    weights = [v for k, v in ck["D"].items() if "running" not in k and "num_batches" not in k]
    assert max(float(w.abs().max()) for w in weights) <= 0.01 + 1e-7


def test_rng_state_round_trips():
    state = rng_state()
    a = (torch.rand(3), __import__("numpy").random.rand(3), __import__("random").random())
    set_rng_state(state)
    b = (torch.rand(3), __import__("numpy").random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all() and a[2] == b[2]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gandata.cli", "train", *args]


EXACT = ["wgan-gp", "--kimg", "0.32", "--batch", "8", "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "0",
         "--device", "cpu", "--g-norm", "none", "--snap-kimg", "0.16", "--log-kimg", "0.08", "--json",
         "--threads", "1"]  # fixed threads: fitted to the load, two runs could sum in another order


def _final(out: Path) -> dict:
    return load_checkpoint(sorted(out.glob("checkpoint-*.pt"))[-1])


def _same_params(a: dict, b: dict, atol: float) -> None:
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            assert torch.allclose(a[net][k].float(), b[net][k].float(), atol=atol), (net, k)


def test_two_process_torchrun_matches_one_process(same_image_shards, tmp_path):
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    one = subprocess.run(_cli(*EXACT, "--shards", str(same_image_shards), "--out", str(tmp_path / "one")),
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        _cli(*EXACT, "--shards", str(same_image_shards), "--out", str(tmp_path / "two"), "--gpus", "2"),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world"] == 2 and summary["ranks_consistent"]  # parameters identical on both ranks
    a, b = _final(tmp_path / "one"), _final(tmp_path / "two")
    assert (
        a["step"] == b["step"]
        and b["world"] == 2
        and json.loads((tmp_path / "two" / "options.json").read_text())["per_rank_batch"] == 4
    )
    _same_params(a, b, atol=1e-5)  # the same global batch: the same result, up to float summation order
    # nothing left behind: not the launch's folder in the run, not torch's launcher's logs in the temporary folder
    assert not list((tmp_path / "two").glob("launch-*")) and not list((tmp_path / "tmp").iterdir())


def test_kill_then_resume_auto_continues_exactly(same_image_shards, tmp_path):
    ref = subprocess.run(_cli(*EXACT, "--shards", str(same_image_shards), "--out", str(tmp_path / "ref")),
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(*EXACT, "--shards", str(same_image_shards), "--out", str(out)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: bool(list(out.glob("checkpoint-*.pt"))), timeout=120)
    first = sorted(out.glob("checkpoint-*.pt"))[0]
    saved = load_checkpoint(first)
    resumed = subprocess.run(_cli(*EXACT, "--shards", str(same_image_shards), "--out", str(out), "--resume", "auto"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from"] is not None and summary["steps"] == _final(tmp_path / "ref")["step"]
    assert load_checkpoint(summary["resumed_from"])["step"] >= saved["step"]
    a, b = _final(tmp_path / "ref"), _final(out)
    _same_params(a, b, atol=0)  # bit for bit: optimiser state, EMA and noise all continued where they stopped
    for k in a["optD"]["state"]:
        assert torch.equal(a["optD"]["state"][k]["exp_avg"], b["optD"]["state"][k]["exp_avg"])
    # the rows logged between the checkpoint and the kill were dropped and logged again: every kimg once
    kimgs = [json.loads(line)["kimg"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    ref_kimgs = [json.loads(line)["kimg"] for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert kimgs == ref_kimgs


def test_untrusted_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "checkpoint-000000001.pt"
    torch.save({"G": Evil()}, path)
    with pytest.raises(TrainError, match="refusing to load"):
        load_checkpoint(path)
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "sample", str(path)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("gandata: error: refusing to load")


def test_bad_options_are_one_line(tmp_path, labelled_shards):
    r = subprocess.run(_cli("cdcgan", "--shards", str(tmp_path / "nope"), "--device", "cpu"), capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 1 and "--shards" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # the refused run left no runs/cdcgan (with its lock file) behind
    # a folder that was there before is kept, with what it held
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    r = subprocess.run(_cli("dcgan", "--shards", str(tmp_path / "nope"), "--out", str(tmp_path / "mine")),
                       capture_output=True, text=True)
    assert r.returncode == 1 and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    r = subprocess.run(_cli("gan9000", "--shards", str(labelled_shards)), capture_output=True, text=True)
    assert r.returncode == 2 and "unknown trainer" in r.stderr  # a malformed command line
    # the ranks of --gpus 2: rank 0's line, said once by the command (not by each rank, torchrun and the command)
    r = subprocess.run(_cli("dcgan", "--shards", str(tmp_path / "nope"), "--out", str(tmp_path / "two" / "run"),
                            "--gpus", "2", "--device", "cpu"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert r.stderr.startswith("gandata: error: --shards") and not (tmp_path / "two").exists()
    # fewer classes than the set names: said against the set, with the value that works
    r = subprocess.run(_cli("cdcgan", "--shards", str(labelled_shards), "--out", str(tmp_path / "few"), "--n-classes",
                            "2", "--device", "cpu"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert f"--n-classes 2, but {labelled_shards} has 3 classes" in r.stderr and "--n-classes 3" in r.stderr
    # more processes than the CPU has cores: refused before any starts (1024 of them held a 2-core machine)
    many = str((os.cpu_count() or 1) + 1)
    r = subprocess.run(_cli("dcgan", "--shards", str(labelled_shards), "--out", str(tmp_path / "many"), "--gpus",
                            many, "--device", "cpu"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    assert r.stderr.startswith(f"gandata: error: --gpus {many} asks for {many} training processes, but this machine "
                               f"has {os.cpu_count()} CPU cores") and not (tmp_path / "many").exists()
