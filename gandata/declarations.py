"""Every command's options, declared once (type, default, range or choices, help) with the rules between them, and
the one rule for names. This is the low layer of the front end's contract: it imports no stage, no command line and
no module that does work, so the library (crop, shard, the fetch engine, the sources) and the trainers take their
defaults and checks from here, while the stage table (:mod:`gandata.stages`), the command line
(:mod:`gandata.cli`), pipeline files (:mod:`gandata.pipeline`) and the demo stand on top of it.

``declared("shard")`` / ``declared("train", "wgan-gp")`` is a command's :class:`~gandata.options.Declaration`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .options import COLOR, LIST, PATH_TYPE, Declaration, Opt
from .storage import unfetchable
from .trainers.kinds import (
    AUTO_AUGMENT_BELOW,
    BY_NAME,
    CRITIC_CONDITIONING,
    KINDS,
    RESOLUTIONS,
    parse_metrics,
    parse_policy,
)

RESIZE_MODES = ("center-crop", "pad", "keep-ratio")  # images.RESIZE_MODES (a test holds them equal)
SEED_MAX = 2**32 - 1  # numpy's seeds; torch's and Python's take more
NAME_MAX = 64  # a dataset's or shard set's name: folders and tar names are made of it
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}")


def check_name(value: str) -> str:
    """The one rule for a dataset's or shard set's name (``--name``, ``[pipeline] dataset`` and ``name``): 1-64
    letters, digits, '_', '-' or '.', starting with a letter or digit — a folder name and a tar prefix, never a
    path. ValueError with the reason."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = repr(value)[:40] + ("…" if len(repr(value)) > 40 else "")
        raise ValueError(f"use 1-{NAME_MAX} letters, digits, '_', '-' or '.', starting with a letter or digit "
                         f"(got {shown})")
    return value


