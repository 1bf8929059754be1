"""Pipeline files: the stages of one dataset (fetch → crop → shard → train → eval, any subset) with their options,
run in order by ``gandata run FILE.toml``.

A file is TOML with an optional ``[pipeline]`` table (``name``, ``dataset``, ``base_url``) and one table per stage.
A stage's keys are the options of the matching command, with ``_`` for ``-`` (``min_face``, ``val_fraction``…);
``fetch`` takes ``source`` (bitmoji, bricklink, rebrickable, urls), ``crop`` and ``train`` take ``kind``. A stage
reads what the stage before it wrote unless its table names ``src``/``shards``; outputs default to the usual
places (``DATA/<dataset>/raw|faces|shards``, ``runs/<name>``). Relative paths in the file are relative to the
working directory, as on the command line.

Every stage is resumable on its own (fetch skips keys already stored or refused, crop skips parents done, shard
reuses its spool, train continues from its newest checkpoint, eval reuses its lines), so running a pipeline again
continues where it stopped, and a finished one is a quick no-op.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import time
import tomllib
from pathlib import Path

from .errors import UserError

STAGES = ("fetch", "crop", "shard", "train", "eval")
SOURCES = ("bitmoji", "bricklink", "rebrickable", "urls")
# pipeline keys that name a library parameter differently (the CLI's option names)
ALIASES = {"traits": "traits_file", "templates": "templates_file", "avatar_ids": "avatar_ids_file",
           "manifest": "manifest_file", "csv": "csv_file", "format": "image_format", "eval": "eval_metrics"}
FETCH_OVERRIDES = ("concurrency", "rate", "retries", "timeout")


def load(path: str | os.PathLike, sets: list[str] | None = None) -> dict:
    """A pipeline file, with ``stage.key=value`` overrides (the value read as TOML, else as a string)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text("utf-8"))
    except OSError as e:
        raise UserError(f"cannot read the pipeline file {path} ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e})") from None
    for item in sets or []:
        target, eq, raw = item.partition("=")
        stage, dot, key = target.partition(".")
        if not eq or not dot or not key:
            raise UserError(f"--set {item!r}: write STAGE.KEY=VALUE, e.g. --set fetch.count=500")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        spec.setdefault(stage, {})[key] = value
    unknown = [k for k in spec if k != "pipeline" and k not in STAGES]
    if unknown:
        raise UserError(f"{path}: unknown table [{unknown[0]}]; a pipeline has [pipeline] and the stages "
                        f"{', '.join(f'[{s}]' for s in STAGES)}")
    if not any(s in spec for s in STAGES):
        raise UserError(f"{path} names no stage; add at least one of {', '.join(f'[{s}]' for s in STAGES)}")
    for s in STAGES:
        if s in spec and not isinstance(spec[s], dict):
            raise UserError(f"{path}: {s} must be a table ([{s}])")
    for table in spec.values():
        if isinstance(table, dict):
            for k, v in table.items():
                if isinstance(v, str) and v.startswith("~"):
                    table[k] = str(Path(v).expanduser())
    spec.setdefault("pipeline", {}).setdefault("name", path.stem)
    return spec


def _output(stage: str, given, ctx: dict):
    """Where a stage writes: the table's ``out``, else where the command would (``DATA/<dataset>/…``,
    ``runs/<name>``; eval writes into the run it evaluates)."""
    if given:
        return given
    if stage == "train":
        return Path("runs") / ctx["name"]
    if stage == "eval":
        return ctx["run"]
    return ctx["data"] / ctx["dataset"] / {"fetch": "raw", "crop": "faces", "shard": "shards"}[stage]


def _options(stage: str, table: dict, allowed: list[str]) -> dict:
    """The table's keys as parameter names, refusing any the stage does not take."""
    out = {}
    for key, value in table.items():
        name = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name not in allowed:
            raise UserError(f"[{stage}] has no option {key!r}; it takes {', '.join(sorted(allowed))}")
        out[name] = value
    return out


def _params(fn, *skip: str) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p not in skip]


