"""The command line contract: help with examples, exit codes, one-line errors, --json summaries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def gandata(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_help_lists_only_working_commands_each_with_an_example():
    top = gandata("--help")
    assert top.returncode == 0 and "Example" in top.stdout
    for cmd in (
        "shard",
        "inspect",
        "fetch bitmoji",
        "fetch urls",
        "fetch bricklink",
        "fetch rebrickable",
        "crop anime-faces",
        "crop lego-faces",
        "dedupe",
        "train",
        "sample",
        "eval",
        "fetch weights",
        "run",
        "demo",
    ):
        assert cmd.split()[0] in top.stdout
        sub = gandata(*cmd.split(), "--help")
        assert sub.returncode == 0 and "Example" in sub.stdout and f"gandata {cmd}" in sub.stdout
    assert "research use only" in gandata("fetch", "bitmoji", "--help").stdout


@pytest.mark.parametrize(
    "args, message, code",
    [
        (["shard", "/no/such/folder"], "does not exist", 1),
        (["inspect", "/no/such/folder"], "does not exist", 1),
        (["shard", "--resize", "stretch", "{anime}"], "--resize must be one of", 2),  # a bad option value: usage
    ],
)
def test_user_errors_are_one_line_on_stderr(args, message, code, images12, tmp_path):
    args = [a.replace("{anime}", str(images12)) for a in args]
    r = gandata(*args, "--data-dir", str(tmp_path)) if args[0] == "shard" else gandata(*args)
    assert r.returncode == code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gandata: error:") and message in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("size", ["0", "-3", "abc"])
def test_size_must_be_a_positive_integer(size, images12, tmp_path):
    r = gandata("shard", str(images12), "--size", size, "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "--size" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_shard_and_inspect_end_to_end(tmp_path, images12):
    r = gandata(
        "shard", str(images12), "--name", "anime", "--size", "32", "--data-dir", str(tmp_path / "data"), "--json"
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["counts"]["total"] == 12
    assert summary["patterns"]["train"].endswith("anime-train-000000.tar")
    human = gandata("shard", str(images12), "--name", "anime", "--size", "32", "--data-dir", str(tmp_path / "data"))
    assert "anime is already sharded from these inputs with these options (12 samples" in human.stdout
    r = gandata("inspect", str(tmp_path / "data" / "anime" / "shards"), "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 0 and "12 samples (shards)" in r.stdout and (tmp_path / "g.png").exists()
    # no SRC: every dataset under the data dir (here none is a dataset folder, only shards)
    r = gandata("shard", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "no datasets under" in r.stderr
