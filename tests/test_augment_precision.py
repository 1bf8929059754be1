"""The trainers beyond the references: differentiable augmentation (DiffAugment), reduced precision (bf16, fp16 with
gradient scaling), channels_last and torch.compile — the ops on their own, then short real runs on the CPU."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import labelled_set
from gandata.trainers import augment as aug
from gandata.trainers.checkpoints import load_checkpoint
from gandata.trainers.kinds import KINDS, parse_policy
from gandata.trainers.losses import gradient_penalty
from gandata.trainers.models import Critic, Generator
from gandata.trainers.options import TrainOptions
from gandata.trainers.train import step_generator, train

from gandata.errors import UserError

ALL = ("color", "translation", "cutout")


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------- the ops


def test_every_part_lets_gradients_reach_the_generator():
    G, D = Generator(32, 8, 8, 3, 0), Critic(32, 8, 3, "none", 0)
    for policy in [(p,) for p in ALL] + [ALL]:
        G.zero_grad()
        x = G(torch.randn(6, 8, generator=g(1)))
        out = aug.apply(x, policy, aug.draws(policy, 6, 32, g(2)))
        D(out).mean().backward()
        grads = [p.grad for p in G.parameters() if p.grad is not None]
        assert grads and sum(float(t.abs().sum()) for t in grads) > 0, policy


def test_the_draws_come_from_the_given_generator_only():
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    first = aug.apply(x, ALL, aug.draws(ALL, 5, 32, step_generator(7, 12, "aug-d0-real")))
    torch.manual_seed(123)  # whatever ran before (the global RNG) changes nothing
    torch.rand(1000)
    again = aug.apply(x, ALL, aug.draws(ALL, 5, 32, step_generator(7, 12, "aug-d0-real")))
    assert torch.equal(first, again)
    other = aug.apply(x, ALL, aug.draws(ALL, 5, 32, step_generator(7, 13, "aug-d0-real")))
    assert not torch.equal(first, other)  # another step: other draws


def test_a_ranks_rows_get_what_the_whole_batch_would_give_them():
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    whole = aug.Augment("color,translation,cutout")(x, g(3), 8, slice(0, 8))
    half = aug.Augment("color,translation,cutout")(x[4:], g(3), 8, slice(4, 8))
    assert torch.equal(whole[4:], half)


def test_images_never_mix_so_labels_stay_with_their_images():
    x = torch.arange(1, 9, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16).clone()
    out = aug.apply(x, ("translation", "cutout"), aug.draws(("translation", "cutout"), 8, 16, g(4)))
    for i in range(8):
        assert set(out[i].unique().tolist()) <= {0.0, float(i + 1)}  # only its own pixels, or the zero fill


def test_translation_and_cutout_do_what_they_say():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    shifted = aug._translate(x, torch.tensor([[1, -1]]))  # down one row, left one column
    assert torch.equal(shifted[0, 0, 1:, :3], x[0, 0, :3, 1:])
    assert shifted[0, 0, 0].abs().sum() == 0 and shifted[0, 0, :, 3].abs().sum() == 0
    ones = torch.ones(1, 3, 32, 32)
    cut = aug._cutout(ones, torch.tensor([[16, 16]]))
    assert int((cut[0, 0] == 0).sum()) == 16 * 16  # half the side, wholly inside
    edge = aug._cutout(ones, torch.tensor([[0, 0]]))
    assert int((edge[0, 0] == 0).sum()) == 8 * 8  # centred on the corner: a quarter of it inside
    d = aug.draws(("color",), 2, 32, g(5))
    flat = torch.zeros(2, 3, 32, 32)
    assert torch.allclose(aug.apply(flat, ("color",), d)[:, :, 0, 0], d["brightness"].view(2, 1).expand(2, 3))


def test_a_policy_is_checked():
    assert parse_policy("cutout, color") == ("cutout", "color")
    for bad in ("", "colour", "color,,zoom"):
        with pytest.raises(ValueError, match="color, translation, cutout"):
            parse_policy(bad)
    with pytest.raises(UserError, match="--augment-policy"):
        TrainOptions(kind="dcgan", shards="x", out="y", augment_policy="zoom")
    with pytest.raises(UserError, match="--precision"):
        TrainOptions(kind="dcgan", shards="x", out="y", precision="fp8")


# -------------------------------------------------------------------------------------------------- fp16


def test_the_fp16_penalty_is_the_fp32_one_and_the_scaler_skips_overflow():
    torch.manual_seed(0)
    D = Critic(32, 8, 3, "none", 0)
    real, fake, alpha = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32), torch.rand(4)
    plain = gradient_penalty(D, real, fake, alpha)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    scaled = gradient_penalty(D, real, fake, alpha, scaler=scaler)
    assert torch.allclose(plain, scaled, rtol=1e-5)  # the scale goes in before the gradient and out after it
    # a step whose gradients overflowed is skipped and the scale lowered; the weights stay as they were
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    before = [p.detach().clone() for p in D.parameters()]
    loss = D(real).mean() * float("inf")
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0**11
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))


# ------------------------------------------------------------------------------------------------ runs


TINY = dict(batch=8, ngf=8, ndf=8, nz=8, workers=0, device="cpu", shuffle=16, threads=1)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return labelled_set(tmp_path_factory.mktemp("aug"), 48, names=("a", "b", "c"))


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_and_augmentation_train_every_kind(kind, small_set, tmp_path):
    """bf16 autocast on the CPU with DiffAugment: losses finite, the generator moves, the checkpoint stays fp32."""
    run = tmp_path / kind
    s = train(TrainOptions(kind=kind, shards=str(small_set), out=str(run), kimg=0.096, snap_kimg=0.048,
                           log_kimg=0.016, precision="bf16", augment="diffaug", critic_warmup=False, **TINY),
              progress=False)
    rows = _rows(run)
    assert rows and all(all(map(lambda v: v == v and abs(v) < 1e6, (r["d_loss"], r["g_loss"]))) for r in rows)
    cks = sorted(run.glob("checkpoint-*.pt"))
    first, last = load_checkpoint(cks[0]), load_checkpoint(cks[-1])
    assert any(not torch.equal(a, b) for a, b in zip(first["G"].values(), last["G"].values()))
    assert all(t.dtype in (torch.float32, torch.int64) for t in last["G"].values())
    assert json.loads((run / "options.json").read_text())["augmenting"] is True
    assert s.kimg >= 0.096


@pytest.mark.slow
def test_augmented_runs_repeat_and_resume_exactly(small_set, tmp_path):
    o = dict(kind="wgan-gp", shards=str(small_set), kimg=0.128, snap_kimg=0.064, log_kimg=0.064, augment="diffaug",
             **TINY)
    a = train(TrainOptions(out=str(tmp_path / "a"), **o), progress=False)
    b = train(TrainOptions(out=str(tmp_path / "b"), **o), progress=False)
    assert a.params_sha256 == b.params_sha256
    # resumed twice from one checkpoint: the same continuation (the augmentation's draws come from the step alone)
    half = {**o, "kimg": 0.064}
    train(TrainOptions(out=str(tmp_path / "c"), **half), progress=False)
    shutil.copytree(tmp_path / "c", tmp_path / "c2")
    c = train(TrainOptions(out=str(tmp_path / "c"), resume="auto", **o), progress=False)
    c2 = train(TrainOptions(out=str(tmp_path / "c2"), resume="auto", **o), progress=False)
    assert c.params_sha256 == c2.params_sha256 and c.resumed_from and c.kimg == a.kimg
    off = train(TrainOptions(out=str(tmp_path / "d"), **{**o, "augment": "none"}), progress=False)
    assert off.params_sha256 != a.params_sha256


@pytest.mark.slow
def test_auto_augments_a_small_set_only(small_set, tmp_path, monkeypatch):
    import gandata.trainers.train as ttrain

    train(TrainOptions(kind="dcgan", shards=str(small_set), out=str(tmp_path / "a"), kimg=0.016, snap_kimg=0.016,
                       **TINY), progress=False)
    assert json.loads((tmp_path / "a" / "options.json").read_text())["augmenting"] is True  # 38 < the threshold
    monkeypatch.setattr(ttrain, "AUTO_AUGMENT_BELOW", 10)
    train(TrainOptions(kind="dcgan", shards=str(small_set), out=str(tmp_path / "b"), kimg=0.016, snap_kimg=0.016,
                       **TINY), progress=False)
    assert json.loads((tmp_path / "b" / "options.json").read_text())["augmenting"] is False


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [("fp32", "bf16"), ("fp16", "fp32")])
def test_a_run_resumes_across_precisions(first, then, small_set, tmp_path):
    run = tmp_path / "r"
    o = dict(kind="wgan-gp", shards=str(small_set), out=str(run), snap_kimg=0.032, log_kimg=0.032, **TINY)
    train(TrainOptions(kimg=0.032, precision=first, **o), progress=False)
    if first == "fp16":
        assert "scalers" in load_checkpoint(sorted(run.glob("checkpoint-*.pt"))[-1])
    s = train(TrainOptions(kimg=0.064, precision=then, resume="auto", **o), progress=False)
    assert s.resumed_from and s.kimg >= 0.064
    assert all(abs(r["d_loss"]) < 1e6 for r in _rows(run))


@pytest.mark.slow
def test_a_compiled_step_gives_the_eager_losses(small_set, tmp_path, capfd):
    o = dict(kind="lsgan", shards=str(small_set), kimg=0.024, snap_kimg=0.024, log_kimg=0.008, augment="none",
             **TINY)  # batch norm in G and D: the compiler's trial forward must not move their statistics
    train(TrainOptions(out=str(tmp_path / "eager"), **o), progress=False)
    train(TrainOptions(out=str(tmp_path / "compiled"), compile=True, **o), progress=False)
    err = capfd.readouterr().err
    if "torch.compile is not available here" in err:
        pytest.skip("torch.compile cannot build here: " + err.split("available here", 1)[1].split("\n")[0][:120])
    eager, compiled = _rows(tmp_path / "eager"), _rows(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    for a, b in zip(eager, compiled):  # three steps; kernels may add in another order: 1e-4 relative
        for k in ("d_loss", "g_loss", "critic_gap"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), (k, a, b)
