"""The command line contract: help with examples and ranges, exit codes, one-line errors, --json summaries, and
hints that name an option in the form that works where they are shown."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import write_drawn_folder

from gandata import declarations as D
from gandata import stages
from gandata.errors import Naming, hint, named, naming


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


# ------------------------------------------------------------------- hints name the form that works where shown
#
# The library names options in its messages with gandata.errors.hint / named; the front end says where the line
# will be shown (the command line, or a pipeline stage run by `gandata run` or by the demo). What follows is generated
# from the declarations: every option of every command, rendered in each place, is a flag that command's parser
# takes, a --set key or a table key that pipeline files take; and a read of the library's source holds that every
# option a message names goes through hint/named, with a key its commands declare.

REPO = Path(__file__).resolve().parents[1]
TABLE_OF = {s.command: s.table for s in stages.STAGES}


def _sample(o) -> object:
    """A value of the option's type for a hint (the declared default where there is one)."""
    if o.type is bool:
        return not o.default
    if o.default is not None and o.default != "":
        return o.default
    return {int: 3, float: 0.5}.get(o.type, o.choices[0] if o.choices else "FILE")


def _click_params(command: tuple[str, ...]) -> dict[str, object]:
    from gandata.cli import _click_command

    cmd = _click_command()
    for word in command:
        cmd = cmd.commands[word]
    names: dict[str, object] = {}
    for p in cmd.params:
        for flag in (*p.opts, *getattr(p, "secondary_opts", ())):
            names[flag] = p
    return names


COMMANDS = [d for d in D.ALL if any(o.cli and not o.argument for o in d.options)]


@pytest.mark.parametrize("decl", COMMANDS, ids=[" ".join(d.command) for d in COMMANDS])
def test_every_option_named_on_the_command_line_is_a_flag_of_its_command(decl):
    flags = _click_params(decl.command)
    for o in decl.options:
        if not o.cli or o.argument:
            continue
        for text in (hint(o.key, _sample(o)), hint(o.key), named(o.key), named(o.key, _sample(o))):
            words = shlex.split(text)
            assert words[0] in flags, f"{text!r}: gandata {' '.join(decl.command)} has no {words[0]}"
            if o.type is bool:
                assert len(words) == 1, text  # a switch takes no value
        other = hint(o.key, _sample(o), command=" ".join(decl.command))  # "run this command with this option"
        words = shlex.split(other)
        assert words[:1 + len(decl.command)] == ["gandata", *decl.command] and words[1 + len(decl.command)] in flags


IN_PIPELINES = [d for d in COMMANDS if TABLE_OF.get(d.command)]


@pytest.mark.parametrize("decl", IN_PIPELINES, ids=[" ".join(d.command) for d in IN_PIPELINES])
def test_every_option_named_in_a_pipeline_is_a_key_its_table_takes(decl, tmp_path):
    from gandata.pipeline import load

    table = TABLE_OF[decl.command]
    stage = next(s for s in stages.STAGES if s.command == decl.command)
    path = tmp_path / "p.toml"
    path.write_text(f"[{table}]\n" + (f'{stage.select[0]} = "{stage.select[1]}"\n' if stage.select else ""))
    elsewhere = "eval" if table != "eval" else "fetch"
    for o in decl.options:
        if not o.cli or o.argument or not o.pipeline:
            continue
        value = _sample(o)
        with naming(Naming(table, (table,), "set")):
            given = hint(o.key, value)
            words = shlex.split(given)
            assert words[0] == "--set" and len(words) == 2, given
            spec = load(path, [words[1]])  # gandata run's own parser of --set
            assert set(spec[table]) - {stage.select[0] if stage.select else ""} == {o.key}, given
            assert spec[table][o.key] == (str(value) if isinstance(value, Path) else value), given
            assert named(o.key) == f"[{table}] {o.key}" and hint(o.key) == f"[{table}] {o.key}"
        with naming(Naming(table, (table,), "file")):
            written = hint(o.key, value)
            m = re.fullmatch(r"\[(\w+)\] (\w+) = (.+)", written)
            assert m and m.group(1) == table and m.group(2) == o.key, written
            if not (isinstance(value, str) and value.isupper()):  # a placeholder (FILE) is for the reader to fill in
                assert tomllib.loads(f"v = {m.group(3)}")["v"] == (str(value) if isinstance(value, Path) else value)
        with naming(Naming(elsewhere, (elsewhere,), "set")):  # another command's option, its stage not in the pipeline
            words = shlex.split(hint(o.key, value, command=" ".join(decl.command)))
            assert words[:1 + len(decl.command)] == ["gandata", *decl.command]


