"""``gandata run`` against the demo render server on 127.0.0.1: end to end, killed and re-run, a finished pipeline
re-run as a no-op; bad pipeline files; ``gandata demo --small`` itself."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_when, lines_in, write_drawn_folder

from gandata.datasets import Dataset
from gandata.demo import DemoServer, catalog_file
from gandata.errors import UserError
from gandata.pipeline import load


@pytest.fixture(scope="module")
def server():
    with DemoServer() as s:
        yield s


def _pipeline(tmp_path: Path, base_url: str, count: int, rate: float, kimg: float) -> Path:
    run = tmp_path / "runs" / "tiny"
    text = f"""
[pipeline]
name = "tiny"
base_url = "{base_url}"

[fetch]
source = "bitmoji"
count = {count}
rate = {rate}
concurrency = 4

[shard]
size = 32
val_fraction = 0.0
min_shards = 1

[train]
kind = "wgan-gp"
out = "{run}"
kimg = {kimg}
snap_kimg = {kimg / 4}
log_kimg = {kimg / 4}
batch = 8
ngf = 8
ndf = 8
nz = 16
workers = 0
shuffle = 64
device = "cpu"

[eval]
n = 24
extractor = "tiny-random"
device = "cpu"
"""
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def _run(path: Path, data: Path, *extra: str, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gandata.cli", "run", str(path), "--data-dir", str(data), "--json", *extra]
    if kw.get("background"):
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=path.parent)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent)


def _stages(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr
    return {s["stage"]: s for s in json.loads(r.stdout)["stages"]}


@pytest.mark.slow
def test_a_pipeline_runs_end_to_end_and_a_finished_one_re_runs_as_a_no_op(server, tmp_path):
    path = _pipeline(tmp_path, server.url, count=40, rate=0, kimg=0.08)
    data = tmp_path / "data"
    s = _stages(_run(path, data))
    assert s["fetch"]["summary"]["accepted"] == 40 and len(Dataset.open(data / "bitmoji" / "raw")) == 40
    info = json.loads((data / "bitmoji" / "shards" / "dataset.json").read_text())
    assert info["counts"]["total"] == 40 and info["resolution"] == 32
    run = tmp_path / "runs" / "tiny"
    assert s["train"]["summary"]["kimg"] >= 0.08 and list(run.glob("checkpoint-*.pt"))
    assert s["eval"]["summary"]["results"][0]["n_gen"] == 24 and (run / "eval.jsonl").exists()

    tars = {p: p.read_bytes() for p in (data / "bitmoji" / "shards").rglob("*.tar")}
    requests = server.requests
    again = _stages(_run(path, data))
    assert again["fetch"]["summary"]["accepted"] == 0
    assert again["shard"]["summary"]["finished_before"] and again["shard"]["summary"]["processed"] == 0
    assert {p: p.read_bytes() for p in tars} == tars  # finished: nothing read or written
    assert again["train"]["line"].startswith("already trained")
    assert again["eval"]["summary"]["results"][0]["reused"]
    assert server.requests - requests <= 1  # at most the trait catalogue's cache check: no image asked again
    assert len((run / "eval.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_pipeline_killed_in_fetch_and_in_train_finishes_with_nothing_lost_or_doubled(server, tmp_path):
    path = _pipeline(tmp_path, server.url, count=160, rate=40, kimg=0.4)
    data = tmp_path / "data"
    raw, run = data / "bitmoji" / "raw", tmp_path / "runs" / "tiny"
    kill_when(_run(path, data, background=True), lambda: lines_in(raw / "manifest.jsonl") >= 30)
    assert lines_in(raw / "manifest.jsonl") < 160
    kill_when(_run(path, data, background=True), lambda: any(run.glob("checkpoint-*.pt")), timeout=120)
    assert not (run / "summary.json").exists()
    s = _stages(_run(path, data))
    rows = list(Dataset.open(raw).rows())
    assert len(rows) == 160 and len({r["key"] for r in rows}) == 160
    info = json.loads((data / "bitmoji" / "shards" / "dataset.json").read_text())
    assert info["counts"]["total"] == 160
    assert s["train"]["summary"]["resumed_from"] and s["train"]["summary"]["kimg"] >= 0.4
    assert s["eval"]["summary"]["results"]


@pytest.mark.parametrize("text, message", [
    ("[fetsh]\nsource = 'bitmoji'\n", "unknown table [fetsh]"),
    ("[pipeline]\nname = 'x'\n", "names no stage"),
    ("[shard]\nsize = 32\nmaxcnt = 5\n", "[shard] has no option 'maxcnt'"),
    ("[fetch]\nsource = 'flickr'\n", "[fetch] needs source = one of"),
    ("[train\n", "is not valid TOML"),
    ("[shard]\nengine = 'spark'\n", "[shard] engine must be one of local, ray"),
])
def test_bad_pipeline_files_are_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = _run(path, tmp_path / "data")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_only_a_stage_the_file_does_not_have_is_one_line(tmp_path):
    """`--only fetch` on a file without [fetch] would run nothing and say nothing: one line naming its stages."""
    path = tmp_path / "p.toml"
    path.write_text("[shard]\nsrc = 'imgs'\n[train]\nkind = 'dcgan'\n")
    r = _run(path, tmp_path / "data", "--only", "shard", "--only", "fetch")
    assert r.returncode == 1 and r.stdout == "", r.stdout
    assert r.stderr == f"gandata: error: --only fetch: {path} has no [fetch] stage (its stages: shard, train)\n"
    r = _run(path, tmp_path / "data", "--only", "fetsh")
    assert r.returncode == 1 and "--only fetsh: the stages are fetch, crop, shard, train, eval" in r.stderr


def test_a_stage_s_warnings_are_shown_in_gandata_run(tmp_path):
    """A stage's warning (here shard's: the train split is empty) is printed by `gandata run` in its summary (and
    as the stage ends, where stages are echoed), naming the option as --set takes it — not only in --json."""
    write_drawn_folder(tmp_path / "imgs", 12, size=(40, 40))
    path = tmp_path / "p.toml"
    path.write_text("[shard]\nsrc = 'imgs'\nsize = 16\nval_fraction = 0.999\n")
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "run", str(path), "--data-dir", str(tmp_path / "data")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stdout.splitlines() if "warning:" in line]
    assert warned and all("the train split is empty" in w and "--set shard.val_fraction=" in w for w in warned)
    as_json = subprocess.run([sys.executable, "-m", "gandata.cli", "run", str(path), "--data-dir",
                              str(tmp_path / "data"), "--json"], capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(as_json.stdout)["stages"][0]["summary"]["warnings"] == [warned[-1].split("warning: ")[1]]


TINY_TRAIN = """
[shard]
src = "imgs"
size = 32
val_fraction = 0.0
min_shards = 1

