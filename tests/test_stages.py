"""One declaration per stage: the command line and pipeline files are both derived from gandata.stages, check values
the same way, and name a bad option the way the user wrote it; a pipeline is checked whole before anything runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gandata import cli, pipeline
from gandata.errors import UserError
from gandata.options import Opt, values
from gandata.stages import STAGES, TABLES


def gandata(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandata", *args], capture_output=True, text=True)


def test_every_command_takes_exactly_its_declared_options():
    import typer.main

    group = typer.main.get_command(cli.app)
    for stage in STAGES:
        cmd = group
        for part in stage.command:
            cmd = cmd.commands[part]
        params = {p.name for p in cmd.params} - {"data_dir", "as_json", "help"}
        assert params == {o.key for o in stage.options if o.cli}, stage.name


def test_every_shipped_pipeline_is_valid_and_every_pipeline_key_is_an_option():
    shipped = pipeline.shipped()
    assert {"bitmoji-64", "lego-faces-64", "anime-faces-96", "lego-minifigs-128"} <= set(shipped)
    for name in shipped:
        head, steps = pipeline.plan(pipeline.load(name))
        assert steps and all(s.table in TABLES for s in steps)
    for stage in (s for s in STAGES if s.table):
        for o in stage.options:
            if o.pipeline and o.default is not None:
                assert values(stage.options, {o.key: o.default}, stage.table)[o.key] == o.default


@pytest.mark.parametrize("value, ok", [(5, True), (True, False), ("5", False), (0, False), (5.0, False)])
def test_an_int_option_is_strict(value, ok):
    opt = Opt("count", int, min=1)
    if ok:
        assert opt.check(value, "fetch") == value
    else:
        with pytest.raises(UserError, match=r"^\[fetch\] count must be a whole number at least 1 \(got "):
            opt.check(value, "fetch")


def test_the_same_bad_value_is_named_as_the_user_wrote_it():
    shard = next(s for s in STAGES if s.name == "shard")
    with pytest.raises(UserError, match=r"^--val-fraction must be a number at least 0 and below 1 \(got 1.0\)"):
        values(shard.options, {"val_fraction": 1.0}, "cli")
    with pytest.raises(UserError, match=r"^\[shard\] val_fraction must be a number at least 0 and below 1"):
        values(shard.options, {"val_fraction": 1.0}, "shard")
    with pytest.raises(UserError, match=r"^\[shard\] pad_color: "):
        values(shard.options, {"pad_color": "not-a-colour"}, "shard")
    r = gandata("shard", "x", "--val-fraction", "1", "--data-dir", "/nonexistent")
    assert r.returncode == 2 and r.stderr.strip() == ("gandata: error: --val-fraction must be a number at least 0 and "
                                                     "below 1 (got 1.0)")


@pytest.mark.parametrize("text, message", [
    ("[train]\nkind = 'wgan-gp'\nkimg = 'lots'\n",
     "[train] kimg must be a number above 0 and at most 10000000 (got 'lots')"),
    ("[train]\nkind = 'wgan-gp'\nspeed = 3\n", "[train] has no option 'speed'; it takes"),
    ("[train]\nkind = 'dcgan'\ngp_lambda = 3.0\n", "[train] has no option 'gp_lambda'"),  # wgan-gp only
    ("[shard]\nsize = 32\nresize = 'stretch'\n", "[shard] resize must be one of center-crop, pad, keep-ratio"),
    ("[pipeline]\nnmae = 'x'\n[shard]\n", "[pipeline] has no key 'nmae'"),
    ("[crop]\nkind = 'cat-faces'\n", "[crop] needs kind = one of anime-faces, lego-faces"),
])
def test_a_pipeline_is_checked_whole_before_its_first_stage_runs(tmp_path, text, message):
    """A mistake in the last table is found before the fetch of the first one starts (nothing is written)."""
    path = tmp_path / "p.toml"
    path.write_text("[fetch]\nsource = 'bitmoji'\ncount = 10\nbase_url = 'http://127.0.0.1:9'\n" + text)
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "gandata", "run", str(path), "--data-dir", str(data)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not data.exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_version_completion_and_kind_specific_train_help():
    for flag in ("--version", "-V"):
        assert gandata(flag).stdout.strip().startswith("gandata ")
    top = gandata("--help").stdout
    assert gandata("-h").stdout == top and "--install-completion" in top
    listed = [line.split()[0] for line in top.split("Commands:")[1].split("Examples:")[0].splitlines()
              if line.startswith("  ") and not line.startswith("   ") and line.strip()]
    assert listed == ["fetch", "crop", "dedupe", "shard", "inspect", "train", "sample", "eval", "export", "run",
                      "demo"]  # the order the data flows in
    assert "..." not in top.split("Commands:")[1]  # no one-line help cut mid-sentence
    wgan_gp, dcgan = gandata("train", "wgan-gp", "--help").stdout, gandata("train", "dcgan", "-h").stdout
    assert "Gulrajani" in wgan_gp and "default 5" in wgan_gp and "--gp-lambda" in wgan_gp
    assert "Radford" in dcgan and "default 1" in dcgan and "--gp-lambda" not in dcgan
    trainers = gandata("train", "-h").stdout
    assert "  wgan-gp  Gulrajani et al. 2017 (WGAN-GP)\n" in trainers and "..." not in trainers.split("Commands:")[1]
    shard_help = gandata("shard", "--help").stdout
    assert "[center-crop|pad|keep-ratio]" in shard_help and "--size N" in shard_help and "<int" not in shard_help
    assert "--timeout SECONDS" in gandata("fetch", "urls", "-h").stdout
    r = gandata("train", "gan9000", "--shards", "x")
    # a command line naming no command there is is malformed: exit 2, as an unknown option is (docs/commands.md)
    assert r.returncode == 2 and r.stderr.strip().startswith("gandata: error: unknown trainer 'gan9000'")
    for args, said in ((("train", "wgangp"), "unknown trainer 'wgangp'; did you mean wgan-gp"),
                       (("fetch", "bitmoij"), "unknown source 'bitmoij'; did you mean bitmoji?"),
                       (("shrad",), "unknown command 'shrad'; did you mean shard?")):
        r = gandata(*args)
        assert r.returncode == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_train_on_a_dataset_folder_says_to_shard_it_first(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "manifest.jsonl").write_text("")
    r = gandata("train", "dcgan", "--shards", str(raw), "--out", str(tmp_path / "run"), "--device", "cpu")
    assert r.returncode == 1 and f"gandata shard {raw}" in r.stderr


def test_a_shipped_pipeline_runs_by_name(tmp_path):
    spec = pipeline.load("bitmoji-64", ["fetch.count=3"])
    assert spec["fetch"]["count"] == 3 and Path(spec["pipeline"]["source_file"]).name == "bitmoji-64.toml"
    with pytest.raises(UserError, match="the shipped pipelines are: .*bitmoji-64"):
        pipeline.load(tmp_path / "nope.toml")


@pytest.mark.slow
def test_the_trainers_depend_on_a_small_named_part_of_gandata():
    """No import circle back into the command line: the trainers load only their declarations (defaults, checks),
    the shard-set reader, images, file primitives, object storage, the assets downloader, summaries and errors
    (progress when they show it)."""
    code = ("import sys, gandata.trainers.train, gandata.trainers.metrics, gandata.trainers.data\n"
            "print(sorted(m for m in sys.modules if m.startswith('gandata') and not m.startswith('gandata.trainers')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert eval(r.stdout) == ["gandata", "gandata.assets", "gandata.declarations", "gandata.errors", "gandata.fileio",
                              "gandata.images", "gandata.options", "gandata.paths", "gandata.shardset",
                              "gandata.storage", "gandata.summary"]  # declarations and options: the run's defaults
    # and checks; paths: a run folder is never written into another kind of folder


def test_the_command_line_starts_without_loading_the_heavy_libraries():
    from gandata import declarations, images

    assert declarations.RESIZE_MODES == images.RESIZE_MODES
    code = "import sys, gandata.cli; print(sorted({'torch', 'cv2', 'numpy', 'PIL', 'aiohttp'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.parametrize("table, message", [
    ("[pipeline]\ndataset = '../../elsewhere'\n[shard]\n",
     "[pipeline] dataset = '../../elsewhere' must be a plain name"),
    ("[pipeline]\nname = 'a/b'\n[shard]\n", "[pipeline] name = 'a/b' must be a plain name"),
    ("[train]\nkind = 'dcgan'\nshards = 'pipe:curl http://x/a.tar'\n", "runs a shell command"),
    ("[eval]\ntarget = 'runs/x'\nreal = 'data/x::pipe:cat a.tar'\n", "runs a shell command"),
    ("[eval]\ntarget = 'runs/x'\nreal = 'data/x'\nextractor = 'os:system'\n", "imports code"),
    ("[train]\nkind = 'wgan-gp'\nshards = 'data/x'\neval_extractor = 'evil.py:f'\n", "imports code"),
])
def test_a_pipeline_file_cannot_reach_outside_or_run_code_unless_it_says_so(table, message, tmp_path):
    """(The [train] and [eval] tables name their inputs: a pipeline that does not give them is refused too.)"""
    path = tmp_path / "p.toml"
    path.write_text(table)
    with pytest.raises(UserError, match=re.escape(message)):
        pipeline.plan(pipeline.load(path))
    if "plain name" not in message:  # the explicit opt-in lets it through
        allowed = pipeline.load(path, ["pipeline.allow_commands=true"])
        assert pipeline.plan(allowed)[1]


def test_a_pipeline_file_name_with_spaces_still_gives_a_plain_run_name(tmp_path):
    path = tmp_path / "my pipeline (v2).toml"
    path.write_text("[shard]\nsize = 32\n")
    head, _ = pipeline.plan(pipeline.load(path))
    assert head["name"] == "my-pipeline-v2"