# Library modules whose options belong to known commands: a key they name must be an option of one of them.
_FETCHERS = [("fetch", s) for s in ("bitmoji", "urls", "bricklink", "rebrickable")]
_TRAIN = [d.command for d in D.TRAIN.values()]
MODULE_COMMANDS = {
    "gandata/sources/bitmoji.py": [("fetch", "bitmoji")],
    "gandata/sources/bricklink.py": [("fetch", "bricklink")],
    "gandata/sources/rebrickable.py": [("fetch", "rebrickable")],
    "gandata/sources/urls.py": [("fetch", "urls")],
    "gandata/sources/__init__.py": [("fetch", "bitmoji"), ("fetch", "bricklink"), ("fetch", "rebrickable")],
    "gandata/fetch.py": _FETCHERS,
    "gandata/datasets.py": _FETCHERS,
    "gandata/shard.py": [("shard",)],
    "gandata/fileio.py": [d.command for d in D.ALL if any(o.key == "out" for o in d.options)],
    "gandata/engine.py": [d.command for d in D.ALL if any(o.key == "engine" for o in d.options)],
    "trainers/metrics.py": [("eval",), *_TRAIN],
    "trainers/cpu.py": [("sample",), ("eval",), *_TRAIN],
}
# Modules whose messages name options as literal flags: commands that never run inside a pipeline (asserted below).
LITERAL_FLAGS_ALLOWED = {"gandata/export.py": ("export",), "trainers/sampling.py": ("sample",)}
MACHINERY = {"cli.py", "stages.py", "pipeline.py", "demo.py", "__main__.py", "declarations.py", "options.py",
             "errors.py"}


def _library() -> list[Path]:
    files = [p for p in sorted((REPO / "gandata").rglob("*.py"))
             if p.name not in MACHINERY or p.parent.name != "gandata"]
    return files + sorted((REPO / "trainers").rglob("*.py"))


def _declared_flags() -> set[str]:
    flags = set()
    for d in D.ALL:
        for o in d.options:
            if o.cli and not o.argument:
                flags.update(o.flags or (o.flag,))
                if o.type is bool:
                    flags.add("--no-" + o.flag[2:])
    return flags