[train]
kind = "dcgan"
out = "runs/t"
kimg = 0.016
snap_kimg = 0.008
log_kimg = 0.008
batch = 8
ngf = 8
ndf = 8
nz = 16
workers = 0
shuffle = 16
device = "cpu"
"""


@pytest.mark.slow
def test_a_train_stage_s_hints_are_ones_gandata_run_takes(tmp_path):
    """What [train] says in `gandata run` works added to the line just run: a run trained with other options offers
    a new out and, where the networks keep their shape, resume (as the command line offers --out and --resume
    auto); a size the shards lack under `--only train` names [shard]'s size *and* running [shard]."""
    write_drawn_folder(tmp_path / "imgs", 16, size=(40, 40))
    path = tmp_path / "t.toml"
    path.write_text(TINY_TRAIN)
    data = tmp_path / "data"
    _stages(_run(path, data))
    r = _run(path, data, "--set", "train.lr=0.001")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "[train] runs/t was trained with lr 0.0002 (now 0.001): give [train] the options it was trained with to " \
           "continue it, --set train.out=DIR to start a new run with these, or --set train.resume=auto to continue " \
           "it with these" in r.stderr
    assert "delete" not in r.stderr and "out = " not in r.stderr
    _stages(_run(path, data, "--set", "train.lr=0.001", "--set", "train.resume=auto"))  # the way it offered is taken
    s = _stages(_run(path, data, "--set", "train.lr=0.001", "--set", "train.resume=auto", "--set", "train.kimg=0.024"))
    assert s["train"]["summary"]["resumed_from"] and s["train"]["summary"]["kimg"] >= 0.024  # and goes on
    s = _stages(_run(path, data, "--set", "train.lr=0.001", "--set", "train.out=runs/t2"))
    assert s["train"]["out"] == "runs/t2" and (tmp_path / "runs" / "t2" / "summary.json").is_file()
    r = _run(path, data, "--set", "train.ngf=16")
    assert r.returncode == 1 and "ngf 8 (now 16): give [train] the options it was trained with to continue it, or " \
        "--set train.out=DIR to start a new run with these" in r.stderr and "resume" not in r.stderr, r.stderr

    at64 = ["--set", "train.resolution=64", "--set", "train.out=runs/t64", "--only", "train"]
    r = _run(path, data, *at64)
    assert r.returncode == 1 and "the run trains at 64 px" in r.stderr, r.stderr
    given = re.search(r"make the shards at that size \(([^)]*)\)", r.stderr)
    assert given and given.group(1) == "--set shard.size=64 --only shard", r.stderr
    s = _stages(_run(path, data, *at64, *shlex.split(given.group(1))))  # added to the line just run: it trains
    assert s["shard"]["summary"]["resolution"] == 64 and s["train"]["summary"]["kimg"] >= 0.016


