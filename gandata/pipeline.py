"""Pipeline files: the stages of one dataset (fetch → crop → shard → train → eval, any subset) with their options,
run in order by ``gandata run FILE.toml``.

A file is TOML with an optional ``[pipeline]`` table (``name``, ``dataset``, ``base_url``, ``data_dir``) and one
table per stage. A stage's keys are its command's options with ``_`` for ``-`` (``min_face``, ``val_fraction``…),
declared once in :mod:`gandata.declarations`; ``fetch`` takes ``source`` (bitmoji, bricklink, rebrickable, urls),
``crop`` and ``train`` take ``kind``. The whole file — every table, key and value, the rules between values, the
names — is checked before the first stage runs.
A stage reads what the stage before it wrote unless its table names ``src``/``shards``; outputs default to the
usual places (``DATA/<dataset>/raw|faces|shards``, ``runs/<name>``). Relative paths in the file are relative to
the working directory, as on the command line.

Every stage is resumable on its own (fetch skips keys already stored or refused, crop skips parents done, shard
reuses its spool, train continues from its newest checkpoint, eval reuses its lines), so running a pipeline again
continues where it stopped, and a finished one is a quick no-op.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .declarations import check_name, clean_name
from .errors import Naming, UserError, naming
from .options import PATH_TYPE, place_mistake
from .paths import real
from .shardset import refuse_commands
from .stages import TABLES, Context, Stage, for_table
from .storage import is_url
from .summary import Summary
from .textfiles import read_text

HEAD_KEYS = ("name", "dataset", "base_url", "data_dir", "allow_commands", "allow_outside")
BUILT_IN_EXTRACTORS = ("inception", "tiny-random")
SHIPPED = Path(__file__).resolve().parent / "pipelines"  # an installed copy
_CHECKOUT = Path(__file__).resolve().parents[1] / "pipelines"  # the repository's


def shipped() -> dict[str, Path]:
    """The pipeline files that come with gandata, by name."""
    folder = _CHECKOUT if (_CHECKOUT / "bitmoji-64.toml").is_file() else SHIPPED
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def load(path: str | os.PathLike, sets: list[str] | None = None) -> dict:
    """A pipeline file (or a shipped pipeline's name), with ``stage.key=value`` overrides (the value read as TOML,
    else as a string)."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and str(path) in shipped():
        path = shipped()[str(path)]
    try:
        spec = tomllib.loads(read_text(path))
    except OSError as e:
        known = ", ".join(shipped())
        raise UserError(f"cannot read the pipeline file {path} ({e.strerror}); the shipped pipelines are: "
                        f"{known}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
    except RecursionError:
        raise UserError(f"{path} nests tables or lists too deeply to be a pipeline file") from None
    texts: dict[str, dict[str, str]] = {}
    for item in sets or []:
        target, eq, raw = item.partition("=")
        stage, dot, key = target.partition(".")
        if not eq or not dot or not key:
            raise UserError(f"--set {item!r}: write STAGE.KEY=VALUE, e.g. --set fetch.count=500")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except (tomllib.TOMLDecodeError, RecursionError):
            value = raw
        if not isinstance(spec.setdefault(stage, {}), dict):
            raise UserError(f"--set {item!r}: {stage} in {path} is not a table")
        spec[stage][key] = value
        if not isinstance(value, str):  # a text option takes it as written: --set shard.name=2024 is "2024"
            texts.setdefault(stage, {})[key] = raw
    for table in spec.values():
        if isinstance(table, dict):
            for k, v in table.items():
                if isinstance(v, str) and v.startswith("~"):
                    table[k] = str(Path(v).expanduser())
    if not isinstance(spec.setdefault("pipeline", {}), dict):
        raise UserError(f"{path}: [pipeline] must be a table (got pipeline = {spec['pipeline']!r:.40})")
    spec["pipeline"].setdefault("name", clean_name(path.stem, "pipeline"))
    spec["pipeline"].setdefault("source_file", str(path))
    if texts:
        spec["pipeline"]["set_texts"] = texts
    return spec


@dataclass
class Step:
    table: str
    stage: Stage
    values: dict[str, Any]


def plan(spec: dict, where: str = "pipeline", data_dir: str | os.PathLike = "data") -> tuple[dict, list[Step]]:
    """Check a whole pipeline — its tables, every key and value — and return its head and its steps in order.
    Nothing runs; every mistake is found here, before a 7-hour fetch rather than after it. ``data_dir`` is the
    workspace the command line gave (``--data-dir``)."""
    head = spec.get("pipeline", {})
    if not isinstance(head, dict):
        raise UserError(f"{where}: [pipeline] must be a table")
    for key in head:
        if key not in (*HEAD_KEYS, "source_file", "set_texts"):
            raise UserError(f"{where}: [pipeline] has no key {key!r}; it takes {', '.join(HEAD_KEYS)}")
    for key in ("name", "dataset", "base_url", "data_dir"):
        if key in head and not isinstance(head[key], str):
            raise UserError(f"{where}: [pipeline] {key} must be text (got {head[key]!r})")
    for key in ("name", "dataset"):
        if key in head:
            try:
                check_name(head[key])
            except ValueError as e:
                raise UserError(f"{where}: [pipeline] {key} = {head[key]!r:.60} must be a plain name: it names a "
                                f"folder under the data dir or runs/ ({e})") from None
    for key in ("allow_commands", "allow_outside"):
        if key in head and not isinstance(head[key], bool):
            raise UserError(f"{where}: [pipeline] {key} must be true or false")
    unknown = [k for k in spec if k != "pipeline" and k not in TABLES]
    if unknown:
        raise UserError(f"{where}: unknown table [{unknown[0]}]; a pipeline has [pipeline] and the stages "
                        f"{', '.join(f'[{s}]' for s in TABLES)}")
    if not any(s in spec for s in TABLES):
        raise UserError(f"{where} names no stage; add at least one of {', '.join(f'[{s}]' for s in TABLES)}")
    steps = []
    for table in TABLES:
        if table not in spec:
            continue
        if not isinstance(spec[table], dict):
            raise UserError(f"{where}: {table} must be a table ([{table}])")
        stage = for_table(table, spec[table], where)
        given = {k: v for k, v in spec[table].items() if stage.select is None or k != stage.select[0]}
        for key, raw in (head.get("set_texts") or {}).get(table, {}).items():
            opt = next((o for o in stage.declaration.options if o.key == key), None)
            if opt is not None and opt.type in (str, PATH_TYPE) and key in given:
                given[key] = raw
        steps.append(Step(table, stage, stage.declaration.check(given, table)))
    if not head.get("allow_commands"):
        for step in steps:
            _refuse_commands(step, where)
    if not head.get("allow_outside"):
        roots = [Path(real(Path.cwd())), Path(real(data_dir))]
        if "data_dir" in head:
            _inside(head["data_dir"], roots, f"{where}: [pipeline] data_dir")
        for step in steps:
            for o in step.stage.options:
                value = step.values.get(o.key)
                if o.output and o.pipeline and value is not None:
                    _inside(value, roots, f"{where}: [{step.table}] {o.key}")
    _inputs_given(steps, where)
    return head, steps


def _inputs_given(steps: list[Step], where: str) -> None:
    """A stage that reads what an earlier stage wrote has that stage in the file, or names its input: [train]
    needs shards ([shard] before it, or shards = …), [eval] a run and real images — found here, not after hours of
    fetching."""
    tables = {s.table: s for s in steps}
    needs = {"train": (("shards", "shard"),), "eval": (("target", "train"), ("real", "shard"))}
    for table, pairs in needs.items():
        for key, before in pairs:
            if table in tables and tables[table].values.get(key) is None and before not in tables:
                raise UserError(f"{where}: [{table}] needs {key}: put [{before}] before it, or give {key} = …")


def _inside(value: Any, roots: list[Path], name: str) -> None:
    """A pipeline file writes only inside its workspace: the working directory and the command line's data dir
    (``roots``, real paths), judged by the real path the kernel will write (:func:`gandata.paths.real`: a link in
    the part that exists followed, so ``lnk/../x`` and ``lnk/sub`` land where ``lnk`` leads); an object store is
    outside, and ``S3://…`` is refused (it would be a local folder ``S3:``). ``allow_outside = true`` in [pipeline] (or
    ``--set pipeline.allow_outside=true``) lifts this."""
    text = str(value)
    mistake = place_mistake(text)  # `S3://…` (a stage's options were checked so already; [pipeline] data_dir not)
    if mistake:
        raise UserError(f"{name} = {text!r}: {mistake}")
    if is_url(text):
        where_to = "to object storage"
    else:
        path = Path(real(text))
        if any(path == r or r in path.parents for r in roots):
            return
        where_to = "outside the working directory and the data dir"
    raise UserError(f"{name} = {text!r} writes {where_to}; a pipeline file may do that only with allow_outside = "
                    "true in [pipeline] (or --set pipeline.allow_outside=true)")


def _refuse_commands(step: Step, where: str) -> None:
    """A pipeline file runs no shell command (``pipe:`` shard specs) and imports no code (``module:function``
    extractors) unless its ``[pipeline]`` says ``allow_commands = true``: a file someone sent you should not be able
    to do more than its stages' data work."""
    for key in ("shards", "eval_real", "real"):
        value = step.values.get(key)
        if isinstance(value, str):
            try:
                refuse_commands([value], f"[{step.table}] {key}")
            except UserError as e:
                raise UserError(f"{where}: {e}") from None
    for key in ("extractor", "eval_extractor"):
        value = step.values.get(key)
        if isinstance(value, str) and value not in BUILT_IN_EXTRACTORS:
            raise UserError(f"{where}: [{step.table}] {key} = {value!r} imports code; a pipeline file may do that "
                            "only with allow_commands = true in [pipeline]")


@dataclass
class StageResult(Summary):
    stage: str
    out: str
    line: str
    seconds: float
    summary: Summary

    @property
    def warnings(self) -> list[str]:
        """The stage's own warnings (a shard that removed most of the set…), as its summary has them."""
        return list(getattr(self.summary, "warnings", None) or [])


@dataclass
class PipelineResult(Summary):
    pipeline: str
    dataset: str
    stages: list[StageResult]
    seconds: float

    def lines(self) -> list[str]:
        out = [f"pipeline {self.pipeline} ({self.dataset}) done in {self.seconds} s:"]
        for s in self.stages:
            out.append(f"  {s.stage:<6} {s.line}  ({s.seconds} s) → {s.out}")
            out += [f"  {'':<6} warning: {w}" for w in s.warnings]
        return out


def _output(table: str, values: dict, ctx: Context, summary: Summary | None) -> str:
    """Where a stage wrote (or, not run, would write): the next stage's input."""
    if summary is not None and getattr(summary, "out", None):
        return str(summary.out)
    if values.get("out"):
        return str(values["out"])
    if table == "train":
        return str(Path("runs") / (ctx.name or "run"))
    if table == "eval":
        return str(ctx.run)
    return str(ctx.data_dir / ctx.dataset / {"fetch": "raw", "crop": "faces", "shard": "shards"}[table])


def run(spec: dict | str | os.PathLike, data_dir: str | os.PathLike = "data", sets: list[str] | None = None,
        only: list[str] | None = None, progress: bool = True, echo=None, hints: str = "file") -> PipelineResult:
    """Check a whole pipeline (a file, a shipped pipeline's name, or an already-loaded dict), then run it stage by
    stage. ``only`` limits the stages run (the others' outputs are still used as inputs). ``echo`` gets one line
    per stage as it ends. A stage's errors and warnings name options as this pipeline takes them: ``hints`` "set"
    (``--set shard.maxcount=47``: ``gandata run``, whose command line takes it) or "file" (``[shard] maxcount =
    47``); one for a stage ``only`` leaves out says to run that stage too (``--set shard.size=64 --only shard``).
    An ``only`` that names a stage the file does not have is refused: it would run nothing."""
    if not isinstance(spec, dict):
        spec = load(spec, sets)
    where = spec.get("pipeline", {}).get("source_file", "pipeline")
    head, steps = plan(spec, where, data_dir)
    has = [s.table for s in steps]
    for bad in only or []:
        if bad not in TABLES:
            raise UserError(f"--only {bad}: the stages are {', '.join(TABLES)}")
        if bad not in has:  # it would run nothing and say nothing
            raise UserError(f"--only {bad}: {where} has no [{bad}] stage (its stages: {', '.join(has)})")
    name = str(head.get("name") or "pipeline")
    fetch = next((s for s in steps if s.table == "fetch"), None)
    source = fetch.stage.select[1] if fetch else None
    dataset = str(head.get("dataset") or (source if source in ("bitmoji", "bricklink", "rebrickable") else name))
    ctx = Context(data_dir=Path(head.get("data_dir") or data_dir), progress=progress, pipeline=True, name=name,
                  dataset=dataset, base_url=head.get("base_url"), allow_commands=bool(head.get("allow_commands")))
    t0 = time.monotonic()
    results = []
    for step in steps:
        summary = None
        if not only or step.table in only:
            t = time.monotonic()
            with naming(Naming(step.table, tuple(has), hints, tuple(only or ()))):
                summary = step.stage.run(dict(step.values), ctx)
            failure = summary.failure()
            if failure:
                if failure[0] == 130:
                    raise KeyboardInterrupt
                reason = failure[1] if failure[1].startswith("stopped") else f"stopped: {failure[1]}"
                raise UserError(f"[{step.table}] {reason}")
        out = _output(step.table, step.values, ctx, summary)
        if summary is not None:
            results.append(StageResult(step.table, out, summary.brief(), round(time.monotonic() - t, 1), summary))
            if echo:
                echo(f"[{step.table}] {results[-1].line}  ({results[-1].seconds} s) → {out}")
                for w in results[-1].warnings:
                    echo(f"[{step.table}] warning: {w}")
        if step.table in ("fetch", "crop", "shard"):
            ctx.current = out
        if step.table == "shard":
            ctx.shards = out
        if step.table == "train":
            ctx.run = out
    return PipelineResult(name, dataset, results, round(time.monotonic() - t0, 1))