def _messages(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module that are not docstrings or help texts."""
    skip = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            skip.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg == "help":
            skip.update(id(n) for n in ast.walk(node.value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_the_library_names_options_only_through_hint_and_named():
    flags = _declared_flags()
    found = []
    for path in _library():
        rel = str(path.relative_to(REPO))
        if rel in LITERAL_FLAGS_ALLOWED:
            continue
        for node in _messages(ast.parse(path.read_text())):
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                if flag in flags:
                    found.append(f"{rel}:{node.lineno}: {flag} in {node.value[:60]!r}")
    assert not found, "write these with gandata.errors.hint or named:\n" + "\n".join(found)
    for rel, commands in LITERAL_FLAGS_ALLOWED.items():
        assert (REPO / rel).is_file(), rel
        for command in commands or ():
            assert TABLE_OF.get((command,)) is None, f"{command} now runs in pipelines: give {rel} hint/named"


def _declaration_of(words: list[str]) -> list[tuple[str, ...]]:
    command = tuple(w for w in words if not w.isupper())  # "shard SRC", "train KIND": placeholders
    if command == ("train",):
        return _TRAIN
    assert command in {d.command for d in D.ALL}, f"no command gandata {' '.join(words)}"
    return [command]


def test_every_option_the_library_names_is_declared_by_its_commands():
    calls = 0
    for path in _library():
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name == "asset" and len(node.args) >= 3:  # assets.asset(what, url, OPTION, …): hint(OPTION, "FILE")
                key_node, command_node = node.args[2], None
            elif name in ("hint", "named") and node.args:
                key_node = node.args[0]
                command_node = next((k.value for k in node.keywords if k.arg == "command"), None)
                if command_node is None and name == "hint" and len(node.args) > 2:
                    command_node = node.args[2]
            else:
                continue
            if not isinstance(key_node, ast.Constant):
                # computed keys held by their own tests: assets' and metrics' options, crop's SAME_CROP (test_crop)
                assert rel in ("gandata/assets.py", "trainers/metrics.py", "gandata/crop.py"), \
                    f"{rel}:{node.lineno}: a computed key"
                continue
            key = key_node.value.removeprefix("--").replace("-", "_")
            if command_node is not None:
                assert isinstance(command_node, ast.Constant), f"{rel}:{node.lineno}: a computed command"
                commands = _declaration_of(command_node.value.split())
            else:
                commands = MODULE_COMMANDS.get(rel) or [d.command for d in D.ALL]
            calls += 1
            offered = [c for c in commands if any(o.key == key and o.cli for o in D.declared(*c).options)]
            assert offered, f"{rel}:{node.lineno}: {key!r} is an option of none of {commands}"
            for c in offered:
                if TABLE_OF.get(c):
                    assert D.declared(*c).option(key).pipeline, f"{rel}:{node.lineno}: [{TABLE_OF[c]}] has no {key}"
    assert calls > 60  # the source was read (a broken walk would find none and pass)


def test_a_hint_is_written_where_it_is_shown(tmp_path):
    """One warning (too few shards for 8 readers) from one library call, in each place it can be shown."""
    from gandata.pipeline import run
    from gandata.shard import ShardOptions, shard

    write_drawn_folder(tmp_path / "imgs", 20, size=(40, 40))
    summary = shard([tmp_path / "imgs"], tmp_path / "a", "a", ShardOptions(size=32, val_fraction=0))
    # the command line (and the library's default); 20 samples make 10 shards at --maxcount 2, 7 at 3: never 8
    assert "use --maxcount 2 to get 10" in summary.warnings[0]
    pipe = {"pipeline": {"name": "p", "dataset": "p"}, "shard": {"src": str(tmp_path / "imgs"), "size": 32,
                                                                 "val_fraction": 0.0}}
    result = run(pipe, data_dir=tmp_path / "data", progress=False, hints="set")
    assert "use --set shard.maxcount=2 to get 10" in result.stages[0].summary.warnings[0]  # gandata run … --set
    result = run(pipe, data_dir=tmp_path / "data2", progress=False, hints="file")
    assert "use [shard] maxcount = 2 to get 10" in result.stages[0].summary.warnings[0]  # the file (the demo)
    summary = shard([tmp_path / "imgs"], tmp_path / "b", "b", ShardOptions(size=32, val_fraction=0))
    assert "use --maxcount 2" in summary.warnings[0]  # the pipeline's naming ended with it
    followed = shard([tmp_path / "imgs"], tmp_path / "c", "c", ShardOptions(size=32, val_fraction=0, maxcount=2))
    assert followed.shards["train"] == 10 and not followed.warnings  # what the hint said it gives


def test_a_hint_for_a_stage_that_only_leaves_out_says_to_run_it_too(tmp_path):
    """`gandata run P --only train` does not run [shard]: `--set shard.size=64` alone would change nothing, so the
    hint adds `--only shard` — words the run command's parser takes, to be added to the line just run."""
    from gandata.pipeline import load

    both = ("shard", "train")
    with naming(Naming("train", both, "set", ("train",))):
        given = hint("size", 64, command="shard")
        assert given == "--set shard.size=64 --only shard"
        assert hint("lr", 0.001) == "--set train.lr=0.001"  # the stage running is run
        assert named("resolution") == "[train] resolution"
    words = shlex.split(given)
    assert words[0] in _click_params(("run",)) and words[2] in _click_params(("run",))
    (tmp_path / "p.toml").write_text("[shard]\n[train]\nkind = 'dcgan'\nshards = 'x'\n")
    assert load(tmp_path / "p.toml", [words[1]])["shard"]["size"] == 64 and words[3] in both
    with naming(Naming("train", both, "file", ("train",))):
        assert hint("size", 64, command="shard") == "[shard] size = 64 (and run [shard])"
    for only in ((), both):  # every stage runs: nothing to add
        with naming(Naming("train", both, "set", only)):
            assert hint("size", 64, command="shard") == "--set shard.size=64"


def test_a_whole_command_in_a_hint_is_one_its_parser_takes():
    """A hint that must name the command whole (the shard command that made a set, to make it again at another
    size) writes its arguments and other options out on the command line; a pipeline's [shard] table holds them."""
    given = {"out": "sets/a b", "name": "a", "label_field": "kind", "draft": False, "size": 32, "seed": None}
    text = hint("size", 64, command="shard SRC", args=["raw one", "raw2"], given=given)
    assert text == "gandata shard 'raw one' raw2 --out 'sets/a b' --name a --label-field kind --no-draft --size 64"
    words = shlex.split(text)
    flags = _click_params(("shard",))
    assert words[1:4] == ["shard", "raw one", "raw2"] and all(w in flags for w in words[4:] if w.startswith("--"))
    assert hint("size", 64, command="shard SRC", given={"out": "o"}) == "gandata shard SRC --out o --size 64"
    with naming(Naming("train", ("shard", "train"), "set")):
        assert hint("size", 64, command="shard SRC", args=["raw"], given=given) == "--set shard.size=64"


@pytest.mark.slow
def test_a_pipeline_error_suggests_a_set_that_gandata_run_takes(tmp_path):
    from gandata.pipeline import load, plan

    (tmp_path / "p.toml").write_text('[pipeline]\nbase_url = "http://127.0.0.1:9"\n[fetch]\nsource = "bitmoji"\n'
                                     "count = 5\n")
    r = gandata("run", str(tmp_path / "p.toml"), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "--traits" not in r.stderr
    given = re.search(r"--set ([^\s,]+)", r.stderr)
    assert given and given.group(1) == "fetch.traits=FILE", r.stderr
    plan(load(tmp_path / "p.toml", [given.group(1)]))  # the key it names is one the pipeline takes
    r = gandata("fetch", "bitmoji", "--count", "5", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "give a local copy with --traits FILE" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------- help, errors, inspect


def _help_records(command: tuple[str, ...]) -> dict[str, str]:
    """Each option's line in ``gandata COMMAND -h`` (whitespace folded), by its flag: what click prints."""
    import click

    from gandata.cli import _click_command

    root = _click_command()
    cmd, ctx = root, click.Context(root, info_name="gandata")
    for word in command:
        cmd = cmd.commands[word]
        ctx = click.Context(cmd, info_name=word, parent=ctx)
    records = {}
    for p in cmd.params:
        record = p.get_help_record(ctx)
        if record:
            for flag in p.opts:
                records[flag] = " ".join(record[1].split())
    return records


@pytest.mark.parametrize("stage", stages.STAGES, ids=[s.name for s in stages.STAGES])
def test_help_shows_each_options_range_and_default_from_its_declaration(stage):
    records = _help_records(stage.command)
    for o in stage.options:
        if not o.cli or o.argument:
            continue
        entry = records[o.flag]
        if o.bounds():
            assert o.bounds() in entry, f"{stage.name} {o.flag}: no range in {entry!r}"
        if o.default is not None and o.type is not bool:
            shown = str(o.default) if not isinstance(o.default, float) else f"{o.default:g}"
            assert f"default: {shown}" in entry, f"{stage.name} {o.flag}: no default in {entry!r}"
        if o.type is bool:
            assert f"default: {'' if o.default else 'no-'}{o.flag[2:]}" in entry, entry


def test_a_plugged_in_extractor_missing_its_extra_is_one_line(tmp_path):
    from gandata.trainers.metrics import EvalError, load_extractor

    (tmp_path / "needs_extra.py").write_text(
        "import sys\n\ndef missing(device):\n    import no_such_package_for_gandata  # noqa: F401\n\n"
        "def says_why(device):\n    sys.exit(\"this extractor needs scikit-learn: pip install -e '.[bench]'\")\n")
    with pytest.raises(EvalError, match=r"^--extractor .*needs_extra.py:missing: No module named "
                                        r"'no_such_package_for_gandata'$"):
        load_extractor(f"{tmp_path / 'needs_extra.py'}:missing", device="cpu")
    with pytest.raises(EvalError, match=r"needs_extra.py:says_why: this extractor needs scikit-learn: pip install"):
        load_extractor(f"{tmp_path / 'needs_extra.py'}:says_why", device="cpu")
    with naming(Naming("train", ("train",))), pytest.raises(EvalError, match=r"^\[train\] eval_extractor = "):
        load_extractor(f"{tmp_path / 'needs_extra.py'}:missing", device="cpu", option="eval_extractor")


def test_inspect_shows_the_last_run_of_a_dataset_folder(tmp_path):
    from conftest import drawn_image, png_bytes

    from gandata.datasets import Dataset
    from gandata.inspection import inspect_path

    with Dataset.create(tmp_path / "ds") as ds:
        for i in range(3):
            ds.add(f"k{i}", png_bytes(drawn_image(i, (20, 20))), "png", {"width": 20, "height": 20, "source": "t"})
        ds.write_stats({"stage": "fetch urls", "accepted": 3, "total": 3, "retries": 0, "bytes": 999,
                        "failures": {"HTTP 404": 2}, "seconds": 1.25, "rate": 2.4, "stopped": None,
                        "interrupted": False, "options": {"concurrency": 8}})
    lines = inspect_path(tmp_path / "ds").lines()
    assert "  last run: fetch urls, accepted 3, total 3, given up on 2, 1.25 s (2.4/s)" in lines, lines
    with Dataset.create(tmp_path / "ds") as ds:
        ds.write_stats({"stage": "crop anime-faces", "images": 3, "crops": 0, "seconds": 0.5, "rate": 6.0,
                        "interrupted": True})
    assert "  last run: crop anime-faces, images 3, 0.5 s (6/s); interrupted" in inspect_path(tmp_path / "ds").lines()
