"""Every stage, declared once: its command, help, options (:class:`~gandata.options.Opt`) and the one function that
turns checked option values into a library call — where output folders default, options are renamed to the
library's parameters, and the stage's typed summary comes back. The command line (:mod:`gandata.cli`) and pipeline
files (:mod:`gandata.pipeline`) are built from this table; neither decides anything of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError
from .options import LIST, PATH_TYPE, Opt
from .storage import is_url
from .summary import Summary
from .trainers.kinds import AUTO_AUGMENT_BELOW, BY_NAME, CRITIC_CONDITIONING, KINDS, RESOLUTIONS, parse_policy

RESIZE_MODES = ("center-crop", "pad", "keep-ratio")  # images.RESIZE_MODES (a test holds them equal)


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
    options: tuple[Opt, ...]
    run: Callable[[dict[str, Any], Context], Summary]
    table: str | None = None  # the pipeline table that runs it (None: command line only)
    select: tuple[str, str] | None = None  # within a table, (key, value) choosing this stage: ("source", "bitmoji")
    data_dir_flag: bool = True  # --data-dir
    brief: str | None = None  # the line a command list shows (default: from the help, see short)

    @property
    def name(self) -> str:
        return " ".join(self.command)

    @property
    def short(self) -> str:
        """The one line a command list shows: the help's first sentence, whole (click would cut it at 45
        characters, mid-word), or up to its colon."""
        if self.brief:
            return self.brief
        first = self.help.split(". ")[0].rstrip(".")
        return first.split(": ")[0] if len(first) > 80 else first


SEED_MAX = 2**32 - 1  # numpy's seeds; torch's and Python's take more


NAME_MAX = 64  # a dataset's or shard set's name: folders and tar names are made of it


def _name(value: str) -> None:
    import re

    if not re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}", value):
        raise ValueError(f"use 1-{NAME_MAX} letters, digits, '_', '-' or '.', starting with a letter or digit "
                         f"(got {value[:40]!r}{'…' if len(value) > 40 else ''})")


def _resolution(value: int) -> None:
    if value not in RESOLUTIONS:
        raise ValueError(f"the trainers build {', '.join(map(str, RESOLUTIONS))} px images (got {value})")


def _color(value: str) -> None:
    from .images import parse_color  # not at import: `gandata --help` should not load OpenCV

    parse_color(value)


# ------------------------------------------------------------------------------------------ shared options

def _out(where: str) -> Opt:
    return Opt("out", PATH_TYPE, output=True,
        help=f"Output folder (default {where}); or s3://bucket/prefix (written to a local "
               "staging folder, then published: images, then the manifest).")


BASE_URL = Opt("base_url", str, metavar="URL",
               help="Replace the scheme and host of every address of the source (a mirror, a test "
               "server).")
CONCURRENCY = Opt("concurrency", int, min=1, max=4096, help="Requests in flight (default: the source's).")
RATE = Opt("rate", float, min=0, max=10_000, help="Requests per second per host (default: the source's; 0: no pacing).")
RETRIES = Opt("retries", int, min=0, max=100, help="Further tries after a 429, 5xx, timeout or broken body.")
TIMEOUT = Opt("timeout", float, above=0, max=3600, metavar="SECONDS",
              help="Seconds per request, connect and read together.")
MAX_WAIT = Opt("max_wait", float, min=0, max=86_400, metavar="SECONDS",
               help="Longest Retry-After to wait out (default 900 s, or the manifest's "
               "max_wait); a URL asked to wait longer is tried again at the end of the run, then left to a re-run.")
MEMORY = Opt("memory", int, min=1, max=65_536, metavar="MIB",
             help="MiB that image bodies being read and checked may hold at once, all requests "
             "together (default 512); a request waits for room.")
WORK_MEMORY = Opt("memory", int, 1024, min=64, max=1 << 20, metavar="MIB",
                  help="MiB that decoded images may hold at once, all workers together; "
                  "a large image waits for room, and one larger than this runs alone.")
DURABILITY = Opt("durability", str, choices=("batch", "file", "none"),
                 help="batch (default: files fsynced in groups before their manifest rows), file (each file "
                 "fsynced as written) or none (no fsync: fastest; a power loss may leave a listed file damaged).")
RUN_ON = Opt("engine", str, "local", choices=("local", "ray"),
             help="local (threads in this process) or ray (tasks on the Ray cluster at --ray-address, else "
             "$RAY_ADDRESS, else a local one; pip install 'gandata[ray]').")
RAY_ADDRESS = Opt("ray_address", str, metavar="HOST:PORT",
                  help="--engine ray: the cluster to join (default $RAY_ADDRESS, else a new "
                  "local Ray).")
TASK_SIZE = Opt("task_size", int, 2000, min=1, max=10_000_000,
                help="--engine ray: samples per task (a tar is always one task).")
LIMIT = Opt("limit", int, min=1, max=10**9, help="Stop when the dataset holds this many images.")
WORKERS = Opt("workers", int, 0, min=0, max=1024, help="Worker threads (0: one per core).")
DEVICE = Opt("device", str, "auto", choices=("auto", "cpu", "cuda"), help="Where to run.")
PRECISION = Opt("precision", str, "fp32", choices=("fp32", "bf16", "fp16"),
                help="bf16 or fp16: the forward passes in reduced precision (autocast; fp16 with gradient scaling); "
                "weights and checkpoints stay fp32.")
INCEPTION_WEIGHTS = Opt("inception_weights", PATH_TYPE,
                        help="The FID Inception weight file (else $GANDATA_INCEPTION_WEIGHTS, else the cache).")
EXTRACTOR_HELP = "inception (the FID standard), tiny-random (tests; meaningless numbers), module:function or " \
                 "file.py:function."


def _overrides(v: dict, keys: tuple[str, ...] = ("concurrency", "rate", "retries", "timeout", "max_wait", "memory",
                                               "durability")) -> dict:
    """The fetch engine's options a stage was given (declared names, the engine's own)."""
    return {k: v[k] for k in keys}


def library_options(cls: type, v: dict, **more: Any) -> Any:
    """A library's options dataclass from the checked values: its fields carry the declared names, so nothing is
    renamed on the way."""
    from dataclasses import fields

    return cls(**{f.name: v[f.name] for f in fields(cls) if f.name in v}, **more)


def _base_url(v: dict, ctx: Context) -> str | None:
    return v.get("base_url") or ctx.base_url


def _dataset_out(v: dict, ctx: Context, dataset: str, stage: str) -> Path | str:
    return v["out"] or ctx.data_dir / (ctx.dataset or dataset) / stage


def _into(out: Path | str, write: Callable[[Path], Summary]) -> Summary:
    """Run a stage that writes a dataset folder. For an object-store ``--out`` (``s3://…``) it writes a local staging
    folder (``$GANDATA_CACHE/staged-datasets``), which is then published to the store; the summary names the store."""
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
        manifest=v["manifest"], base_url=_base_url(v, ctx), overrides=_overrides(v), progress=ctx.progress))


def _fetch_urls(v: dict, ctx: Context) -> Summary:
    from .datasets import make_key
    from .sources.urls import fetch_urls

    name = v.get("name") or ctx.dataset
    if not name:
        raise UserError("--name is required: the dataset's name (images go to DATA/NAME/raw)")
    if make_key(name) != name:
        raise UserError(f"--name {name!r}: use lower-case letters, digits, '_' and '-'")
    if v["url_list"] is None:
        raise UserError("[fetch] source = urls needs url_list = FILE")
    url_list = v["url_list"] if is_url(v["url_list"]) else Path(v["url_list"]).expanduser()
    return _into(v["out"] or ctx.data_dir / name / "raw", lambda out: fetch_urls(
        url_list, name, out, url_col=v["url_col"], fmt=v["format"], limit=v["limit"], base_url=_base_url(v, ctx),
        overrides=_overrides(v), progress=ctx.progress, engine=v["engine"], ray_address=v["ray_address"],
        retry_failed=v["retry_failed"], host_groups=v["host_groups"], workers=v["workers"]))


def _fetch_bricklink(v: dict, ctx: Context) -> Summary:
    from .sources.bricklink import fetch_bricklink

    return _into(_dataset_out(v, ctx, "bricklink", "raw"), lambda out: fetch_bricklink(
        out, catalog_file=v["catalog_file"],
        categories_file=v["categories_file"], categories=v["categories"], limit=v["limit"],
        refresh_list=v["refresh_list"], manifest=v["manifest"], base_url=_base_url(v, ctx), delay=v["delay"],
        concurrency=v["concurrency"], rate=v["rate"],
        overrides=_overrides(v, ("retries", "timeout", "max_wait", "memory", "durability")), progress=ctx.progress))


def _fetch_rebrickable(v: dict, ctx: Context) -> Summary:
    from .sources.rebrickable import fetch_rebrickable

    return _into(_dataset_out(v, ctx, "rebrickable", "raw"), lambda out: fetch_rebrickable(
        out, csv=v["csv"], limit=v["limit"], manifest=v["manifest"], base_url=_base_url(v, ctx),
        overrides=_overrides(v), progress=ctx.progress))


def _fetch_weights(v: dict, ctx: Context) -> Summary:
    from .trainers import inception
    from .trainers.metrics import fetch_weights

    return fetch_weights(v["url"] or inception.WEIGHTS_URL, v["out"], progress=ctx.progress)


ENGINE = (BASE_URL, CONCURRENCY, RATE, RETRIES, TIMEOUT, MAX_WAIT, MEMORY, DURABILITY)

FETCH = [
    Stage(("fetch", "bitmoji"), "Bitmoji avatars from the public trait-preview (or comic) render URLs. Research use "
          "only.",
          "\b\nExamples:\n"
          "  gandata fetch bitmoji --count 200000                  # random avatar heads → data/bitmoji/raw\n"
          "  gandata fetch bitmoji --count 5000 --view body --seed 7\n"
          "  gandata fetch bitmoji --mode comics --avatar-ids ids.txt --count 20000\n"
          "\b\nThe images are Bitmoji artwork: for research use only. Keep them local and do not redistribute them.\n"
          "Addresses and politeness settings are in the bitmoji manifest (gandata/manifests/bitmoji.toml).",
          (Opt("count", int, required=True, min=1, max=10**9,
               help="Distinct images the dataset should hold, counting earlier "
               "runs."),
           _out("DATA/bitmoji/raw"),
           Opt("mode", str, "avatars", choices=("avatars", "comics"),
               help="avatars (random avatars from the trait catalogue) or comics."),
           Opt("view", str, "head", choices=("head", "body"), help="avatars: the head or the whole body."),
           Opt("seed", int, 0, min=0, max=SEED_MAX,
               help="Seed of the sequence of avatars (or of comic × avatar pairs)."),
           Opt("traits", PATH_TYPE, help="Local trait catalogue JSON (default: fetched and cached)."),
           Opt("templates", PATH_TYPE, help="Local templates catalogue JSON for --mode comics."),
           Opt("avatar_ids", PATH_TYPE, help="comics: file of avatar ids, one per line."),
           Opt("manifest", PATH_TYPE, help="Another bitmoji manifest (default: the one installed with gandata)."),
           *ENGINE),
          _fetch_bitmoji, "fetch", ("source", "bitmoji")),
    Stage(("fetch", "urls"), "Images from your own list of URLs; every other column is kept in the record.",
          "\b\nExamples:\n"
          "  gandata fetch urls anime.txt --name anime              # one URL per line → data/anime/raw\n"
          "  gandata fetch urls list.csv --name anime --url-col image_url --rate 5\n"
          "  gandata fetch urls list.jsonl --name anime --limit 10000\n"
          "  gandata fetch urls big.txt --name anime --engine ray    # hosts dealt to Ray tasks\n"
          "  gandata fetch urls anime.txt --name anime --retry-failed   # only the timeouts, 5xx, 429s of before",
          (Opt("url_list", str, required=True, argument=True, help="A .txt (one URL per line), .csv/.tsv or "
               ".jsonl list (a path, or s3://… with the s3 extra)."),
           Opt("name", str, required=True, pipeline=False, validate=_name,
               help="Dataset name: images go to DATA/NAME/raw (in a pipeline: its dataset)."),
           _out("DATA/NAME/raw"),
           Opt("url_col", str, "url", help="Column (csv/tsv) or field (jsonl) holding the URL."),
           Opt("format", str, choices=("txt", "csv", "tsv", "jsonl"), help="The list's format (default: from the "
               "extension)."),
           LIMIT, *ENGINE,
           Opt("retry_failed", bool, False, help="Fetch only the URLs whose last try failed for a reason worth "
               "another (timeouts, resets, 5xx, 429; not 404 or a refused body), as failures.jsonl lists them."),
           RUN_ON, RAY_ADDRESS,
           Opt("host_groups", int, 64, min=1, max=65_536,
               help="--engine ray: tasks the hosts are dealt to (each host is "
               "fetched by one task, so --rate and --concurrency hold per host for the whole cluster)."),
           Opt("workers", int, 0, min=0, max=1024,
               help="--engine ray: tasks at once (0: one per CPU of the cluster).")),
          _fetch_urls, "fetch", ("source", "urls")),
    Stage(("fetch", "bricklink"), "LEGO minifigure images from BrickLink, with item numbers, names and categories.",
          "\b\nExamples:\n"
          "  gandata fetch bricklink --catalog-file Minifigures.txt        # your catalog download: no crawling\n"
          "  gandata fetch bricklink --categories 65,746 --limit 2000      # crawl two categories' listing pages\n"
          "  gandata fetch bricklink                                       # the whole catalogue (18 000+ figures)\n"
          "\b\nBrickLink's images are for research use only: keep them local, do not redistribute them.\n"
          "Addresses and politeness settings are in the bricklink manifest (gandata/manifests/bricklink.toml).",
          (_out("DATA/bricklink/raw"),
           Opt("catalog_file", PATH_TYPE, help="BrickLink's tab-delimited minifig catalog download; preferred over "
               "crawling."),
           Opt("categories_file", PATH_TYPE, help="BrickLink's categories download, to resolve sub-category ids in "
               "a catalog file."),
           Opt("categories", str, help="Only these categories: ids or dotted catStrings, e.g. 65,746 or 65.257."),
           LIMIT,
           Opt("delay", float, min=0, max=3600, metavar="SECONDS",
               help="Seconds between two listing-page requests (default 3)."),
           Opt("refresh_list", bool, False, help="Read the listing pages again instead of the ones saved by "
               "earlier runs."),
           Opt("manifest", PATH_TYPE, help="Another bricklink manifest (default: the one installed with gandata)."),
           BASE_URL,
           Opt("concurrency", int, min=1, max=4095,  # one slot more for the listing pages: the engine's 4096
               help="Image requests in flight (default: the manifest's)."),
           Opt("rate", float, min=0, max=10_000, flags=("--rate", "--image-rate"),
               help="Image requests per second (default 4; 0: no pacing); listing pages follow --delay."),
           RETRIES, TIMEOUT, MAX_WAIT, MEMORY, DURABILITY),
          _fetch_bricklink, "fetch", ("source", "bricklink")),
    Stage(("fetch", "rebrickable"), "LEGO minifigure images listed in Rebrickable's bulk CSV, with names and part "
          "counts.",
          "\b\nExamples:\n"
          "  gandata fetch rebrickable                          # Rebrickable's minifigs.csv.gz, fetched and cached\n"
          "  gandata fetch rebrickable --csv minifigs.csv.gz --limit 5000",
          (_out("DATA/rebrickable/raw"),
           Opt("csv", PATH_TYPE, help="A local minifigs.csv or minifigs.csv.gz."),
           LIMIT,
           Opt("manifest", PATH_TYPE, help="Another rebrickable manifest (default: the one installed with gandata)."),
           *ENGINE),
          _fetch_rebrickable, "fetch", ("source", "rebrickable")),
    Stage(("fetch", "weights"), "Download a weight file that metrics need, resuming a partial download, and verify "
          "its checksum.",
          "\b\nExample:\n  gandata fetch weights inception      # pytorch-fid's FID Inception file → the cache\n"
          "\b\nOffline machines: download the file elsewhere and pass it with --inception-weights FILE\n"
          "(or set GANDATA_INCEPTION_WEIGHTS).",
          (Opt("what", str, required=True, argument=True, choices=("inception",),
               help="inception: the FID Inception-v3 weights (2015-12-05)."),
           Opt("url", str, help="Download from this address instead (a mirror)."),
           Opt("out", PATH_TYPE, output=True, help="Write here instead of the cache.")),
          _fetch_weights, data_dir_flag=False),
]

# --------------------------------------------------------------------------------------------------- crop


def _crop(lego: bool) -> Callable[[dict, Context], Summary]:
    def run(v: dict, ctx: Context) -> Summary:
        from .crop import CropOptions, crop

        dataset = "bricklink" if lego else "anime"
        src = v["src"] or ctx.current or ctx.data_dir / (ctx.dataset or dataset) / "raw"
        options = library_options(CropOptions, v, lego=lego)
        return _into(_dataset_out(v, ctx, dataset, "faces"), lambda out: crop(
            src, out, options, cascade=v["cascade"], base_url=_base_url(v, ctx), debug_grid=v["debug_grid"],
            progress=ctx.progress, engine=v["engine"], ray_address=v["ray_address"], task_size=v["task_size"]))

    return run


def _crop_options(lego: bool) -> tuple[Opt, ...]:
    return (
        Opt("src", str, flags=("--src",), help="A dataset folder, a folder of images or shards (default "
            f"DATA/{'bricklink' if lego else 'anime'}/raw; in a pipeline: what the stage before wrote)."),
        _out(f"DATA/{'bricklink' if lego else 'anime'}/faces"),
        Opt("size", int, 128, min=8, max=4096, help="Output side in pixels."),
        Opt("margin", float, 0.2, min=0, max=2, help="Added to each side of the face box, as a fraction of it."),
        Opt("edge", str, "pad", choices=("pad", "shift", "drop"),
            help="Crops running off the image: pad, shift (move inside) or drop."),
        Opt("pad_color", str, "white", validate=_color, help="Colour of --edge pad."),
        Opt("background", str, "white", validate=_color, help="Colour that transparency is composited onto."),
        Opt("min_face", int, 24 if lego else 64, min=1, max=1 << 16,
            help="Faces smaller than this many pixels (in the source image) are dropped."),
        Opt("scale_factor", float, 1.1, above=1, max=4, help="Detector: scale step between pyramid levels."),
        Opt("min_neighbors", int, 5, min=0, max=1000, help="Detector: overlapping detections needed to keep a face."),
        Opt("min_size", int, 24, min=1, max=4096, help="Detector: smallest window in pixels."),
        Opt("equalize", bool, True, help="Detector: equalise the grey image's histogram first."),
        Opt("detect_size", int, 1024, min=64, max=1 << 15,
            help="Detect on a copy scaled down to this long side when larger."),
        Opt("cascade", PATH_TYPE, help="A local lbpcascade_animeface.xml (default: downloaded once, verified, "
            "cached)."),
        WORKERS, WORK_MEMORY, RUN_ON, RAY_ADDRESS, TASK_SIZE,
        Opt("debug_grid", PATH_TYPE, output=True,
            help="Write a contact sheet of source images with their boxes drawn."),
        Opt("format", str, "png", choices=("png", "jpg", "webp"), help="Format of the crops."),
        *((Opt("locator", str, "auto", choices=("auto", "layout"),
               help="auto (the cascade, then the figure's layout) or layout (the layout only: no cascade, works "
                    "offline)."),) if lego else ()),
        BASE_URL,
    )


CROP = [
    Stage(("crop", "anime-faces"), "Anime faces, found with the lbpcascade_animeface detector (reference settings "
          "by default).",
          "\b\nExamples:\n"
          "  gandata crop anime-faces                               # data/anime/raw → data/anime/faces\n"
          "  gandata crop anime-faces --src ~/illustrations --size 96 --margin 0.25\n"
          "  gandata crop anime-faces --debug-grid check.png --min-face 64",
          _crop_options(False), _crop(False), "crop", ("kind", "anime-faces")),
    Stage(("crop", "lego-faces"), "LEGO minifigure heads: the anime-face cascade where it finds one, else the "
          "figure's layout.",
          "\b\nExamples:\n"
          "  gandata crop lego-faces                                # data/bricklink/raw → data/bricklink/faces\n"
          "  gandata crop lego-faces --size 64 --debug-grid heads.png\n"
          "  gandata crop lego-faces --locator layout               # offline: no cascade download",
          _crop_options(True), _crop(True), "crop", ("kind", "lego-faces")),
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
    (Opt("src", LIST, required=True, argument=True, help="Dataset folders, image folders or shards."),
     Opt("threshold", int, 8, min=0, max=32, help="Bits of gandata-phash-v2 that may differ."),
     Opt("report", PATH_TYPE, output=True, help="Write every clustered sample as JSONL (kept or not, and why)."),
     Opt("grid", PATH_TYPE, output=True, help="Write a contact sheet of the largest clusters, one a row."), WORK_MEMORY,
     RUN_ON, RAY_ADDRESS, TASK_SIZE,
     Opt("work", str, output=True,
         help="--engine ray: where tasks leave their markers, so a re-run hashes only what is missing "
         "(default: the cache; on a cluster of several machines, a shared folder or s3://…).")),
    _dedupe, data_dir_flag=False)

SHARD = Stage(
    ("shard",), "Dedupe, resize, split and write WebDataset shards plus dataset.json.",
    "\b\nExamples:\n"
    "  gandata shard                      # every dataset under ./data, each into DATA/<dataset>/shards\n"
    "  gandata shard ~/anime-faces --name anime --size 64\n"
    "  gandata shard data/bricklink/raw --label-field category --size 128 --resize pad",
    (Opt("src", LIST, argument=True, help="Dataset folders, image folders or .tar shards (default: every dataset "
         "under the data dir; in a pipeline: what the stage before wrote)."),
     Opt("out", str, output=True,
         help="Output folder, or an object-store prefix: s3://bucket/prefix, gs://… (pip install "
         "'gandata[s3]'); default DATA/<name>/shards."),
     Opt("name", str, validate=_name, help="Shard name prefix (default: the dataset's name)."),
     Opt("size", int, 64, min=1, max=4096, help="Output side in pixels."),
     Opt("resize", str, "center-crop", choices=RESIZE_MODES,
         help="center-crop, pad or keep-ratio (smallest side = size)."),
     Opt("format", str, "png", choices=("png", "jpg", "webp"), help="Image format in the shards."),
     Opt("quality", int, 95, min=1, max=100, help="JPEG/WebP quality."),
     Opt("background", str, "white", validate=_color, help="Colour that transparency is composited onto."),
     Opt("pad_color", str, "white", validate=_color, help="Padding colour for --resize pad."),
     Opt("val_fraction", float, 0.02, min=0, below=1, help="Share of samples in the val split (fixed per key)."),
     Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed of the shuffle."),
     Opt("maxcount", int, 10000, min=1, max=10_000_000, help="At most this many samples per shard."),
     Opt("min_shards", int, 8, min=1, max=100_000, help="Train shards to aim for when data allows (64+ per shard)."),
     Opt("dedupe", str, "exact", choices=("exact", "near", "none"),
         help="exact (identical pixels), near (perceptual hash within --threshold) or none."),
     Opt("threshold", int, 8, min=0, max=32, help="--dedupe near: bits of gandata-phash-v2 that may differ."),
     Opt("label_field", str, help="Record field whose values become class labels (.cls)."),
     Opt("draft", bool, True, help="Decode JPEGs at the smallest DCT scale that keeps twice the output size (fast; "
         "0.4/255 from a whole decode on average); --no-draft decodes them whole."),
     Opt("workers", int, 0, min=0, max=1024,
         help="Threads for decoding and resizing (0: one per core); --engine ray: tasks "
         "at once (0: one per CPU of the cluster)."), WORK_MEMORY, RUN_ON, RAY_ADDRESS, TASK_SIZE,
     Opt("keep_work", bool, False, help="Keep OUT/.work (the processed images, Ray's parts and markers) after "
         "success, so that a run with other split, order or label options reuses every image; removed by default.")),
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
    (Opt("path", str, required=True, argument=True,
         help="A dataset folder, a folder of images, or shards (folder, .tar, brace pattern)."),
     Opt("grid", PATH_TYPE, output=True, help="Write a contact sheet PNG of samples drawn at random."),
     Opt("grid_n", int, 64, min=1, max=10_000, help="Samples on the contact sheet."),
     Opt("cell", int, 128, min=16, max=1024, help="Contact sheet cell size in pixels."),
     Opt("label_field", str, help="Count the values of this record field as labels."),
     Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed for picking the contact sheet's samples.")),
    _inspect, data_dir_flag=False)

# ------------------------------------------------------------------------------------- train, sample, eval


def _train(kind: str) -> Callable[[dict, Context], Summary]:
    def run(v: dict, ctx: Context) -> Summary:
        from .trainers.options import TrainOptions, changed_since
        from .trainers.train import TrainSummary, launch

        shards = v["shards"] or ctx.current or ctx.shards
        if not shards:
            raise UserError("[train] needs shards: put it after [shard], or give shards = SPEC")
        out = Path(v["out"] or Path("runs") / (ctx.name if ctx.pipeline and ctx.name else kind))
        resume = v["resume"] if v["resume"] is not None or not ctx.pipeline else "auto"
        weights = v["inception_weights"]
        o = library_options(TrainOptions, {**v, "kind": kind, "shards": str(shards), "out": str(out), "resume": resume,
                                           "inception_weights": str(weights) if weights else None,
                                           "allow_commands": ctx.allow_commands})
        o.resolved()
        changed = changed_since(o, out) if ctx.pipeline else None
        if changed:
            raise UserError(f"[train] {out} was trained with {changed}; give [train] out = a new folder to train "
                            f"with these options, or delete {out} to train it again")
        if ctx.pipeline and (out / "summary.json").exists():
            done = TrainSummary.read(out)
            if done.kind == kind and done.kimg >= o.kimg:
                done.already_trained = True
                return done
        return launch(o, progress=ctx.progress)

    return run


def _train_options(kind: str) -> tuple[Opt, ...]:
    k = BY_NAME[kind]

    def only(applies: bool) -> dict:  # an option the kind has: offered on the command line and in files
        return {"cli": applies, "pipeline": applies}

    return (
        Opt("shards", str, required=True, help="A shard folder (with dataset.json), brace pattern, URL or pipe: "
            "command (in a pipeline: the [shard] stage's folder)."),
        Opt("out", PATH_TYPE, output=True,
            help=f"Run folder (default runs/{kind}; in a pipeline runs/<pipeline name>)."),
        Opt("kimg", float, 1000.0, above=0, max=10**7, help="Length: thousands of real images shown to the critic."),
        Opt("batch", int, min=1, max=65_536, help=f"Global batch, split over the GPUs (default {k.batch})."),
        Opt("lr", float, above=0, max=10, help=f"Learning rate of G and D (default {k.lr:g}, {k.optimizer}"
            + (f" betas {k.betas})." if k.betas else ").")),
        Opt("n_critic", int, min=1, max=1000, help=f"Critic steps per generator step (default {k.n_critic})."),
        Opt("critic_norm", str, choices=("batch", "group", "none"),
            help=f"Critic normalisation (default {k.critic_norm})."),
        Opt("g_norm", str, "batch", choices=("batch", "none"), help="Generator normalisation."),
        Opt("critic_cond", str, "both", choices=CRITIC_CONDITIONING, **only(k.conditional),
            help="How the critic sees the label: as input planes, through a projection head, or both."),
        Opt("nz", int, 100, min=1, max=4096, help="Latent size."),
        Opt("ngf", int, 64, min=1, max=1024, help="Generator width."),
        Opt("ndf", int, 64, min=1, max=1024, help="Critic width."),
        Opt("gp_lambda", float, 10.0, min=0, max=10_000, **only(k.penalty == "gp"),
            help="Weight of the gradient penalty."),
        Opt("clip", float, 0.01, above=0, max=100, **only(k.penalty == "clip"),
            help="Critic weights are clipped to ±clip."),
        Opt("critic_warmup", bool, True, **only(k.warmup),
            help="100 critic steps for the first 25 G steps and every 500th."),
        Opt("label_smoothing", float, min=0, below=0.5, **only(k.has_targets),
            help="One-sided label smoothing: the critic's target for real images is 1 minus this (default "
            f"{k.label_smoothing:g}; 0: off)."),
        Opt("ema_kimg", float, 10.0, min=0, max=100_000, help="Half-life of the generator's EMA, in kimg."),
        Opt("ema_rampup", float, 0.05, min=0, max=1,
            help="Early on, the EMA half-life is at most this share of the images "
            "seen."),
        Opt("snap_kimg", float, 50.0, above=0, max=10**7, help="Sample grid and checkpoint every this many kimg."),
        Opt("log_kimg", float, 1.0, above=0, max=10**7, help="Metrics every this many kimg."),
        Opt("seed", int, 0, min=0, max=SEED_MAX,
            help="Seed (each rank derives its own); the same seed gives the same run."),
        Opt("workers", int, 2, min=0, max=64, help="Data-loader worker processes per GPU."),
        Opt("shuffle", int, 2000, min=1, max=100_000, help="Shuffle buffer of each loader worker, in samples."),
        Opt("threads", int, 0, min=0, max=1024, help="CPU threads per process (0: fitted to the cores and the load; "
            "OMP_NUM_THREADS also works)."),
        DEVICE, PRECISION,
        Opt("compile", bool, False, help="torch.compile the generator and the critic (a gradient-penalty critic stays "
            "eager); falls back with one line where the compiler is missing."),
        Opt("augment", str, "auto", choices=("auto", "diffaug", "none"),
            help="Differentiable augmentation of every image the critic sees (DiffAugment): auto (on for a train "
            f"split under {AUTO_AUGMENT_BELOW} images), diffaug or none."),
        Opt("augment_policy", str, "color,translation,cutout", validate=parse_policy,
            help="What --augment diffaug does: color, translation and cutout, separated by commas."),
        Opt("resume", str, help="auto (the newest checkpoint in --out) or a checkpoint file (in a pipeline: auto)."),
        Opt("gpus", int, 1, min=1, max=1024,
            help="Processes to launch with torchrun (GPUs; on --device cpu, CPU processes)."),
        Opt("resolution", int, validate=_resolution, help="Image side: 32, 64 or 128 (default: the shards')."),
        Opt("n_classes", int, min=2, max=100_000, **only(k.conditional),
            help="Classes (default: the shards' labels)."),
        Opt("grid", int, 64, min=1, max=1024, help="Samples on each snapshot's grid."),
        Opt("eval", str, help="Metrics at every snapshot, e.g. fid,kid (off by default; needs the Inception weights, "
            "see gandata eval)."),
        Opt("eval_real", str, help="Real set for --eval (default: --shards)."),
        Opt("eval_n", int, 10_000, min=2, max=1_000_000, help="Generated images per --eval."),
        Opt("eval_extractor", str, "inception", help="Feature extractor for --eval: " + EXTRACTOR_HELP),
        INCEPTION_WEIGHTS,
    )


TRAIN = [
    Stage(("train", kind), f"Train {kind} on shards, streaming them: {BY_NAME[kind].paper}.",
          "\b\nExamples:\n"
          f"  gandata train {kind} --shards data/bitmoji/shards                      # one GPU (or the CPU)\n"
          f"  gandata train {kind} --shards data/bricklink/shards --gpus 4 --kimg 2000\n"
          f"  gandata train {kind} --shards 'data/anime/shards/anime-train-{{000000..000007}}.tar' --resume auto\n"
          "\b\nSeveral machines: run on each  torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d\n"
          f"  --rdzv-endpoint=HOST:29500 -m gandata train {kind} --shards … --out …",
          _train_options(kind), _train(kind), "train", ("kind", kind),
          brief=re.split(r"[:,] ", BY_NAME[kind].paper)[0])
    for kind in KINDS
]


def _sample(v: dict, ctx: Context) -> Summary:
    from .trainers.sampling import sample

    return sample(v["run"], n=v["n"], out=v["out"], label=v["label"], device=v["device"], precision=v["precision"],
                  seed=v["seed"])


SAMPLE = Stage(
    ("sample",), "Draw a grid of samples from a trained generator (its EMA).",
    "\b\nExamples:\n"
    "  gandata sample runs/wgan-gp --n 64 --out grid.png\n"
    "  gandata sample runs/cdcgan/checkpoint-000500000.pt --label 3 --out hats.png",
    (Opt("run", PATH_TYPE, required=True, argument=True, help="A run folder (its newest checkpoint) or a checkpoint "
         "file."),
     Opt("n", int, 64, min=1, max=10_000, help="Images in the grid."),
     Opt("out", PATH_TYPE, Path("samples.png"), output=True, help="The PNG to write."),
     Opt("label", int, min=0, max=100_000, help="cdcgan: draw only this class (default: one class per row)."),
     Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed of the latent vectors."),
     DEVICE, PRECISION),
    _sample, data_dir_flag=False)


def _eval(v: dict, ctx: Context) -> Summary:
    from .trainers.metrics import evaluate

    target = v["target"] or ctx.run
    real = v["real"] or ctx.shards
    if not target or not real:
        raise UserError("[eval] needs a run and real shards: put it after [train] and [shard], or give target and "
                        "real")
    return evaluate(target, str(real), n=v["n"], metrics=v["metrics"], extractor=v["extractor"],
                    weights=v["inception_weights"], n_real=v["n_real"], every=v["every"], batch=v["batch"],
                    seed=v["seed"], device=v["device"], progress=ctx.progress, commands=ctx.allow_commands)


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
    (Opt("target", PATH_TYPE, required=True, argument=True, output=True,
        help="A run folder (its newest checkpoint; all with "
         "--every) or a checkpoint (in a pipeline: the [train] stage's run)."),
     Opt("real", str, required=True, help="The real images: a shard folder (its train split), brace pattern or URL "
         "(in a pipeline: the [shard] stage's folder)."),
     Opt("n", int, 10_000, min=2, max=1_000_000, help="Generated images."),
     Opt("metrics", str, "fid,kid", help="fid, kid or fid,kid."),
     Opt("n_real", int, min=2, max=10**9, help="Use only the first N real images (default: all)."),
     Opt("every", bool, False, help="Evaluate every checkpoint of the run (those done before are reused)."),
     INCEPTION_WEIGHTS,
     Opt("extractor", str, "inception", help=EXTRACTOR_HELP),
     Opt("batch", int, 64, min=1, max=4096, help="Images per forward pass."),
     Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed of the latent vectors and KID subsets."),
     DEVICE),
    _eval, "eval", data_dir_flag=False)

def _export(v: dict, ctx: Context) -> Summary:
    from .export import export

    return export(v["shards"], v["out"], fmt=v["format"], split=v["split"], progress=ctx.progress,
                  commands=ctx.allow_commands)


EXPORT = Stage(
    ("export",), "Write a shard set in the layouts other GAN code trains on: a StyleGAN2-ADA/StyleGAN3 dataset zip, "
    "or an ImageFolder tree.",
    "\b\nExamples:\n"
    "  gandata export data/anime/shards --out anime-64.zip            # train.py --data anime-64.zip (StyleGAN)\n"
    "  gandata export data/bricklink/shards --out lego.zip            # labelled: train.py --cond 1\n"
    "  gandata export data/anime/shards --format imagefolder --out anime-folder --split all",
    (Opt("shards", str, required=True, argument=True, help="A shard folder (with dataset.json), a tar, a brace "
         "pattern or a URL."),
     Opt("out", PATH_TYPE, required=True, output=True, help="stylegan: the .zip to write; imagefolder: the folder."),
     Opt("format", str, "stylegan", choices=("stylegan", "imagefolder"),
         help="stylegan (dataset_tool.py's zip, labels in dataset.json) or imagefolder (a folder per class)."),
     Opt("split", str, "train", choices=("train", "val", "all"), help="Which split of the set.")),
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


def declared(*command: str) -> tuple[Opt, ...]:
    """The declared options of a command (``declared("shard")``, ``declared("train", "wgan-gp")``): what a library
    call's options are checked against (:func:`gandata.options.check_declared`)."""
    for s in STAGES:
        if s.command == command:
            return s.options
    raise KeyError(command)
