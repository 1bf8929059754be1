"""Every stage: its command, help and examples, its declaration (:mod:`gandata.declarations`: options, defaults,
ranges, the rules between them) and the one function that turns checked values into a library call — where output
folders default and the stage's typed summary comes back. The command line (:mod:`gandata.cli`) and pipeline files
(:mod:`gandata.pipeline`) are built from this table; neither decides anything of its own. It stands on the library
and the trainers, and nothing below imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import declarations as D
from .errors import UserError, hint
from .options import PATH_TYPE, Declaration, Opt, checked_already
from .storage import is_url
from .summary import Summary
from .trainers.kinds import BY_NAME, KINDS


@dataclass
class Context:
    """What a stage knows besides its options: the workspace, and in a pipeline what came before."""

    data_dir: Path = Path("data")
    progress: bool = True
    pipeline: bool = False
    name: str | None = None  # a pipeline's name (its run folder: runs/<name>)
    dataset: str | None = None  # a pipeline's dataset name (DATA/<dataset>/…)
    current: str | None = None  # what the stage before wrote (a pipeline's fetch → crop → shard chain)
    shards: str | None = None  # the pipeline's shard folder (train's and eval's input)
    run: str | None = None  # the pipeline's run folder (eval's input)
    base_url: str | None = None  # the pipeline's [pipeline] base_url
    allow_commands: bool = False  # pipe: shard specs and code extractors: the user's own command line, or a
    # pipeline file that says allow_commands = true


@dataclass
class Stage:
    command: tuple[str, ...]  # ("fetch", "bitmoji"), ("shard",)
    help: str
    epilog: str
    declaration: Declaration
    call: Callable[[dict[str, Any], Context], Summary]
    table: str | None = None  # the pipeline table that runs it (None: command line only)
    select: tuple[str, str] | None = None  # within a table, (key, value) choosing this stage: ("source", "bitmoji")
    data_dir_flag: bool = True  # --data-dir
    brief: str | None = None  # the line a command list shows (default: from the help, see short)

    @property
    def name(self) -> str:
        return " ".join(self.command)

    @property
    def options(self) -> tuple[Opt, ...]:
        return self.declaration.options

    def run(self, checked: dict[str, Any], ctx: Context) -> Summary:
        """Run the stage on values its declaration has checked (:meth:`Declaration.check`): the library calls it
        makes check nothing again."""
        with checked_already():
            return self.call(checked, ctx)

    @property
    def short(self) -> str:
        """The one line a command list shows: the help's first sentence, whole (click would cut it at 45
        characters, mid-word), or up to its colon."""
        if self.brief:
            return self.brief
        first = self.help.split(". ")[0].rstrip(".")
        return first.split(": ")[0] if len(first) > 80 else first


def _overrides(v: dict, keys: tuple[str, ...] = D.ENGINE_KEYS) -> dict:
    """The fetch engine's options a stage was given (declared names, the engine's own)."""
    return {k: v[k] for k in keys}


def library_options(cls: type, v: dict, **more: Any) -> Any:
    """A library's options dataclass from the checked values: its fields carry the declared names, so nothing is
    renamed on the way, and nothing is checked again."""
    from dataclasses import fields

    with checked_already():
        return cls(**{f.name: v[f.name] for f in fields(cls) if f.name in v}, **more)


def _base_url(v: dict, ctx: Context) -> str | None:
    return v.get("base_url") or ctx.base_url


def _dataset_out(v: dict, ctx: Context, dataset: str, stage: str) -> Path | str:
    return v["out"] or ctx.data_dir / (ctx.dataset or dataset) / stage


Inputs = list[tuple[str, Any]]  # what a stage reads: (its option's key, the path, URL or pattern)


def _refuse_overlap(declaration: Declaration, ctx: Context, out_key: str, out: Any, inputs: Inputs) -> None:
    """No command writes over its own input: the output ``out_key`` (its default filled in) against each input the
    stage reads (:func:`gandata.paths.refuse_overlap`), named as the user wrote them (``--out`` or ``[crop] out``)."""
    from .paths import refuse_overlap

    where = declaration.command[0] if ctx.pipeline else "cli"

    def name(key: str) -> str:
        return declaration.option(key).name(where)

    refuse_overlap(out, name(out_key), [(value, name(key)) for key, value in inputs])


def _file_inputs(v: dict, declaration: Declaration) -> Inputs:
    """The files a fetch reads (its list, catalogues, manifest): every path option that is not an output."""
    return [(o.key, v.get(o.key)) for o in declaration.options if o.type is PATH_TYPE and not o.output]


def _into(out: Path | str, write: Callable[[Path], Summary], v: dict, ctx: Context, declaration: Declaration,
          inputs: Inputs) -> Summary:
    """Run a stage that writes a dataset folder ``out``, which holds no input and lies inside none (``inputs``: by
    option). For an object-store ``--out`` (``s3://…``) it writes a local staging folder
    (``$GANDATA_CACHE/staged-datasets``), which is then published to the store; the summary names the store."""
    _refuse_overlap(declaration, ctx, "out", out, inputs)
    if not is_url(out):
        return write(Path(out))
    from .datasets import publish, stage_remote

    local = stage_remote(str(out))
    summary = write(local)
    publish(local, str(out))
    summary.out = str(out).rstrip("/")
    return summary


# -------------------------------------------------------------------------------------------------- fetch

def _fetch_bitmoji(v: dict, ctx: Context) -> Summary:
    from .sources.bitmoji import fetch_bitmoji

    return _into(_dataset_out(v, ctx, "bitmoji", "raw"), lambda out: fetch_bitmoji(
        out, v["count"], mode=v["mode"], view=v["view"], seed=v["seed"],
        traits=v["traits"], templates=v["templates"], avatar_ids=v["avatar_ids"],
        manifest=v["manifest"], base_url=_base_url(v, ctx), overrides=_overrides(v), progress=ctx.progress),
        v, ctx, D.FETCH_BITMOJI, _file_inputs(v, D.FETCH_BITMOJI))


def _fetch_urls(v: dict, ctx: Context) -> Summary:
    from .sources.urls import fetch_urls

    name = v.get("name") or ctx.dataset
    if not name:
        raise UserError("--name is required: the dataset's name (images go to DATA/NAME/raw)")
    if v["url_list"] is None:
        raise UserError("[fetch] source = urls needs url_list = FILE")
    url_list = v["url_list"] if is_url(v["url_list"]) else Path(v["url_list"]).expanduser()
    return _into(v["out"] or ctx.data_dir / name / "raw", lambda out: fetch_urls(
        url_list, name, out, url_col=v["url_col"], format=v["format"], limit=v["limit"], base_url=_base_url(v, ctx),
        overrides=_overrides(v), progress=ctx.progress, engine=v["engine"], ray_address=v["ray_address"],
        retry_failed=v["retry_failed"], host_groups=v["host_groups"], workers=v["workers"]),
        v, ctx, D.FETCH_URLS, [("url_list", url_list), *_file_inputs(v, D.FETCH_URLS)])


def _fetch_bricklink(v: dict, ctx: Context) -> Summary:
    from .sources.bricklink import fetch_bricklink

    return _into(_dataset_out(v, ctx, "bricklink", "raw"), lambda out: fetch_bricklink(
        out, catalog_file=v["catalog_file"],
        categories_file=v["categories_file"], categories=v["categories"], limit=v["limit"],
        refresh_list=v["refresh_list"], manifest=v["manifest"], base_url=_base_url(v, ctx), delay=v["delay"],
        concurrency=v["concurrency"], rate=v["rate"],
        overrides=_overrides(v, ("retries", "timeout", "max_wait", "memory", "durability")), progress=ctx.progress),
        v, ctx, D.FETCH_BRICKLINK, _file_inputs(v, D.FETCH_BRICKLINK))


def _fetch_rebrickable(v: dict, ctx: Context) -> Summary:
    from .sources.rebrickable import fetch_rebrickable

    return _into(_dataset_out(v, ctx, "rebrickable", "raw"), lambda out: fetch_rebrickable(
        out, csv=v["csv"], limit=v["limit"], manifest=v["manifest"], base_url=_base_url(v, ctx),
        overrides=_overrides(v), progress=ctx.progress),
        v, ctx, D.FETCH_REBRICKABLE, _file_inputs(v, D.FETCH_REBRICKABLE))


def _fetch_weights(v: dict, ctx: Context) -> Summary:
    from .trainers import inception
    from .trainers.metrics import fetch_weights

    return fetch_weights(v["url"] or inception.WEIGHTS_URL, v["out"], progress=ctx.progress)


FETCH = [
    Stage(("fetch", "bitmoji"), "Bitmoji avatars from the public trait-preview (or comic) render URLs. Research use "
          "only.",
          "\b\nExamples:\n"
          "  gandata fetch bitmoji --count 200000                  # random avatar heads → data/bitmoji/raw\n"
          "  gandata fetch bitmoji --count 5000 --view body --seed 7\n"
          "  gandata fetch bitmoji --mode comics --avatar-ids ids.txt --count 20000\n"
          "\b\nThe images are Bitmoji artwork: for research use only. Keep them local and do not redistribute them.\n"
          "Addresses and politeness settings are in the bitmoji manifest (gandata/manifests/bitmoji.toml).",
          D.FETCH_BITMOJI,
          _fetch_bitmoji, "fetch", ("source", "bitmoji")),
    Stage(("fetch", "urls"), "Images from your own list of URLs; every other column is kept in the record.",
          "\b\nExamples:\n"
          "  gandata fetch urls anime.txt --name anime              # one URL per line → data/anime/raw\n"
          "  gandata fetch urls list.csv --name anime --url-col image_url --rate 5\n"
          "  gandata fetch urls list.jsonl --name anime --limit 10000\n"
          "  gandata fetch urls big.txt --name anime --engine ray    # hosts dealt to Ray tasks\n"
          "  gandata fetch urls anime.txt --name anime --retry-failed   # only the timeouts, 5xx, 429s of before",
          D.FETCH_URLS,
          _fetch_urls, "fetch", ("source", "urls")),
    Stage(("fetch", "bricklink"), "LEGO minifigure images from BrickLink, with item numbers, names and categories.",
          "\b\nExamples:\n"
          "  gandata fetch bricklink --catalog-file Minifigures.txt        # your catalog download: no crawling\n"
          "  gandata fetch bricklink --categories 65,746 --limit 2000      # crawl two categories' listing pages\n"
          "  gandata fetch bricklink                                       # the whole catalogue (18 000+ figures)\n"
          "\b\nBrickLink's images are for research use only: keep them local, do not redistribute them.\n"
          "Addresses and politeness settings are in the bricklink manifest (gandata/manifests/bricklink.toml).",
          D.FETCH_BRICKLINK,
          _fetch_bricklink, "fetch", ("source", "bricklink")),
    Stage(("fetch", "rebrickable"), "LEGO minifigure images listed in Rebrickable's bulk CSV, with names and part "
          "counts.",
          "\b\nExamples:\n"
          "  gandata fetch rebrickable                          # Rebrickable's minifigs.csv.gz, fetched and cached\n"
          "  gandata fetch rebrickable --csv minifigs.csv.gz --limit 5000",
          D.FETCH_REBRICKABLE,
          _fetch_rebrickable, "fetch", ("source", "rebrickable")),
    Stage(("fetch", "weights"), "Download a weight file that metrics need, resuming a partial download, and verify "
          "its checksum.",
          "\b\nExample:\n  gandata fetch weights inception      # pytorch-fid's FID Inception file → the cache\n"
          "\b\nOffline machines: download the file elsewhere and pass it with --inception-weights FILE\n"
          "(or set GANDATA_INCEPTION_WEIGHTS).",
          D.FETCH_WEIGHTS,
          _fetch_weights, data_dir_flag=False),
]

# --------------------------------------------------------------------------------------------------- crop


def _crop(lego: bool) -> Callable[[dict, Context], Summary]:
    def run(v: dict, ctx: Context) -> Summary:
        from .crop import CropOptions, crop

        dataset = "bricklink" if lego else "anime"
        src = v["src"] or ctx.current or ctx.data_dir / (ctx.dataset or dataset) / "raw"
        options = library_options(CropOptions, v, lego=lego)
        declaration = D.CROP_LEGO if lego else D.CROP_ANIME
        _refuse_overlap(declaration, ctx, "debug_grid", v["debug_grid"], [("src", src)])
        return _into(_dataset_out(v, ctx, dataset, "faces"), lambda out: crop(
            src, out, options, cascade=v["cascade"], base_url=_base_url(v, ctx), debug_grid=v["debug_grid"],
            progress=ctx.progress, engine=v["engine"], ray_address=v["ray_address"], task_size=v["task_size"]),
            v, ctx, declaration, [("src", src)])

    return run


CROP = [
    Stage(("crop", "anime-faces"), "Anime faces, found with the lbpcascade_animeface detector (reference settings "
          "by default).",
          "\b\nExamples:\n"
          "  gandata crop anime-faces                               # data/anime/raw → data/anime/faces\n"
          "  gandata crop anime-faces --src ~/illustrations --size 96 --margin 0.25\n"
          "  gandata crop anime-faces --debug-grid check.png --min-face 64",
          D.CROP_ANIME, _crop(False), "crop", ("kind", "anime-faces")),
    Stage(("crop", "lego-faces"), "Whole LEGO minifigure heads (hair, hats, helmets), from catalogue shots or photos: "
          "a head detector shipped with gandata, checked by the figure's layout.",
          "\b\nExamples:\n"
          "  gandata crop lego-faces                                # data/bricklink/raw → data/bricklink/faces\n"
          "  gandata crop lego-faces --size 64 --debug-grid heads.png\n"
          "  gandata crop lego-faces --src ~/minifig-photos --threshold 0.7   # fewer, surer crops",
          D.CROP_LEGO, _crop(True), "crop", ("kind", "lego-faces")),
]

# ------------------------------------------------------------------------------------------ dedupe, shard


def _dedupe(v: dict, ctx: Context) -> Summary:
    from .dedupe import dedupe

    return dedupe(v["src"], threshold=v["threshold"], report=v["report"], grid=v["grid"], progress=ctx.progress,
                  memory=v["memory"], engine=v["engine"], ray_address=v["ray_address"], task_size=v["task_size"],
                  work=v["work"])


class ShardAll(Summary):
    """``gandata shard`` with no SRC: one summary per dataset."""

    def __init__(self, summaries: list):
        self.summaries = summaries

    def to_json(self) -> Any:
        return self.summaries[0].to_json() if len(self.summaries) == 1 else [s.to_json() for s in self.summaries]

    def lines(self) -> list[str]:
        return [line for s in self.summaries for line in s.lines()]

    def brief(self) -> str:
        return "; ".join(s.brief() for s in self.summaries)


def _shard(v: dict, ctx: Context) -> Summary:
    from .shard import ShardOptions, default_name, shard, shard_all

    opts = library_options(ShardOptions, v)
    src = v["src"] or ([ctx.current] if ctx.current else None)
    if ctx.pipeline and not src:
        src = [str(ctx.data_dir / ctx.dataset / "raw")]
    if not src:
        if v["out"] is not None or v["name"] is not None:
            raise UserError("--out and --name need SRC; without SRC every dataset goes to DATA/<dataset>/shards")
        if v["engine"] != "local":
            raise UserError("--engine ray needs SRC (one dataset at a time)")
        return ShardAll(shard_all(ctx.data_dir, opts, progress=ctx.progress))
    name = v["name"] or ctx.dataset or default_name(src[0], ctx.data_dir)
    out = v["out"] or ctx.data_dir / name / "shards"
    return shard(src, out if is_url(out) else Path(out).expanduser(), name, opts, progress=ctx.progress,
                 engine=v["engine"], ray_address=v["ray_address"], task_size=v["task_size"], keep_work=v["keep_work"])


DEDUPE = Stage(
    ("dedupe",), "Find near-duplicate clusters (perceptual hash + multi-index search); nothing is changed.",
    "\b\nExamples:\n"
    "  gandata dedupe data/bitmoji/raw --report dups.jsonl --grid dups.png\n"
    "  gandata dedupe data/anime/faces ~/more-faces --threshold 6\n"
    "\b\nNothing is changed: remove near duplicates with gandata shard --dedupe near.",
    D.DEDUPE,
    _dedupe, data_dir_flag=False)

SHARD = Stage(
    ("shard",), "Dedupe, resize, split and write WebDataset shards plus dataset.json.",
    "\b\nExamples:\n"
    "  gandata shard                      # every dataset under ./data, each into DATA/<dataset>/shards\n"
    "  gandata shard ~/anime-faces --name anime --size 64\n"
    "  gandata shard data/bricklink/raw --label-field category --size 128 --resize pad",
    D.SHARD,
    _shard, "shard")

# ---------------------------------------------------------------------------------------------- inspect


def _inspect(v: dict, ctx: Context) -> Summary:
    from .inspection import inspect_path

    return inspect_path(v["path"], grid=v["grid"], grid_n=v["grid_n"], cell=v["cell"], label_field=v["label_field"],
                        seed=v["seed"], progress=ctx.progress)


INSPECT = Stage(
    ("inspect",), "Counts, image sizes, labels and failures of a dataset, with an optional contact sheet.",
    "\b\nExamples:\n"
    "  gandata inspect data/bitmoji/raw\n"
    "  gandata inspect data/anime/shards --grid anime.png\n"
    "  gandata inspect ~/anime-faces --grid sheet.png --grid-n 100",
    D.INSPECT,
    _inspect, data_dir_flag=False)

# ------------------------------------------------------------------------------------- train, sample, eval


def _train(kind: str) -> Callable[[dict, Context], Summary]:
    def run(v: dict, ctx: Context) -> Summary:
        from .trainers.options import TrainOptions
        from .trainers.train import RunChanged, launch

        shards = v["shards"] or ctx.current or ctx.shards
        if not shards:
            raise UserError("[train] needs shards: put it after [shard], or give shards = SPEC")
        out = Path(v["out"] or Path("runs") / (ctx.name if ctx.pipeline and ctx.name else kind))
        _refuse_overlap(D.TRAIN[kind], ctx, "out", out, [("shards", str(shards)), ("eval_real", v["eval_real"])])
        weights = v["inception_weights"]
        o = library_options(TrainOptions, {**v, "kind": kind, "shards": str(shards), "out": str(out),
                                           "inception_weights": str(weights) if weights else None,
                                           "allow_commands": ctx.allow_commands})
        try:  # the same command again continues its run, finished or not (trainers.train.continuation)
            return launch(o, progress=ctx.progress)
        except RunChanged as e:  # the command line's ways on, said as this pipeline takes them (errors.hint)
            if not ctx.pipeline:
                raise
            ways = ["give [train] the options it was trained with to continue it",
                    f"{hint('out', 'DIR')} to start a new run with these"]
            if e.resumable:  # the command line's rule (RunChanged): not for an option that reshapes the networks
                ways.append(f"{hint('resume', 'auto')} to continue it with these")
            raise UserError(f"[train] {e.run} was trained with {e.changed}: {', '.join(ways[:-1])}, or "
                            f"{ways[-1]}") from None

    return run


TRAIN = [
    Stage(("train", kind), f"Train {kind} on shards, streaming them: {BY_NAME[kind].paper}.",
          "\b\nExamples:\n"
          f"  gandata train {kind} --shards data/bitmoji/shards                      # one GPU (or the CPU)\n"
          f"  gandata train {kind} --shards data/bricklink/shards --gpus 4 --kimg 2000\n"
          f"  gandata train {kind} --shards 'img2dataset-out/{{00000..00007}}.tar' --out runs/x  # again: goes on\n"
          "\b\nSeveral machines: run on each  torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d\n"
          f"  --rdzv-endpoint=HOST:29500 -m gandata train {kind} --shards … --out …",
          D.TRAIN[kind], _train(kind), "train", ("kind", kind),
          brief=re.split(r"[:,] ", BY_NAME[kind].paper)[0])
    for kind in KINDS
]


def _sample(v: dict, ctx: Context) -> Summary:
    from .trainers.checkpoints import CHECKPOINT_RE
    from .trainers.sampling import sample

    run = Path(v["run"])  # the checkpoint it reads: the file, or any of the run folder's (a grid beside them is fine)
    _refuse_overlap(D.SAMPLE, ctx, "out", v["out"],
                    [("run", p) for p in (sorted(run.glob(CHECKPOINT_RE)) if run.is_dir() else [run])])

    return sample(v["run"], n=v["n"], out=v["out"], label=v["label"], device=v["device"], precision=v["precision"],
                  seed=v["seed"])


SAMPLE = Stage(
    ("sample",), "Draw a grid of samples from a trained generator (its EMA).",
    "\b\nExamples:\n"
    "  gandata sample runs/wgan-gp --n 64 --out grid.png\n"
    "  gandata sample runs/cdcgan/checkpoint-000500000.pt --label 3 --out hats.png",
    D.SAMPLE,
    _sample, data_dir_flag=False)


def _eval(v: dict, ctx: Context) -> Summary:
    from .trainers.metrics import evaluate

    target = v["target"] or ctx.run
    real = v["real"] or ctx.shards
    if not target or not real:
        raise UserError("[eval] needs a run and real shards: put it after [train] and [shard], or give target and "
                        "real")
    return evaluate(target, str(real), n=v["n"], metrics=v["metrics"], extractor=v["extractor"],
                    inception_weights=v["inception_weights"], n_real=v["n_real"], every=v["every"], batch=v["batch"],
                    seed=v["seed"], device=v["device"], progress=ctx.progress, allow_commands=ctx.allow_commands)


EVAL = Stage(
    ("eval",), "FID and KID of a trained generator against real shards (own Fréchet/KID code, pytorch-fid's "
    "Inception).",
    "\b\nExamples:\n"
    "  gandata eval runs/wgan-gp --real data/bitmoji/shards                   # newest checkpoint: fid10k, kid10k\n"
    "  gandata eval runs/wgan-gp --real data/bitmoji/shards --every --n 50000\n"
    "  gandata eval runs/cdcgan/checkpoint-000500000.pt --real data/bricklink/shards --metrics kid\n"
    "\b\nThe Inception weights come from --inception-weights, $GANDATA_INCEPTION_WEIGHTS or the cache\n"
    "(`gandata fetch weights inception`); nothing is downloaded here. FIDs compare only when the extractor,\n"
    "weights, resize, N real and N generated match: every result line records them (RUN/eval.jsonl).",
    D.EVAL,
    _eval, "eval", data_dir_flag=False)

def _export(v: dict, ctx: Context) -> Summary:
    from .export import export

    return export(v["shards"], v["out"], format=v["format"], split=v["split"], progress=ctx.progress,
                  allow_commands=ctx.allow_commands)


EXPORT = Stage(
    ("export",), "Write a shard set in the layouts other GAN code trains on: a StyleGAN2-ADA/StyleGAN3 dataset zip, "
    "or an ImageFolder tree.",
    "\b\nExamples:\n"
    "  gandata export data/anime/shards --out anime-64.zip            # train.py --data anime-64.zip (StyleGAN)\n"
    "  gandata export data/bricklink/shards --out lego.zip            # labelled: train.py --cond 1\n"
    "  gandata export data/anime/shards --format imagefolder --out anime-folder --split all",
    D.EXPORT,
    _export, data_dir_flag=False)

STAGES: list[Stage] = [*FETCH, *CROP, DEDUPE, SHARD, INSPECT, EXPORT, *TRAIN, SAMPLE, EVAL]
TABLES = ("fetch", "crop", "shard", "train", "eval")  # a pipeline's stages, in the order they run


def for_table(table: str, spec: dict, where: str) -> Stage:
    """The stage a pipeline table runs: the only one for [shard] and [eval]; chosen by ``source`` in [fetch] and by
    ``kind`` in [crop] and [train]."""
    candidates = [s for s in STAGES if s.table == table]
    if len(candidates) == 1 and candidates[0].select is None:
        return candidates[0]
    key = candidates[0].select[0]
    value = spec.get(key)
    for s in candidates:
        if s.select[1] == value:
            return s
    raise UserError(f"{where}: [{table}] needs {key} = one of {', '.join(s.select[1] for s in candidates)} "
                    f"(got {value!r})")