def _fields(cls, *skip: str) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in skip]


def _fetch(t: dict, ctx: dict) -> tuple[dict, str, str]:
    from .sources.bitmoji import fetch_bitmoji
    from .sources.bricklink import fetch_bricklink
    from .sources.rebrickable import fetch_rebrickable
    from .sources.urls import fetch_urls

    source = t.pop("source", None)
    if source not in SOURCES:
        raise UserError(f"[fetch] needs source = one of {', '.join(SOURCES)} (got {source!r})")
    fn = {"bitmoji": fetch_bitmoji, "bricklink": fetch_bricklink, "rebrickable": fetch_rebrickable,
          "urls": fetch_urls}[source]
    out = _output("fetch", t.pop("out", None), ctx)
    overrides = {k: t.pop(k) for k in FETCH_OVERRIDES if k in t}
    if source == "bricklink":  # its images have a lane of their own: concurrency and rate are that lane's
        for k, name in (("concurrency", "image_concurrency"), ("rate", "image_rate")):
            if k in overrides:
                t[name] = overrides.pop(k)
    if "format" in t:  # fetch urls: the list's format
        t["fmt"] = t.pop("format")
    opts = _options("fetch", t, _params(fn, "out", "progress", "overrides", "name"))
    opts.setdefault("base_url", ctx["base_url"])
    if source == "urls":
        opts["name"] = ctx["dataset"]
    stats = fn(out=out, **opts, overrides=overrides, progress=ctx["progress"])
    if stats.get("interrupted"):
        raise KeyboardInterrupt
    if stats.get("stopped"):
        raise UserError(f"fetch stopped: {stats['stopped']}")
    given_up = sum((stats.get("failures") or {}).values())
    return stats, str(out), f"{stats['accepted']} new images, {stats['total']} in all; {given_up} given up on"


def _crop(t: dict, ctx: dict) -> tuple[dict, str, str]:
    from .crop import CropOptions, crop

    kind = t.pop("kind", None)
    if kind not in ("anime-faces", "lego-faces"):
        raise UserError(f"[crop] needs kind = anime-faces or lego-faces (got {kind!r})")
    lego = kind == "lego-faces"
    src = t.pop("src", None) or ctx["current"] or _output("fetch", None, ctx)
    out = _output("crop", t.pop("out", None), ctx)
    extra = {k: t.pop(k) for k in ("cascade", "debug_grid", "base_url") if k in t}
    opts = _options("crop", t, _fields(CropOptions, "lego"))
    opts.setdefault("min_face", 24 if lego else 64)  # the command's defaults
    s = crop(src, out, CropOptions(lego=lego, **opts), cascade=extra.get("cascade"),
             base_url=extra.get("base_url", ctx["base_url"]), debug_grid=extra.get("debug_grid"),
             progress=ctx["progress"])
    return s, str(out), (f"{s['crops']} new crops from {s['images']} images ({s['skipped_done']} done earlier); "
                         f"{s['total_crops']} in all")


def _shard(t: dict, ctx: dict) -> tuple[dict, str, str]:
    from .shard import ShardOptions, shard

    src = t.pop("src", None) or ctx["current"] or _output("fetch", None, ctx)
    srcs = [src] if isinstance(src, (str, Path)) else list(src)
    out = _output("shard", t.pop("out", None), ctx)
    name = t.pop("name", None) or ctx["dataset"]
    s = shard(srcs, out, name, ShardOptions(**_options("shard", t, _fields(ShardOptions))), progress=ctx["progress"])
    c = s["counts"]
    removed = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in s["removed"].items() if v) or "none"
    return s, str(out), (f"{c.get('train', 0)} train / {c.get('val', 0)} val samples at {s['resolution']} px in "
                         f"{s['shards']['train']} + {s['shards']['val']} shards; removed: {removed}")


