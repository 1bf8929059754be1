"""The same command continues: a training run stopped by Ctrl-C, SIGTERM or SIGKILL (one process, or the ranks of
--gpus 2) goes on when the same command runs again; a finished one says "already trained"; a changed option is one
line naming it. And what a run gives back stays bounded and honest: checkpoints that cannot be used are refused in
one line, fp16 metrics are strict JSON, a sample grid and a many-class network fit in bounded memory."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import drawn_image, labelled_set, png_bytes, tar_of, wait_for

TINY = dict(ngf=8, ndf=8, nz=16, workers=0, shuffle=64, device="cpu", grid=16, threads=1, batch=8)
INTERRUPTED = "gandata: interrupted; run the same command again to continue where it stopped"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return labelled_set(tmp_path_factory.mktemp("shards"), 96, names=("bald", "hair", "hat"), field="category",
                        val_fraction=0.0, maxcount=32)


def _train_cmd(shards: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "gandata.cli", "train", "dcgan", "--shards", str(shards), "--out", str(out),
            "--kimg", "0.32", "--batch", "8", "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "1", "--device",
            "cpu", "--snap-kimg", "0.08", "--log-kimg", "0.04", "--threads", "1", "--json", *more]


def _checkpoints(out: Path) -> list[Path]:
    return sorted(out.glob("checkpoint-*.pt"))


def _kimgs(out: Path) -> list[float]:
    return [json.loads(line)["kimg"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _continued(cmd: list[str], out: Path, timeout: float = 300) -> dict:
    """The same command again: it finishes the run from a checkpoint of the folder, every kimg logged once."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["kimg"] >= 0.32 and not summary.get("already_trained")
    assert summary["resumed_from"] and Path(summary["resumed_from"]).parent == out
    kimgs = _kimgs(out)
    assert kimgs == sorted(set(kimgs)) and kimgs[-1] >= 0.32
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_the_same_command_continues_after_a_signal(sig, shards, tmp_path):
    """Ctrl-C (to the whole process group, as a terminal sends it, loader worker included), SIGTERM and SIGKILL of
    the command: the first two save a checkpoint and print one instruction, and that instruction works."""
    out = tmp_path / "run"
    cmd = _train_cmd(shards, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(proc, lambda: bool(_checkpoints(out)), timeout=120)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert "interrupted at" in err and err.strip().splitlines()[-1] == INTERRUPTED, err
        assert "--resume" not in err and "Traceback" not in err, err  # one instruction, the one that works
    _continued(cmd, out)


def _ranks_of(out: Path) -> list[int]:
    """Processes still running for this run: the launcher and the ranks name its launch-<pid>.json."""
    spec, pids = str(out / "launch-").encode(), []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and spec in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the parent-death signal is Linux's")
def test_two_processes_end_with_the_command_and_the_same_command_continues(shards, tmp_path):
    """--gpus 2 on the CPU: SIGTERM to the command stops its ranks and says the one instruction; SIGKILL to the
    command leaves no rank training behind (torch's launcher runs in a session of its own and gets SIGTERM when the
    command dies); each time the same command goes on from the newest checkpoint."""
    out = tmp_path / "run"
    cmd = _train_cmd(shards, out, "--gpus", "2")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    wait_for(first, lambda: bool(_checkpoints(out)), timeout=240)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and err.strip().splitlines()[-1] == INTERRUPTED, err[-3000:]
    assert "Traceback" not in err and "--resume" not in err, err[-3000:]
    assert not _ranks_of(out)
    seen = _checkpoints(out)
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(second, lambda: _checkpoints(out) != seen, timeout=240)
    second.kill()
    second.wait()
    deadline = time.monotonic() + 60
    while _ranks_of(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ranks_of(out), "ranks outlived the command that was killed"
    assert list(out.glob("launch-*"))  # the killed command's launch folder, which only the next command can remove
    assert _continued(cmd, out)["world"] == 2
    assert not list(out.glob("launch-*"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the parent-death signal is Linux's")
def test_the_ranks_end_when_torch_s_launcher_is_killed(shards, tmp_path):
    """The launcher killed outright (SIGKILL: no time to stop its ranks): each rank gets SIGTERM from the kernel,
    saves and ends; none trains on, orphaned; the command says the processes failed, and the same command goes on."""
    out = tmp_path / "run"
    cmd = _train_cmd(shards, out, "--gpus", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(proc, lambda: bool(_checkpoints(out)), timeout=240)
    launcher = [pid for pid in _ranks_of(out) if b"--launcher" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(launcher) == 1
    os.kill(launcher[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "training processes failed" in err, err[-3000:]
    deadline = time.monotonic() + 60
    while _ranks_of(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ranks_of(out), "ranks outlived the launcher that was killed"
    assert _continued(cmd, out)["world"] == 2


@pytest.mark.slow
def test_a_finished_run_is_already_trained_and_a_changed_option_is_named(shards, tmp_path, capsys):
    from gandata.trainers.options import TrainError, TrainOptions
    from gandata.trainers.train import RunChanged, train

    out = tmp_path / "run"
    opts = dict(kind="dcgan", shards=str(shards), out=str(out), kimg=0.08, snap_kimg=0.04, log_kimg=0.04, **TINY)
    done = train(TrainOptions(**opts), progress=False)
    state = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for again in (TrainOptions(**opts), TrainOptions(**opts, resume="auto"), TrainOptions(**{**opts, "kimg": 0.05})):
        s = train(again, progress=False)
        assert s.already_trained and s.checkpoint == done.checkpoint and s.grid == done.grid
        assert s.lines()[0].startswith("already trained: dcgan for 0.08 kimg")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == state  # nothing read into or written
    # a summary that a version wrote without them (a finished run re-run with --resume auto): found in the folder
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "checkpoint": None, "grid": None}))
    state = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    s = train(TrainOptions(**opts), progress=False)
    assert s.checkpoint == done.checkpoint and s.grid == done.grid
    # a changed option: one line naming it, and the ways on; an architecture's has no --resume auto to offer
    with pytest.raises(RunChanged, match=r"lr 0\.0002 \(now 0\.001\):.*or --resume auto to continue it"):
        train(TrainOptions(**opts, lr=1e-3), progress=False)
    with pytest.raises(RunChanged, match=r"ngf 8 \(now 16\): give the options.*with these$"):
        train(TrainOptions(**{**opts, "ngf": 16}), progress=False)
    with pytest.raises(TrainError, match=r"another architecture \(resolution 32 → 64\)"):  # not "the layers differ"
        train(TrainOptions(**{**opts, "kimg": 0.12}, resolution=64, resume="auto"), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == state
    longer = train(TrainOptions(**{**opts, "kimg": 0.12}), progress=False)  # kimg only lengthens the run
    assert longer.resumed_from == done.checkpoint and not longer.already_trained and longer.kimg >= 0.12
    # the command line's summary of a finished run
    from gandata.cli import main

    argv = ["gandata", "train", "dcgan", "--shards", str(shards), "--out", str(out), "--kimg", "0.12", "--batch", "8",
            "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "0", "--device", "cpu", "--snap-kimg", "0.04",
            "--log-kimg", "0.04", "--shuffle", "64", "--grid", "16", "--threads", "1"]
    capsys.readouterr()
    old, sys.argv = sys.argv, argv
    try:
        main()
    finally:
        sys.argv = old
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("already trained: dcgan for 0.12") and lines[1] == f"  checkpoint: {longer.checkpoint}"


@pytest.mark.slow
def test_a_finished_run_is_proven_by_its_final_checkpoint_in_its_own_folder(shards, tmp_path, capsys):
    """Finished means the checkpoint of the summary's last step is in the run folder and loads: a copy of the folder
    names its own files; the final checkpoint truncated, the same command trains that part again from the one
    before (and says why); every checkpoint gone, it trains the run again, whole."""
    from gandata.trainers.checkpoints import load_checkpoint
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    out, copy = tmp_path / "run", tmp_path / "copy"
    opts = dict(kind="dcgan", shards=str(shards), out=str(out), kimg=0.08, snap_kimg=0.04, log_kimg=0.04, **TINY)
    done = train(TrainOptions(**opts), progress=False)
    final = out / "checkpoint-000000080.pt"
    assert done.checkpoint == str(final)
    shutil.copytree(out, copy)
    s = train(TrainOptions(**{**opts, "out": str(copy)}), progress=False)  # a moved run names its own files
    assert s.already_trained and s.out == str(copy) and s.checkpoint == str(copy / final.name)
    assert s.grid == str(copy / Path(done.grid).name) and s.lines()[1] == f"  checkpoint: {copy / final.name}"
    with open(final, "r+b") as f:  # a truncated copy, a full disk
        f.truncate(final.stat().st_size // 2)
    capsys.readouterr()
    s = train(TrainOptions(**opts), progress=True)
    assert not s.already_trained and s.resumed_from == str(out / "checkpoint-000000040.pt") and s.kimg == 0.08
    assert load_checkpoint(final)["cur_nimg"] == 80 and _kimgs(out) == [0.04, 0.08]
    err = capsys.readouterr().err
    assert f"skipping {final}: it does not load" in err
    assert f"dcgan: {out} was trained to 0.08 kimg, but {final.name} does not load, so it continues from 0.04" in err
    for ck in _checkpoints(copy):
        ck.unlink()
    s = train(TrainOptions(**{**opts, "out": str(copy)}), progress=True)
    assert not s.already_trained and s.resumed_from is None and s.kimg == 0.08 and (copy / final.name).exists()
    assert f"{final.name} is not in the folder, so it continues from 0 kimg" in capsys.readouterr().err
    assert train(TrainOptions(**opts), progress=False).already_trained


@pytest.mark.slow
def test_a_finished_run_checks_the_command_before_it_says_already_trained(shards, tmp_path):
    """A finished run is no way around the checks of a new one: shards that are not a shard set (a dataset
    folder, a set whose train split is empty) and, with --resume auto, an option that reshapes the networks are
    each one line, and nothing in the run changes."""
    from gandata.trainers.options import TrainError, TrainOptions
    from gandata.trainers.train import train

    out = tmp_path / "run"
    opts = dict(kind="dcgan", shards=str(shards), out=str(out), kimg=0.04, snap_kimg=0.04, log_kimg=0.04, **TINY)
    train(TrainOptions(**opts), progress=False)
    state = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    empty = labelled_set(tmp_path / "valonly", 3, val_fraction=0.99)
    assert json.loads((empty / "dataset.json").read_text())["counts"]["train"] == 0
    for resume in (None, "auto"):
        with pytest.raises(TrainError, match="is a dataset folder, not shards"):
            train(TrainOptions(**{**opts, "shards": str(shards.parent / "raw")}, resume=resume), progress=False)
        with pytest.raises(TrainError, match="has an empty train split"):
            train(TrainOptions(**{**opts, "shards": str(empty)}, resume=resume), progress=False)
    with pytest.raises(TrainError, match=r"another architecture \(ngf 8 → 16\)"):
        train(TrainOptions(**{**opts, "ngf": 16}, resume="auto"), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == state
    assert train(TrainOptions(**opts), progress=False).already_trained


@pytest.mark.slow
def test_resume_file_must_load_and_a_run_that_went_on_past_it_says_so(shards, tmp_path, capsys):
    """--resume FILE in a run folder that went on past it: FILE must still be a checkpoint (a README, an empty
    file: one line), and the run continues from its newest with a line saying that FILE was passed over and how to
    go on from it instead."""
    from gandata.trainers.checkpoints import BadCheckpoint
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    out = tmp_path / "run"
    opts = dict(kind="dcgan", shards=str(shards), out=str(out), kimg=0.08, snap_kimg=0.04, log_kimg=0.04, **TINY)
    train(TrainOptions(**opts), progress=False)
    readme, empty = tmp_path / "README.md", tmp_path / "empty.pt"
    readme.write_text("# gandata\n")
    empty.touch()
    first, newest = out / "checkpoint-000000040.pt", out / "checkpoint-000000080.pt"
    for given in (readme, empty, first):
        os.utime(given, (0, 0))  # older than the run's newest checkpoint: the run went on past it
    for given in (readme, empty):
        with pytest.raises(BadCheckpoint, match=rf"^refusing to load {re.escape(str(given))}: it is not a plain"):
            train(TrainOptions(**{**opts, "kimg": 0.12}, resume=str(given)), progress=False)
    assert _checkpoints(out) == [first, newest]
    capsys.readouterr()
    s = train(TrainOptions(**{**opts, "kimg": 0.12}, resume=str(first)), progress=True)
    assert s.resumed_from == str(newest) and s.kimg == 0.12
    err = capsys.readouterr().err
    assert f"--resume {first}: {out} went on past it (its newest checkpoint is {newest.name}), so the run continues " \
        f"from its newest; to go on from {first.name} instead, give another --out" in err
    assert f"dcgan: resuming from {newest} at 0.08 kimg" in err


def test_cdcgan_on_labelled_tars_without_a_description_is_told_both_ways(tmp_path):
    from gandata.trainers.options import TrainError, TrainOptions
    from gandata.trainers.train import train

    png = png_bytes(drawn_image(1, (32, 32)))
    (tmp_path / "set").mkdir()  # labelled tars as other tools write them: a .cls a sample, no dataset.json
    tar_of(tmp_path / "set" / "x-000000.tar", [(f"k{i}.{ext}", png if ext == "png" else b"1") for i in range(4)
                                               for ext in ("png", "cls")])
    with pytest.raises(TrainError) as e:
        train(TrainOptions(kind="cdcgan", shards=str(tmp_path / "set"), out=str(tmp_path / "run"), **TINY),
              progress=False)
    assert "--n-classes N" in str(e.value) and "gandata shard --label-field FIELD" in str(e.value)
    assert "dataset.json" in str(e.value) and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------- checkpoints


def _checkpoint(path: Path, resolution: int = 32, poison: str | None = None) -> Path:
    """A well-formed checkpoint of untrained tiny dcgan networks, without training (``poison``: a network whose
    first weight becomes NaN)."""
    from gandata.trainers.models import build
    from gandata.trainers.options import TrainOptions

    o = TrainOptions(kind="dcgan", shards="x", out=str(path.parent), **TINY)
    G, D = build(o, resolution, 0)
    ck = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict(), "step": 1, "cur_nimg": 8,
          "optG": torch.optim.Adam(G.parameters()).state_dict(), "optD": torch.optim.Adam(D.parameters()).state_dict(),
          "options": {**asdict(o), "resolution": resolution}}
    if poison:
        ck[poison] = {k: v.clone() for k, v in ck[poison].items()}
        next(v for v in ck[poison].values() if v.is_floating_point()).view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, path)
    return path


@pytest.mark.slow
def test_a_pickle_is_refused_in_one_line_without_torch_advice_or_warnings(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    torch.save({"G": Evil()}, tmp_path / "a.pt")
    with open(tmp_path / "b.pt", "wb") as f:  # a raw pickle: torch warned about its protocol twice
        pickle.dump({"G": {"w": 1}}, f, protocol=4)
    for name in ("a.pt", "b.pt"):
        r = subprocess.run([sys.executable, "-m", "gandata.cli", "sample", str(tmp_path / name), "--out",
                            str(tmp_path / "s.png")], capture_output=True, text=True)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"gandata: error: refusing to load {tmp_path / name}: it is not a plain")
        assert "weights_only" not in r.stderr and "Warning" not in r.stderr
    assert "it names posix.system" in subprocess.run(
        [sys.executable, "-m", "gandata.cli", "sample", str(tmp_path / "a.pt")], capture_output=True,
        text=True).stderr


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path, capsys):
    from gandata.trainers.checkpoints import BadCheckpoint, load_checkpoint, newest_loadable
    from gandata.trainers.sampling import sample

    run = tmp_path / "run"
    good = _checkpoint(run / "checkpoint-000000008.pt")
    for net in ("G", "D", "G_ema"):
        bad = _checkpoint(run / "checkpoint-000000016.pt", poison=net)
        with pytest.raises(BadCheckpoint, match=f"its {net} weights hold NaN or infinite values"):
            load_checkpoint(bad)
    with pytest.raises(BadCheckpoint, match="give an earlier checkpoint of the run"):
        sample(bad, n=4, out=tmp_path / "s.png", device="cpu")
    assert newest_loadable(run, torch.device("cpu"))[0] == good  # a run's newest: passed over with a line
    assert sample(run, n=4, out=tmp_path / "s.png", device="cpu").checkpoint == str(good)
    assert "skipping" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- precision


@pytest.mark.slow
def test_fp16_on_the_cpu_warns_once_and_its_skipped_steps_log_strict_json(shards, tmp_path, capsys, monkeypatch):
    """A gradient penalty made infinite under fp16 is the gradient scaler's to skip, not a divergence: the step is
    counted in ``skipped`` and left out of the averages, so metrics.jsonl holds numbers or null — never the bare
    NaN or Infinity that strict JSON readers refuse."""
    from gandata.trainers import losses, precision
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    monkeypatch.setattr(precision, "CPU_ARITHMETIC", {"bf16": (), "fp16": ()})  # a CPU without fp16 arithmetic
    real, calls = losses.gradient_penalty, []

    def sometimes_infinite(*args, **kwargs):
        calls.append(1)
        gp = real(*args, **kwargs)
        return gp * float("inf") if len(calls) % 3 == 0 else gp

    monkeypatch.setattr(losses, "gradient_penalty", sometimes_infinite)
    out = tmp_path / "run"
    s = train(TrainOptions(kind="wgan-gp", shards=str(shards), out=str(out), kimg=0.16, snap_kimg=0.16, log_kimg=0.04,
                           n_critic=1, precision="fp16", **TINY), progress=False)
    assert s.kimg >= 0.16
    assert capsys.readouterr().err.count("--precision fp16: slower than fp32 on this CPU") == 1

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    rows = [json.loads(line, parse_constant=strict) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["skipped"] for r in rows) >= 3
    assert all(v is None or math.isfinite(v) for r in rows for v in r.values() if not isinstance(v, str))


# --------------------------------------------------------------------------------------------------- memory


def test_a_grid_filled_in_chunks_is_the_grid_made_whole():
    from gandata.trainers.sampling import Grid, image_grid

    x = torch.rand(37, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grid = Grid(37, 6)
    for i in range(0, 37, 5):
        grid.add(x[i:i + 5])
    assert grid.png() == image_grid(x, 6)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_sampling_many_images_stays_near_the_size_of_the_grid(tmp_path):
    """``sample --n 3000`` at 64 px: the images as floats are 147 MB, and the code before held them about four times
    over (peak +594 MB); streamed into the grid, the peak grows by the grid's bytes, its PNG and one chunk (about
    +100 MB). Peak RSS of a fresh process, against the same process drawing one image."""
    ck = _checkpoint(tmp_path / "run" / "checkpoint-000000008.pt", resolution=64)
    # the process's own peak (VmHWM: getrusage's maxrss would carry the forking test process's over exec)
    code = ("import sys; from gandata.trainers.sampling import sample; "
            "sample(sys.argv[1], n=int(sys.argv[2]), out=sys.argv[3], device='cpu'); "
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    peaks = {}
    for n in (1, 3000):
        r = subprocess.run([sys.executable, "-c", code, str(ck), str(n), str(tmp_path / f"{n}.png")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[n] = int(r.stdout.split()[-1]) * 1024  # VmHWM: KiB
    floats = 3000 * 3 * 64 * 64 * 4
    assert peaks[3000] - peaks[1] < 1.5 * floats, (peaks, floats)


def test_a_many_class_network_is_sized_by_a_capped_label_code():
    """cdcgan's label: one-hot or a row per class up to LABEL_DIMS classes (the networks as before), a learned code
    of LABEL_DIMS numbers beyond — 100 000 classes were a 40 GB embedding; now a few numbers a class."""
    from gandata.trainers.models import LABEL_DIMS, ConditionalBatchNorm2d, build
    from gandata.trainers.options import TrainOptions

    o = TrainOptions(kind="cdcgan", shards="x", out="y")
    G, D = build(o, 64, 10)  # few classes: the layers they always had
    assert G.embed.weight.shape == (10, 10) and D.features[0].in_channels == 3 + 10
    assert all(isinstance(m.gain, torch.nn.Embedding) and m.gain.num_embeddings == 10
               for m in G.modules() if isinstance(m, ConditionalBatchNorm2d))
    base = sum(p.numel() for net in build(o, 64, LABEL_DIMS) for p in net.parameters())
    n = 100_000
    G, D = build(o, 64, n)
    grown = sum(p.numel() for net in (G, D) for p in net.parameters()) - base
    assert grown <= 2 * LABEL_DIMS * n + 4 * LABEL_DIMS * 1024  # a code a class in each network, and the maps
    y = torch.tensor([0, n - 1])
    x = G(torch.randn(2, o.nz), y)
    D(x, y).sum().backward()
    assert x.shape == (2, 3, 64, 64) and D.code.weight.grad is not None


def test_reduced_precision_is_said_to_be_slower_only_where_it_is(monkeypatch):
    from gandata.trainers import precision

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(precision, "CPU_ARITHMETIC", {"bf16": (), "fp16": ()})
    assert "--precision bf16: slower than fp32 on this CPU" in precision.slower_here("bf16", cpu)
    assert precision.slower_here("fp32", cpu) is None and precision.slower_here("fp16", gpu) is None
    monkeypatch.setattr(precision, "CPU_ARITHMETIC", {"bf16": ("_is_avx2_supported",), "fp16": ()})  # a CPU with it
    assert (precision.slower_here("bf16", cpu) is None) == bool(torch.cpu._is_avx2_supported())


def test_a_shard_that_cannot_be_read_says_what_works_in_train_and_eval(monkeypatch):
    """The same reader serves train and eval; eval has no --resume, so the hint is the one both have."""
    from gandata.trainers import data as tdata

    def unreachable(url, commands, skip):
        raise tdata._Transient("a reset connection")
        yield  # a generator, as the real one

    monkeypatch.setattr(tdata, "_read_shard", unreachable)
    monkeypatch.setattr(tdata.time, "sleep", lambda s: None)
    with pytest.raises(tdata.DataError, match="check the store or server, then run the same command again$") as e:
        list(tdata.tar_samples([{"url": "https://127.0.0.1:9/a.tar"}]))
    assert "--resume" not in str(e.value)


_HANG_UP = """
import socket, sys, time
from multiprocessing import resource_sharer
from gandata.trainers import data
if sys.argv[1] == "worker":
    data._ignore_stop_signals(0)  # what every loader worker runs first
r, w = socket.socketpair()
resource_sharer.DupFd(r.fileno())  # a batch's handle, offered to the trainer
sharer = resource_sharer._resource_sharer
s = socket.socket(socket.AF_UNIX)
s.connect(sharer._address)
s.close()  # the trainer hangs up mid-handover: it stopped
time.sleep(1)
raise ValueError("any other error")
"""


@pytest.mark.parametrize("where", ["worker", "elsewhere"])
def test_a_loader_worker_says_nothing_when_the_stopping_trainer_hangs_up(where):
    """The real resource sharer a worker hands batches through, hung up on: its thread's traceback is not printed
    in a loader worker (the trainer's stop is said by the trainer; --gpus 2 under SIGTERM printed it), while any
    other error still is; outside a worker nothing changes."""
    r = subprocess.run([sys.executable, "-c", _HANG_UP, where], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.rstrip().endswith("ValueError: any other error"), r.stderr
    assert ("resource_sharer.py" in r.stderr) == (where == "elsewhere"), r.stderr
