"""Hostile option values, generated from the declarations (:data:`gandata.stages.STAGES`): every option of every
command and every pipeline key gets the values a careless user or an attacker sends — ``nan``, ``inf``, ``-1``,
``0``, ``10**23``, ``''``, 300 characters, a file where a folder goes and the reverse, a missing parent. Each ends in
exit 1 or 2 with one line, or a run that succeeds; never a traceback, a hang or a write outside the run's folder. A
new option is tested the day it is declared.

Part one checks every value against the declaration alone (the stage is not run: a probe takes its place). Part two
runs the commands that work offline on small inputs (shard, dedupe, inspect, export, crop lego-faces, every trainer,
sample, eval, fetch urls against a server on 127.0.0.1) with every hostile value their declaration accepts.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
from pathlib import Path

import pytest
from conftest import drawn_image, labelled_set, png_bytes

from gandata import stages
from gandata.errors import UserError
from gandata.options import LIST, PATH_TYPE, Opt
from gandata.pipeline import plan

HUGE = 10**23
LONG = "x" * 300


def _cli_values(o: Opt) -> list[str]:
    if o.type is bool:
        return []
    if o.type in (int, float):
        return ["nan", "inf", "-inf", "-1", "0", str(HUGE), "1e309", "abc", ""]
    return ["", LONG, "-1", "nan"]


def _toml_values(o: Opt) -> list:
    return [math.nan, math.inf, -1, 0, HUGE, -HUGE, 1e308, "", LONG, [1, 2], {"a": 1}, True, "nan"]


def _argv(stage: stages.Stage, o: Opt, value: str) -> list[str]:
    """The command with placeholder required arguments and ``value`` for ``o``."""
    argv = list(stage.command)
    for req in stage.options:
        if req.required and req.cli and req is not o:
            filler = "1" if req.type in (int, float) else "placeholder"
            argv += [filler] if req.argument else [req.flag, filler]
    if o.argument:
        return argv + ["--", value] if value.startswith("-") else argv + [value]
    return argv + [f"{o.flag}={value}"]


class Accepted(Exception):
    pass


def _run_cli(argv: list[str], capsys) -> tuple[object, str]:
    from gandata.cli import main

    old = sys.argv
    sys.argv = ["gandata", *argv]
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Accepted as e:
        code = ("accepted", e.args[0])
    except BaseException as e:  # noqa: BLE001
        code = f"traceback: {type(e).__name__}: {e}"
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


CLI_CASES = [(s, o, v) for s in stages.STAGES for o in s.options if o.cli for v in _cli_values(o)]


@pytest.mark.parametrize("stage, o, value", CLI_CASES,
                         ids=[f"{s.name}:{o.key}={v[:8]!r}" for s, o, v in CLI_CASES])
def test_every_hostile_command_line_value_is_one_line_or_within_the_declaration(stage, o, value, capsys,
                                                                               monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def probe(v, ctx):
        raise Accepted(v)

    monkeypatch.setattr(stage, "run", probe)
    code, err = _run_cli(_argv(stage, o, value), capsys)
    if isinstance(code, tuple):
        got = code[1][o.key]
        if isinstance(got, float):
            assert math.isfinite(got), f"{o.flag} accepted {got}"
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            assert o.max is not None or o.below is not None, f"{o.flag} has no upper bound"
            assert abs(got) < HUGE
        return
    assert not isinstance(code, str), code
    lines = err.strip().splitlines()
    assert code in (1, 2) and len(lines) == 1 and lines[0].startswith("gandata: error:"), (code, err)
    assert o.name("cli") in lines[0] or o.key in lines[0] or "placeholder" in lines[0], lines[0]


TOML_CASES = [(s, o, v) for s in stages.STAGES if s.table for o in s.options if o.pipeline for v in _toml_values(o)]


@pytest.mark.parametrize("stage, o, value", TOML_CASES,
                         ids=[f"{s.name}:{o.key}={str(v)[:8]!r}" for s, o, v in TOML_CASES])
def test_every_hostile_pipeline_value_is_one_line_or_within_the_declaration(stage, o, value, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    table = {o.key: value}
    if stage.select:
        table[stage.select[0]] = stage.select[1]
    for key in {"train": ("shards",), "eval": ("target", "real")}.get(stage.table, ()):  # their inputs, given
        table.setdefault(key, "data/x")
    try:
        _, steps = plan({stage.table: table}, "p.toml", tmp_path / "data")
    except UserError as e:
        text = str(e)
        assert "\n" not in text and (f"[{stage.table}] {o.key}" in text or "allow_" in text), text
        return
    got = steps[0].values[o.key]
    if isinstance(got, float):
        assert math.isfinite(got)
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        assert abs(got) < HUGE


def test_every_number_is_bounded_above_and_every_float_is_finite():
    for s in stages.STAGES:
        for o in s.options:
            if o.type in (int, float):
                assert o.max is not None or o.below is not None or o.validate is not None, f"{s.name} {o.flag}"
                if o.default is not None:
                    assert o.check(o.default, "cli") == o.default


# --------------------------------------------------------------------------- part two: the commands, run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Small real inputs every runnable command can start from, and a server for fetch urls."""
    import http.server

    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    base = tmp_path_factory.mktemp("world")
    imgs = base / "imgs"
    imgs.mkdir()
    for i in range(8):
        drawn_image(i, (40, 40)).save(imgs / f"i{i}.png")
    labelled_set(base, 12, names=("a", "b", "c"))
    run = base / "run"
    train(TrainOptions(kind="cdcgan", shards=str(base / "set"), out=str(run), kimg=0.008, batch=4, ngf=4, ndf=4,
                       nz=4, workers=0, device="cpu", grid=4, snap_kimg=0.008), progress=False)

    body = png_bytes(drawn_image(99, (32, 32)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(h):  # noqa: N802
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        def log_message(h, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    urls = base / "urls.txt"
    urls.write_text("".join(f"http://127.0.0.1:{httpd.server_address[1]}/{i}.png\n" for i in range(3)))
    yield {"imgs": imgs, "raw": base / "raw", "set": base / "set", "run": run, "urls": urls}
    httpd.shutdown()


TRAIN_BASE = ["--kimg", "0.004", "--batch", "4", "--ngf", "4", "--ndf", "4", "--nz", "4", "--workers", "0", "--device",
              "cpu", "--shuffle", "8", "--snap-kimg", "0.004", "--grid", "4"]


def _base(stage: stages.Stage, w: dict, out: Path) -> tuple[list[str], list[str]]:
    """(positional arguments, options) that make ``stage`` a small, offline run that succeeds."""
    name = stage.name
    if name == "shard":
        return [str(w["imgs"])], ["--out", str(out), "--name", "n", "--size", "8", "--min-shards", "1"]
    if name == "dedupe":
        return [str(w["imgs"])], []
    if name == "inspect":
        return [str(w["set"])], []
    if name == "export":
        return [str(w["set"])], ["--out", str(out / "x.zip")]
    if name == "crop lego-faces":
        return [], ["--src", str(w["imgs"]), "--out", str(out), "--locator", "layout", "--size", "16"]
    if name.startswith("train "):
        return [], ["--shards", str(w["set"]), "--out", str(out), *TRAIN_BASE]
    if name == "sample":
        return [str(w["run"])], ["--out", str(out / "s.png"), "--n", "4"]
    if name == "eval":
        return [str(w["run"])], ["--real", str(w["set"]), "--extractor", "tiny-random", "--n", "8"]
    if name == "fetch urls":
        return [str(w["urls"])], ["--name", "n", "--out", str(out), "--retries", "0"]
    raise KeyError(name)


RUNNABLE = [s for s in stages.STAGES if s.name in ("shard", "dedupe", "inspect", "export", "crop lego-faces",
                                                     "sample", "eval", "fetch urls") or s.name.startswith("train ")]


def _run_values(o: Opt, kind: str) -> list[str]:
    """The hostile values worth running: those the declaration may accept."""
    if o.type is bool or o.key in ("device", "engine", "ray_address", "task_size", "resume"):
        return []  # cuda/ray/resume: other tests; a bool has no hostile value on the command line
    if o.choices:
        return list(o.choices)
    if o.type in (int, float):
        lo = o.min if o.min is not None else (o.above if o.above is not None else None)
        vals = ["0", "1"] if lo is None or lo <= 0 else [str(int(lo) if float(lo).is_integer() else lo)]
        if o.above is not None:
            vals = [str(o.above + (1 if o.type is int else 0.001))]
        return vals
    if o.type in (PATH_TYPE, LIST) or o.key in ("out", "src", "shards", "real", "url_list", "path", "work"):
        return ["", "FILE", "FOLDER", "MISSING/sub/x", LONG]
    return ["", LONG]


def _resolve(value: str, tmp: Path) -> str:
    (tmp / "a-file").write_text("just a file")
    (tmp / "a-folder").mkdir(exist_ok=True)
    return (value.replace("FILE", str(tmp / "a-file")).replace("FOLDER", str(tmp / "a-folder"))
            .replace("MISSING", str(tmp / "missing")))


SEEN: set = set()
RUN_CASES = []
for _s in RUNNABLE:
    for _o in _s.options:
        if not _o.cli or (_o.key, _o.type, _o.choices) in SEEN and _s.name.startswith("train ") \
                and _o.key not in ("label_smoothing", "clip", "gp_lambda", "n_classes", "critic_cond",
                                   "critic_warmup"):
            continue
        if _s.name.startswith("train "):
            SEEN.add((_o.key, _o.type, _o.choices))
        for _v in _run_values(_o, _s.name):
            RUN_CASES.append((_s, _o, _v))


class _Timeout(Exception):
    pass


@pytest.mark.parametrize("stage, o, value", RUN_CASES,
                         ids=[f"{s.name}:{o.key}={v[:10]!r}" for s, o, v in RUN_CASES])
@pytest.mark.slow
def test_every_accepted_hostile_value_runs_or_fails_in_one_line(stage, o, value, world, capsys, monkeypatch,
                                                                tmp_path):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args, opts = _base(stage, world, out)
    value = _resolve(value, tmp_path)
    if o.argument:
        argv = [*stage.command, *opts, "--", value]
    else:
        argv = [*stage.command, *args, *opts, f"{o.flag}={value}"]

    def alarm(*a):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    try:
        code, err = _run_cli(argv, capsys)
    except _Timeout:
        pytest.fail(f"{' '.join(argv)} ran past 60 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not isinstance(code, str), f"{' '.join(argv)}: {code}"
    if code != 0:
        errors = [line for line in err.strip().splitlines() if line.startswith("gandata:")
                  or "Traceback" in line or "Error" in line]
        assert code in (1, 2) and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err[-2000:]