def clean_name(base: str, empty: str = "dataset") -> str:
    """A name that :func:`check_name` accepts, made from a folder's or file's name (``empty`` when nothing is
    left)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)[:NAME_MAX].strip("-.").lstrip("_") or empty


def _resolution(value: int) -> None:
    if value not in RESOLUTIONS:
        raise ValueError(f"the trainers build {', '.join(map(str, RESOLUTIONS))} px images (got {value})")


def _base_url(value: str) -> None:
    if unfetchable(value):
        raise ValueError(f"give a scheme and host, e.g. http://127.0.0.1:8080 (got {value!r})")


# ------------------------------------------------------------------------------------------ shared options

def _out(where: str) -> Opt:
    return Opt("out", PATH_TYPE, output=True,
               help=f"Output folder (default {where}); or s3://bucket/prefix (written to a local "
               "staging folder, then published: images, then the manifest).")


BASE_URL = Opt("base_url", str, metavar="URL", validate=_base_url,
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
METRIC_NAMES = {"validate": parse_metrics}

URL_LIST_FORMATS = ("txt", "csv", "tsv", "jsonl")
ENGINE = (BASE_URL, CONCURRENCY, RATE, RETRIES, TIMEOUT, MAX_WAIT, MEMORY, DURABILITY)
ENGINE_KEYS = ("concurrency", "rate", "retries", "timeout", "max_wait", "memory", "durability")  # FetchOptions'


def _no_limit_on_ray(v: dict[str, Any], name) -> None:
    if v.get("engine") == "ray" and v.get("limit") is not None:
        raise ValueError(f"{name('limit')} cannot be kept across Ray tasks that run at once; cut the list to size, "
                         f"or use {name('engine')} local")


# -------------------------------------------------------------------------------------------------- fetch

FETCH_BITMOJI = Declaration(("fetch", "bitmoji"), (
    Opt("count", int, required=True, min=1, max=10**9,
        help="Distinct images the dataset should hold, counting earlier runs."),
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
    *ENGINE))

FETCH_URLS = Declaration(("fetch", "urls"), (
    Opt("url_list", str, required=True, argument=True, help="A .txt (one URL per line), .csv/.tsv or "
        ".jsonl list (a path, or s3://… with the s3 extra)."),
    Opt("name", str, required=True, pipeline=False, validate=check_name,
        help="Dataset name: images go to DATA/NAME/raw (in a pipeline: its dataset)."),
    _out("DATA/NAME/raw"),
    Opt("url_col", str, "url", help="Column (csv/tsv) or field (jsonl) holding the URL."),
    Opt("format", str, choices=URL_LIST_FORMATS, help="The list's format (default: from the "
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
    rules=(_no_limit_on_ray,))

FETCH_BRICKLINK = Declaration(("fetch", "bricklink"), (
    _out("DATA/bricklink/raw"),
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
    RETRIES, TIMEOUT, MAX_WAIT, MEMORY, DURABILITY))

FETCH_REBRICKABLE = Declaration(("fetch", "rebrickable"), (
    _out("DATA/rebrickable/raw"),
    Opt("csv", PATH_TYPE, help="A local minifigs.csv or minifigs.csv.gz."),
    LIMIT,
    Opt("manifest", PATH_TYPE, help="Another rebrickable manifest (default: the one installed with gandata)."),
    *ENGINE))

FETCH_WEIGHTS = Declaration(("fetch", "weights"), (
    Opt("what", str, required=True, argument=True, choices=("inception",),
        help="inception: the FID Inception-v3 weights (2015-12-05)."),
    Opt("url", str, help="Download from this address instead (a mirror)."),
    Opt("out", PATH_TYPE, output=True, help="Write here instead of the cache.")))

# --------------------------------------------------------------------------------------------------- crop


def _crop(kind: str) -> Declaration:
    lego = kind == "lego-faces"
    dataset = "bricklink" if lego else "anime"
    return Declaration(("crop", kind), (
        Opt("src", str, flags=("--src",), help="A dataset folder, a folder of images or shards (default "
            f"DATA/{dataset}/raw; in a pipeline: what the stage before wrote)."),
        _out(f"DATA/{dataset}/faces"),
        Opt("size", int, 128, min=8, max=4096, help="Output side in pixels."),
        Opt("margin", float, 0.2, min=0, max=2, help="Added to each side of the face box, as a fraction of it."),
        Opt("edge", str, "pad", choices=("pad", "shift", "drop"),
            help="Crops running off the image: pad, shift (move inside) or drop."),
        Opt("pad_color", COLOR, "white", help="Colour of --edge pad."),
        Opt("background", COLOR, "white", help="Colour that transparency is composited onto."),
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
        *((Opt("locator", str, "auto", choices=("auto", "learned", "layout", "cascade"),
               help="How heads are found: learned (the detector shipped with gandata: catalogue shots and photos), "
               "layout (the figure's proportions: catalogue shots), cascade (the anime cascade's face grown to its "
               "head, else the layout; downloads the cascade) or auto (the best measured, docs/quality.md)."),
           Opt("threshold", float, min=0, max=1,
               help="How sure (0-1) the locator must be of a head to cut it (default: 0.5 for the learned detector, "
               "in auto too; 0.25 for the layout; the cascade's faces all); raise it for fewer, surer crops.")) if lego
          else ()),
        BASE_URL,
    ))


CROP_ANIME, CROP_LEGO = _crop("anime-faces"), _crop("lego-faces")

# ------------------------------------------------------------------------------------------ dedupe, shard

DEDUPE = Declaration(("dedupe",), (
    Opt("src", LIST, required=True, argument=True, help="Dataset folders, image folders or shards."),
    Opt("threshold", int, 8, min=0, max=32, help="Bits of gandata-phash-v2 that may differ."),
    Opt("report", PATH_TYPE, output=True, help="Write every clustered sample as JSONL (kept or not, and why)."),
    Opt("grid", PATH_TYPE, output=True, help="Write a contact sheet of the largest clusters, one a row."),
    WORK_MEMORY, RUN_ON, RAY_ADDRESS, TASK_SIZE,
    Opt("work", str, output=True,
        help="--engine ray: where tasks leave their markers, so a re-run hashes only what is missing "
        "(default: the cache; on a cluster of several machines, a shared folder or s3://…).")))


SHARD = Declaration(("shard",), (
    Opt("src", LIST, argument=True, help="Dataset folders, image folders or .tar shards (default: every dataset "
        "under the data dir; in a pipeline: what the stage before wrote)."),
    Opt("out", str, output=True,
        help="Output folder, or an object-store prefix: s3://bucket/prefix, gs://… (pip install "
        "'gandata[s3]'); default DATA/<name>/shards."),
    Opt("name", str, validate=check_name, help="Shard name prefix (default: the dataset's name)."),
    Opt("size", int, 64, min=1, max=4096, help="Output side in pixels."),
    Opt("resize", str, "center-crop", choices=RESIZE_MODES,
        help="center-crop, pad or keep-ratio (smallest side = size)."),
    Opt("format", str, "png", choices=("png", "jpg", "webp"), help="Image format in the shards."),
    Opt("quality", int, 95, min=1, max=100, help="JPEG/WebP quality."),
    Opt("background", COLOR, "white", help="Colour that transparency is composited onto."),
    Opt("pad_color", COLOR, "white", help="Padding colour for --resize pad."),
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
        "at once (0: one per CPU of the cluster)."),
    WORK_MEMORY, RUN_ON, RAY_ADDRESS, TASK_SIZE,
    Opt("keep_work", bool, False, help="Keep OUT/.work (the processed images, Ray's parts and markers) after "
        "success, so that a run with other split, order or label options reuses every image; removed by default.")))

# ---------------------------------------------------------------------------------------------- inspect

INSPECT = Declaration(("inspect",), (
    Opt("path", str, required=True, argument=True,
        help="A dataset folder, a folder of images, or shards (folder, .tar, brace pattern)."),
    Opt("grid", PATH_TYPE, output=True, help="Write a contact sheet PNG of samples drawn at random."),
    Opt("grid_n", int, 64, min=1, max=10_000, help="Samples on the contact sheet."),
    Opt("cell", int, 128, min=16, max=1024, help="Contact sheet cell size in pixels."),
    Opt("label_field", str, help="Count the values of this record field as labels."),
    Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed for picking the contact sheet's samples.")))

# ------------------------------------------------------------------------------------- train, sample, eval


def _penalty_needs_no_batch_norm(v: dict[str, Any], name) -> None:
    k = BY_NAME[v["_kind"]]
    if (v.get("critic_norm") or k.critic_norm) == "batch" and not k.batchnorm_critic:
        raise ValueError(f"{k.name} needs a critic without batch norm ({name('critic_norm')} group or none): the "
                         "gradient penalty is per sample")


def _train(kind: str) -> Declaration:
    k = BY_NAME[kind]

    def only(applies: bool) -> dict:  # an option the kind has: offered on the command line and in files
        return {"cli": applies, "pipeline": applies}

    def this_kind(rule):
        return lambda v, name: rule({**v, "_kind": kind}, name)

    return Declaration(("train", kind), (
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
        Opt("resume", str, help="Continue from this checkpoint file, or auto: the newest in --out, with options "
            "other than the run's (without it, the same command continues its run)."),
        Opt("gpus", int, 1, min=1, max=1024,
            help="Processes to launch with torchrun (GPUs; on --device cpu, CPU processes)."),
        Opt("resolution", int, validate=_resolution, help="Image side: 32, 64 or 128 (default: the shards')."),
        Opt("n_classes", int, min=2, max=100_000, **only(k.conditional),
            help="Classes (default: the shards' labels)."),
        Opt("grid", int, 64, min=1, max=1024, help="Samples on each snapshot's grid."),
        Opt("eval", str, help="Metrics at every snapshot, e.g. fid,kid (off by default; needs the Inception weights, "
            "see gandata eval).", **METRIC_NAMES),
        Opt("eval_real", str, help="Real set for --eval (default: --shards)."),
        Opt("eval_n", int, 10_000, min=2, max=1_000_000, help="Generated images per --eval."),
        Opt("eval_extractor", str, "inception", help="Feature extractor for --eval: " + EXTRACTOR_HELP),
        INCEPTION_WEIGHTS,
    ), rules=(this_kind(_penalty_needs_no_batch_norm),))


TRAIN = {kind: _train(kind) for kind in KINDS}

SAMPLE = Declaration(("sample",), (
    Opt("run", PATH_TYPE, required=True, argument=True, help="A run folder (its newest checkpoint) or a checkpoint "
        "file."),
    Opt("n", int, 64, min=1, max=10_000, help="Images in the grid."),
    Opt("out", PATH_TYPE, Path("samples.png"), output=True, help="The PNG to write."),
    Opt("label", int, min=0, max=100_000, help="cdcgan: draw only this class (default: one class per row)."),
    Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed of the latent vectors."),
    DEVICE, PRECISION))

EVAL = Declaration(("eval",), (
    Opt("target", PATH_TYPE, required=True, argument=True, output=True,
        help="A run folder (its newest checkpoint; all with "
        "--every) or a checkpoint (in a pipeline: the [train] stage's run)."),
    Opt("real", str, required=True, help="The real images: a shard folder (its train split), brace pattern or URL "
        "(in a pipeline: the [shard] stage's folder)."),
    Opt("n", int, 10_000, min=2, max=1_000_000, help="Generated images."),
    Opt("metrics", str, "fid,kid", help="fid, kid or fid,kid.", **METRIC_NAMES),
    Opt("n_real", int, min=2, max=10**9, help="Use only the first N real images (default: all)."),
    Opt("every", bool, False, help="Evaluate every checkpoint of the run (those done before are reused)."),
    INCEPTION_WEIGHTS,
    Opt("extractor", str, "inception", help=EXTRACTOR_HELP),
    Opt("batch", int, 64, min=1, max=4096, help="Images per forward pass."),
    Opt("seed", int, 0, min=0, max=SEED_MAX, help="Seed of the latent vectors and KID subsets."),
    DEVICE))

EXPORT = Declaration(("export",), (
    Opt("shards", str, required=True, argument=True, help="A shard folder (with dataset.json), a tar, a brace "
        "pattern or a URL."),
    Opt("out", PATH_TYPE, required=True, output=True, help="stylegan: the .zip to write; imagefolder: the folder."),
    Opt("format", str, "stylegan", choices=("stylegan", "imagefolder"),
        help="stylegan (dataset_tool.py's zip, labels in dataset.json) or imagefolder (a folder per class)."),
    Opt("split", str, "train", choices=("train", "val", "all"), help="Which split of the set.")))

ALL: tuple[Declaration, ...] = (FETCH_BITMOJI, FETCH_URLS, FETCH_BRICKLINK, FETCH_REBRICKABLE, FETCH_WEIGHTS,
                                CROP_ANIME, CROP_LEGO, DEDUPE, SHARD, INSPECT, EXPORT, *TRAIN.values(), SAMPLE, EVAL)
_BY_COMMAND = {d.command: d for d in ALL}


def declared(*command: str) -> Declaration:
    """A command's declaration: ``declared("shard")``, ``declared("train", "wgan-gp")``."""
    return _BY_COMMAND[command]