def _train(t: dict, ctx: dict) -> tuple[dict, str, str]:
    from gandata.trainers.train import TrainError, TrainOptions, launch

    kind = t.pop("kind", None)
    shards = str(t.pop("shards", None) or ctx["current"] or _output("shard", None, ctx))
    out = Path(_output("train", t.pop("out", None), ctx))
    opts = _options("train", t, _fields(TrainOptions, "kind", "shards", "out", "extra"))
    opts.setdefault("resume", "auto")
    try:
        o = TrainOptions(kind=kind or "", shards=shards, out=str(out), **opts)
        o.resolved()
        done = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
        if done and done.get("kind") == o.kind and float(done.get("kimg", 0)) >= o.kimg:
            return done, str(out), f"already trained: {done['kimg']} kimg ({done.get('checkpoint')})"
        s = launch(o, progress=ctx["progress"])
    except TrainError as e:
        raise UserError(f"[train] {e}") from None
    return s, str(out), f"{s['kimg']} kimg, {s['steps']} steps in {s['seconds']} s; samples {s.get('grid')}"


def _eval(t: dict, ctx: dict) -> tuple[dict, str, str]:
    from gandata.trainers.metrics import evaluate
    from gandata.trainers.train import TrainError

    target = t.pop("run", None) or ctx["run"]
    real = t.pop("real", None) or ctx["shards"]
    if not target or not real:
        raise UserError("[eval] needs a run and real shards: put it after [train] and [shard], or give run and real")
    opts = _options("eval", t, _params(evaluate, "target", "real", "progress") + ["inception_weights"])
    if "inception_weights" in opts:
        opts["weights"] = opts.pop("inception_weights")
    try:
        lines = evaluate(target, str(real), progress=ctx["progress"], **opts)
    except TrainError as e:
        raise UserError(f"[eval] {e}") from None
    last = lines[-1]
    shown = ", ".join(f"{k} {last[k]:.4g}" for k in ("fid", "kid") if k in last)
    return {"results": lines}, str(target), f"{shown} at {last['kimg']:g} kimg (N gen {last['n_gen']}, {last['extractor']})"


RUNNERS = {"fetch": _fetch, "crop": _crop, "shard": _shard, "train": _train, "eval": _eval}


def run(spec: dict | str | os.PathLike, data_dir: str | os.PathLike = "data", sets: list[str] | None = None,
        only: list[str] | None = None, progress: bool = True, echo=None) -> dict:
    """Run a pipeline (a file or an already-loaded dict) stage by stage; returns ``{"pipeline", "stages": […]}``.
    ``only`` limits the stages run (the others' outputs are still used as inputs). ``echo`` gets one line per stage
    as it ends."""
    if not isinstance(spec, dict):
        spec = load(spec, sets)
    head = spec.get("pipeline", {})
    name = str(head.get("name") or "pipeline")
    fetch_source = spec.get("fetch", {}).get("source")
    dataset = str(head.get("dataset") or (fetch_source if fetch_source in ("bitmoji", "bricklink", "rebrickable")
                                          else name))
    data = Path(head.get("data_dir") or data_dir)
    ctx = {"name": name, "dataset": dataset, "data": data, "base_url": head.get("base_url"), "progress": progress,
           "current": None, "shards": None, "run": None}
    for bad in only or []:
        if bad not in STAGES:
            raise UserError(f"--only {bad}: the stages are {', '.join(STAGES)}")
    t0 = time.monotonic()
    results = []
    for stage in STAGES:
        if stage not in spec:
            continue
        table = dict(spec[stage])
        if only and stage not in only:
            out = str(_output(stage, table.get("out"), ctx))
        else:
            t = time.monotonic()
            summary, out, line = RUNNERS[stage](table, ctx)
            results.append({"stage": stage, "out": out, "line": line, "seconds": round(time.monotonic() - t, 1),
                            "summary": summary})
            if echo:
                echo(f"[{stage}] {line}  ({results[-1]['seconds']} s) → {out}")
        if stage in ("fetch", "crop", "shard"):
            ctx["current"] = out
        if stage == "shard":
            ctx["shards"] = out
        if stage == "train":
            ctx["run"] = out
    return {"pipeline": name, "dataset": dataset, "stages": results, "seconds": round(time.monotonic() - t0, 1)}