def test_the_engine_is_a_pipeline_key_like_any_option(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[crop]\nkind = 'anime-faces'\nengine = 'ray'\ntask_size = 500\n"
                    "[shard]\nengine = 'ray'\nray_address = '10.0.0.1:6379'\nout = 's3://bucket/set'\n")
    spec = load(path)
    assert spec["crop"]["engine"] == spec["shard"]["engine"] == "ray" and spec["shard"]["out"] == "s3://bucket/set"


def test_set_overrides_parse_toml_values_and_fall_back_to_strings(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[fetch]\nsource = 'urls'\n")
    spec = load(path, ["fetch.count=5", "fetch.url_list=~/list.txt", "shard.dedupe=near", "train.kimg=0.5"])
    assert spec["fetch"]["count"] == 5 and spec["shard"]["dedupe"] == "near" and spec["train"]["kimg"] == 0.5
    assert spec["fetch"]["url_list"] == str(Path("~/list.txt").expanduser())
    with pytest.raises(UserError, match="STAGE.KEY=VALUE"):
        load(path, ["count=5"])


def test_a_text_option_set_to_what_looks_like_a_number_takes_it_as_written(tmp_path):
    """`--set shard.name=2024` is the name "2024" (the command line's --name 2024), not a number refused as not
    text; a number option still takes the number, and a file's own unquoted number is still refused."""
    from gandata.pipeline import plan

    path = tmp_path / "p.toml"
    path.write_text("[shard]\nsrc = 'imgs'\n")
    sets = ["shard.name=2024", "shard.label_field=true", "shard.out=007", "shard.size=48"]
    _, steps = plan(load(path, sets), str(path), tmp_path / "data")
    values = steps[0].values
    assert (values["name"], values["label_field"], values["out"], values["size"]) == ("2024", "true", "007", 48)
    path.write_text("[shard]\nsrc = 'imgs'\nname = 2024\n")
    with pytest.raises(UserError, match="name"):
        plan(load(path), str(path), tmp_path / "data")


def test_ready_pipeline_files_load(tmp_path):
    files = sorted((Path(__file__).parents[1] / "pipelines").glob("*.toml"))
    assert {f.stem for f in files} >= {"bitmoji-64", "lego-faces-64", "lego-minifigs-128", "anime-faces-96"}
    for f in files:
        spec = load(f)
        assert spec["pipeline"]["name"] == f.stem and f.read_text().startswith(f"# {f.stem} — ")


@pytest.mark.slow
def test_the_demo_runs_offline_in_its_small_size(tmp_path):
    env = {**os.environ, "GANDATA_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "demo", "--out", str(tmp_path / "demo"), "--small"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "demo"
    for f in ("avatars-samples.png", "bitmoji-shards-sheet.png", "bricklink-shards-sheet.png", "minifig-heads.png",
              "demo-summary.json", "minifigs-catalog.txt", "avatar-traits.json"):
        assert (out / f).stat().st_size > 0, f
    summary = json.loads((out / "demo-summary.json").read_text())
    assert summary["requests"] >= 48 + 24 and "demo done" in r.stdout and "\\n" not in r.stdout
    info = json.loads((out / "data" / "bricklink" / "shards" / "dataset.json").read_text())
    assert info["labels"]["names"] and set(info["labels"]["names"]) <= {"Castle", "Space", "Town", "Pirates"}
    assert "warning: only 1 train shard(s)" in r.stdout  # what a stage recorded is said
    # in the form that works where it is said: the demo has no --maxcount; its stages are pipeline tables
    assert "[shard] maxcount = " in r.stdout and not re.search(r"(?<![\w-])--(?!out\b|small\b)[a-z]", r.stdout)
    files = [line for line in r.stdout.splitlines() if "/demo/" in line and ": " in line and "→" not in line]
    assert len({line.index(str(out)) for line in files}) == 1, files  # the list of files lines up
    def cached() -> list[Path]:  # what was downloaded (shard's digests of its inputs are kept there too, and added
        # once the inputs are older than a clock tick or two)
        return sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*")
                      if p.is_file() and "input-digests" not in p.parts)

    first = cached()
    again = subprocess.run([sys.executable, "-m", "gandata.cli", "demo", "--out", str(tmp_path / "demo"), "--small"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert cached() == first


def test_the_demo_summary_is_printed_as_plain_lines(capsys):
    """The demo's closing summary as the command line prints it (every line through the terminal's escaping): a
    line per stage, its folder on the next, gaps as empty lines — no line break inside a line, which the escaping
    would print as a literal backslash-n."""
    from gandata.cli import finish
    from gandata.demo import DemoResult
    from gandata.pipeline import PipelineResult, StageResult
    from gandata.summary import Summary

    @dataclasses.dataclass
    class Warned(Summary):
        warnings: list[str]

    def stages(*names: str) -> PipelineResult:
        return PipelineResult("p", "d", [StageResult(n, f"demo/data/d/{n}", f"{n} done", 0.1,
                                                     Warned([f"{n} warns"] if n == "shard" else []))
                                         for n in names], 0.3)

    result = DemoResult(out="demo", size="small", avatars=stages("fetch", "shard", "train"),
                        minifigs=stages("fetch", "crop", "shard"), requests=72, samples="demo/s.png",
                        sheets={"bitmoji": "demo/b.png", "bricklink": "demo/k.png"}, heads="demo/h.png",
                        summary="demo/demo-summary.json")
    finish(result, as_json=False)
    printed = capsys.readouterr().out
    assert "\\" not in printed and not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", printed), printed
    lines = printed.splitlines()
    assert lines == result.lines() and all("\n" not in line for line in result.lines())
    assert lines[0] == "" and lines[1].startswith("demo done (72 HTTP requests") and lines[-2] == ""
    assert lines[-1].startswith("Next: ")
    at = lines.index("  avatars  shard  shard done")
    assert lines[at + 1].strip() == "→ demo/data/d/shard" and lines[at + 2].strip() == "warning: shard warns"


def test_the_demo_catalog_file_is_a_bricklink_catalog(tmp_path):
    from gandata.sources.bricklink import parse_catalog_file

    items = list(parse_catalog_file(catalog_file(8)))
    assert len(items) == 8 and {i["category"] for i in items} == {"Castle", "Space", "Town", "Pirates"}
