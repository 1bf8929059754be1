"""The same command continues, after every way a long command is stopped: SIGINT (Ctrl-C), SIGTERM (a scheduler, a
`kill`) and SIGKILL, each sent once the command has written part of its work, then the same command again — which
must end with exit 0 and exactly what an uninterrupted run writes. (train has its own: tests/test_train_resume.py;
fetch's SIGKILL: tests/test_fetch.py; Ray commands: tests/test_cluster.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for, write_drawn_folder
from minifigs import scene

from gandata.datasets import Dataset

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs")
    write_drawn_folder(folder, 500, size=(160, 128))
    return folder


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("figs")
    for i in range(120):
        scene(i, ("white", "gradient", "cape", "long-hair")[i % 4])[0].save(folder / f"fig{i:03d}.png")
    return folder


def _shard(src: Path, out: Path) -> list[str]:
    return ["shard", str(src), "--out", str(out), "--name", "set", "--size", "32", "--workers", "1"]


def _crop(src: Path, out: Path) -> list[str]:
    return ["crop", "lego-faces", "--src", str(src), "--out", str(out), "--locator", "layout", "--size", "32",
            "--workers", "1"]


def _shard_started(out: Path) -> bool:
    return any((out / ".work").rglob("*")) if (out / ".work").is_dir() else False


def _crop_started(out: Path) -> bool:
    return (out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").stat().st_size > 0


def _shard_result(out: Path) -> dict:
    info = json.loads((out / "dataset.json").read_text())
    return {s["name"]: s["sha256"] for sp in info["splits"].values() for s in sp["shards"]}


def _crop_result(out: Path) -> dict:
    return {r["key"]: r["sha256"] for r in Dataset.open(out).rows()}


COMMANDS = {"shard": (_shard, _shard_started, _shard_result), "crop": (_crop, _crop_started, _crop_result)}


def _gandata(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_same_command_continues_after_any_signal(command, images, figures, tmp_path):
    make, started, result = COMMANDS[command]
    src = images if command == "shard" else figures
    ref = _gandata(make(src, tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    want = result(tmp_path / "ref")
    for name, sig in SIGNALS.items():
        out = tmp_path / name
        proc = subprocess.Popen([sys.executable, "-m", "gandata.cli", *make(src, out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        wait_for(proc, lambda out=out: started(out), timeout=120)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
        err = proc.stderr.read()
        assert code != 0, f"{command} ended 0 after {name}"
        if sig == signal.SIGINT:  # Ctrl-C: one line, the one instruction that works
            assert code == 130 and "run the same command again" in err, (code, err)
        again = _gandata(make(src, out))
        assert again.returncode == 0, (name, again.stderr)
        assert result(out) == want, f"{command} after {name} then the same command: not what one run writes"
