"""The ``gandata`` command line: parses options, calls the library, prints results. Nothing else lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .errors import UserError

app = typer.Typer(
    name="gandata",
    help="Build clean GAN training sets of cartoon faces: fetch, crop, dedupe, shard, inspect.",
    epilog="\b\nExample:\n  gandata shard ~/anime-faces --name anime\n  gandata inspect data/anime/shards --grid anime.png",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DataDir = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="GANDATA_DATA", help="Workspace holding DATA/<dataset>/<stage> (default ./data)."),
]
InceptionWeights = Annotated[Optional[Path], typer.Option(
    help="The FID Inception weight file (else $GANDATA_INCEPTION_WEIGHTS, else the cache).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on stdout.")]


def _data_dir(value: Optional[Path]) -> Path:
    return value if value is not None else Path("data")


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


@app.callback(invoke_without_command=False)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        print(f"gandata {__version__}")
        raise typer.Exit()


def _print_shard_summary(s: dict) -> None:
    c = s["counts"]
    print(
        f"sharded {s['name']}: {c['train']} train + {c['val']} val samples"
        + (f" at {s['resolution']} px" if s["resolution"] else "")
        + f" → {s['shards']['train']} + {s['shards']['val']} shards in {s['out']}"
    )
    r = s["removed"]
    removed = [f"{r['exact_duplicate']} exact duplicates", f"{r['unreadable']} unreadable"]
    if r.get("near_duplicate"):
        removed.insert(1, f"{r['near_duplicate']} near duplicates")
    if r.get("missing_label"):
        removed.append(f"{r['missing_label']} without a label")
    print(f"  removed: {', '.join(removed)}" + (f" (all listed in {s['report']})" if any(r.values()) else ""))
    for row in s["rejected"][:5]:
        print(f"    {row['origin']}: {row['reason']}")
    if s["labels"]:
        print(f"  labels from {s['labels']['field']!r}: {len(s['labels']['names'])} classes")
    print(f"  train shards: --shards {s['patterns']['train']}")
    if s["patterns"]["val"]:
        print(f"  val shards:   {s['patterns']['val']}")
    print(f"  {s['seconds']} s, {s['processed']} images processed, {s['reused']} reused from an earlier run")
    for w in s["warnings"]:
        print(f"  warning: {w}")


@app.command(
    epilog="\b\nExamples:\n"
    "  gandata shard                      # every dataset under ./data, each into DATA/<dataset>/shards\n"
    "  gandata shard ~/anime-faces --name anime --size 64\n"
    "  gandata shard data/bricklink/raw --label-field category --size 128 --resize pad",
)
def shard(
    src: Annotated[Optional[list[str]], typer.Argument(help="Dataset folders, image folders or .tar shards (default: every dataset under the data dir).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default DATA/<name>/shards).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Shard name prefix (default: the dataset's name).")] = None,
    size: Annotated[int, typer.Option(min=1, help="Output side in pixels.")] = 64,
    resize: Annotated[str, typer.Option(help="center-crop, pad or keep-ratio (smallest side = size).")] = "center-crop",
    image_format: Annotated[str, typer.Option("--format", help="png, jpg or webp.")] = "png",
    quality: Annotated[int, typer.Option(min=1, max=100, help="JPEG/WebP quality.")] = 95,
    background: Annotated[str, typer.Option(help="Colour that transparency is composited onto.")] = "white",
    pad_color: Annotated[str, typer.Option(help="Padding colour for --resize pad.")] = "white",
    val_fraction: Annotated[float, typer.Option(help="Share of samples in the val split (fixed per key).")] = 0.02,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 0,
    maxcount: Annotated[int, typer.Option(min=1, help="At most this many samples per shard.")] = 10000,
    min_shards: Annotated[int, typer.Option(min=1, help="Train shards to aim for when data allows (64+ per shard).")] = 8,
    dedupe: Annotated[str, typer.Option(help="exact (identical pixels), near (perceptual hash within --threshold) or none.")] = "exact",
    threshold: Annotated[int, typer.Option(min=0, max=32, help="--dedupe near: bits of gandata-phash-v1 that may differ.")] = 8,
    label_field: Annotated[Optional[str], typer.Option(help="Record field whose values become class labels (.cls).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Threads for decoding and resizing (0: one per core).")] = 0,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Dedupe, resize, split and write WebDataset shards plus dataset.json."""
    from .shard import ShardOptions, default_name, shard as run_shard, shard_all

    opts = ShardOptions(
        size=size, resize=resize, image_format=image_format, quality=quality, background=background,
        pad_color=pad_color, val_fraction=val_fraction, seed=seed, maxcount=maxcount, min_shards=min_shards,
        dedupe=dedupe, threshold=threshold, label_field=label_field, workers=workers,
    )
    ddir = _data_dir(data_dir)
    progress = not as_json
    if not src:
        if out is not None or name is not None:
            raise UserError("--out and --name need SRC; without SRC every dataset goes to DATA/<dataset>/shards")
        summaries = shard_all(ddir, opts, progress=progress)
    else:
        nm = name or default_name(src[0], ddir)
        summaries = [run_shard(src, out or ddir / nm / "shards", nm, opts, progress=progress)]
    if as_json:
        print(json.dumps(summaries[0] if len(summaries) == 1 else summaries, ensure_ascii=False))
    else:
        for s in summaries:
            _print_shard_summary(s)


@app.command(
    epilog="\b\nExamples:\n"
    "  gandata inspect data/bitmoji/raw\n"
    "  gandata inspect data/anime/shards --grid anime.png\n"
    "  gandata inspect ~/anime-faces --grid sheet.png --grid-n 100",
)
def inspect(
    path: Annotated[str, typer.Argument(help="A dataset folder, a folder of images, or shards (folder, .tar, brace pattern).")],
    grid: Annotated[Optional[Path], typer.Option(help="Write a contact sheet PNG of samples drawn at random.")] = None,
    grid_n: Annotated[int, typer.Option(min=1, help="Samples on the contact sheet.")] = 64,
    cell: Annotated[int, typer.Option(min=16, help="Contact sheet cell size in pixels.")] = 128,
    label_field: Annotated[Optional[str], typer.Option(help="Count the values of this record field as labels.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for picking the contact sheet's samples.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Counts, image sizes, labels and failures of a dataset, with an optional contact sheet."""
    from .inspection import inspect_path

    r = inspect_path(path, grid=grid, grid_n=grid_n, cell=cell, label_field=label_field, seed=seed, progress=not as_json)
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
        return
    print(f"{r['path']}: {r['samples']} samples ({r['kind']})" + (f", {r['unreadable']} unreadable" if r["unreadable"] else ""))
    if r["sizes"]:
        sizes = ", ".join(f"{s['width']}x{s['height']}: {s['count']}" for s in r["sizes"])
        more = f" (+{r['distinct_sizes'] - len(r['sizes'])} more sizes)" if r["distinct_sizes"] > len(r["sizes"]) else ""
        print(f"  sizes: {sizes}{more}")
        print(f"  width {r['width_range'][0]}-{r['width_range'][1]}, height {r['height_range'][0]}-{r['height_range'][1]}")
    if "splits" in r:
        print("  splits: " + ", ".join(f"{k} {v}" for k, v in r["splits"].items()))
    if "labels" in r:
        print(f"  labels ({len(r['labels'])}): " + ", ".join(f"{k}: {v}" for k, v in list(r["labels"].items())[:20]))
    if r.get("failures"):
        print("  failures: " + ", ".join(f"{k}: {v}" for k, v in r["failures"].items()))
    for b in r.get("bad", []):
        print(f"  unreadable: {b['origin']}: {b['reason']}")
    if "warning" in r:
        print(f"  warning: {r['warning']}")
    if "grid" in r:
        print(f"  contact sheet: {r['grid']}")


fetch_app = typer.Typer(
    help="Download images into a dataset folder (resumable: run the same command again to continue).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(fetch_app, name="fetch")

BaseUrl = Annotated[Optional[str], typer.Option("--base-url", help="Replace the scheme and host of every address of the source (a mirror, a test server).")]
Concurrency = Annotated[Optional[int], typer.Option(min=1, help="Requests in flight (default: the source's).")]
Rate = Annotated[Optional[float], typer.Option(min=0, help="Requests per second per host (default: the source's; 0: no pacing).")]
Retries = Annotated[Optional[int], typer.Option(min=0, help="Further tries after a 429, 5xx, timeout or broken body.")]
Timeout = Annotated[Optional[float], typer.Option(help="Seconds per request, connect and read together.")]


def _fetch_overrides(concurrency: Optional[int], rate: Optional[float], retries: Optional[int], timeout: Optional[float]) -> dict:
    return {"concurrency": concurrency, "per_host": concurrency, "rate": rate, "retries": retries, "timeout": timeout}


def _finish_fetch(stats: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        target = f" of {stats['target']}" if stats.get("target") else ""
        print(f"fetched {stats['accepted']} new images into {stats['out']} (it now holds {stats['total']}{target}) "
              f"in {stats['seconds']} s ({stats['rate'] or 0}/s)")
        if stats["failures"]:
            fails = ", ".join(f"{k} ×{v}" for k, v in list(stats["failures"].items())[:6])
            print(f"  given up on: {fails} (each listed in {stats['out']}/failures.jsonl)")
        print(f"  {stats['retries']} retries, {stats['duplicate_bodies']} duplicate bodies, "
              f"{stats['skipped_known']} already done or refused earlier; stats in {stats['out']}/stats.json")
    if stats.get("interrupted"):
        _err("gandata: interrupted; run the same command again to continue")
        raise typer.Exit(130)
    if stats.get("stopped"):
        _err(f"gandata: error: {stats['stopped']}")
        raise typer.Exit(1)


@fetch_app.command(
    "bitmoji",
    epilog="\b\nExamples:\n"
    "  gandata fetch bitmoji --count 200000                  # random avatar heads → data/bitmoji/raw\n"
    "  gandata fetch bitmoji --count 5000 --view body --seed 7\n"
    "  gandata fetch bitmoji --mode comics --avatar-ids ids.txt --count 20000\n"
    "\b\nThe images are Bitmoji artwork: for research use only. Keep them local and do not redistribute them.\n"
    "Addresses and politeness settings are in manifests/bitmoji.toml.",
)
def fetch_bitmoji_cmd(
    count: Annotated[int, typer.Option(min=1, help="Distinct images the dataset should hold, counting earlier runs.")],
    out: Annotated[Optional[Path], typer.Option(help="Dataset folder (default DATA/bitmoji/raw).")] = None,
    mode: Annotated[str, typer.Option(help="avatars (random avatars from the trait catalogue) or comics.")] = "avatars",
    view: Annotated[str, typer.Option(help="avatars: head or body.")] = "head",
    seed: Annotated[int, typer.Option(help="Seed of the sequence of avatars (or of comic × avatar pairs).")] = 0,
    traits: Annotated[Optional[Path], typer.Option(help="Local trait catalogue JSON (default: fetched and cached).")] = None,
    templates: Annotated[Optional[Path], typer.Option(help="Local templates catalogue JSON for --mode comics.")] = None,
    avatar_ids: Annotated[Optional[Path], typer.Option(help="comics: file of avatar ids, one per line.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Another bitmoji manifest (default manifests/bitmoji.toml).")] = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = None,
    rate: Rate = None,
    retries: Retries = None,
    timeout: Timeout = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Bitmoji avatars from the public trait-preview (or comic) render URLs. Research use only."""
    from .sources.bitmoji import fetch_bitmoji

    stats = fetch_bitmoji(
        out or _data_dir(data_dir) / "bitmoji" / "raw", count, mode=mode, view=view, seed=seed, traits_file=traits,
        templates_file=templates, avatar_ids_file=avatar_ids, manifest_file=manifest, base_url=base_url,
        overrides=_fetch_overrides(concurrency, rate, retries, timeout), progress=not as_json,
    )
    _finish_fetch(stats, as_json)


@fetch_app.command(
    "urls",
    epilog="\b\nExamples:\n"
    "  gandata fetch urls anime.txt --name anime              # one URL per line → data/anime/raw\n"
    "  gandata fetch urls list.csv --name anime --url-col image_url --rate 5\n"
    "  gandata fetch urls list.jsonl --name anime --limit 10000",
)
def fetch_urls_cmd(
    url_list: Annotated[Path, typer.Argument(help="A .txt (one URL per line), .csv/.tsv or .jsonl list.")],
    name: Annotated[str, typer.Option(help="Dataset name: images go to DATA/NAME/raw.")],
    out: Annotated[Optional[Path], typer.Option(help="Dataset folder (default DATA/NAME/raw).")] = None,
    url_col: Annotated[str, typer.Option(help="Column (csv/tsv) or field (jsonl) holding the URL.")] = "url",
    list_format: Annotated[Optional[str], typer.Option("--format", help="txt, csv, tsv or jsonl (default: from the extension).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Stop when the dataset holds this many images.")] = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = None,
    rate: Rate = None,
    retries: Retries = None,
    timeout: Timeout = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Images from your own list of URLs; every other column is kept in the record."""
    from .datasets import make_key
    from .sources.urls import fetch_urls

    if make_key(name) != name:
        raise UserError(f"--name {name!r}: use lower-case letters, digits, '_' and '-'")
    stats = fetch_urls(
        url_list, name, out or _data_dir(data_dir) / name / "raw", url_col=url_col, fmt=list_format, limit=limit,
        base_url=base_url, overrides=_fetch_overrides(concurrency, rate, retries, timeout), progress=not as_json,
    )
    _finish_fetch(stats, as_json)


@fetch_app.command(
    "bricklink",
    epilog="\b\nExamples:\n"
    "  gandata fetch bricklink --catalog-file Minifigures.txt        # your catalog download: no crawling\n"
    "  gandata fetch bricklink --categories 65,746 --limit 2000      # crawl two categories' listing pages\n"
    "  gandata fetch bricklink                                       # the whole catalogue (18 000+ figures)\n"
    "\b\nBrickLink's images are for research use only: keep them local, do not redistribute them.\n"
    "Addresses and politeness settings are in manifests/bricklink.toml.",
)
def fetch_bricklink_cmd(
    out: Annotated[Optional[Path], typer.Option(help="Dataset folder (default DATA/bricklink/raw).")] = None,
    catalog_file: Annotated[Optional[Path], typer.Option(help="BrickLink's tab-delimited minifig catalog download; preferred over crawling.")] = None,
    categories_file: Annotated[Optional[Path], typer.Option(help="BrickLink's categories download, to resolve sub-category ids in a catalog file.")] = None,
    categories: Annotated[Optional[str], typer.Option(help="Only these categories: ids or dotted catStrings, e.g. 65,746 or 65.257.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Stop when the dataset holds this many images.")] = None,
    delay: Annotated[Optional[float], typer.Option(min=0, help="Seconds between two listing-page requests (default 3).")] = None,
    image_rate: Annotated[Optional[float], typer.Option(min=0, help="Image requests per second (default 4; 0: no pacing).")] = None,
    refresh_list: Annotated[bool, typer.Option(help="Read the listing pages again instead of the ones saved by earlier runs.")] = False,
    manifest: Annotated[Optional[Path], typer.Option(help="Another bricklink manifest (default manifests/bricklink.toml).")] = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = None,
    retries: Retries = None,
    timeout: Timeout = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """LEGO minifigure images from BrickLink, with item numbers, names and categories."""
    from .sources.bricklink import fetch_bricklink

    stats = fetch_bricklink(
        out or _data_dir(data_dir) / "bricklink" / "raw", catalog_file=catalog_file, categories_file=categories_file,
        categories=categories, limit=limit, refresh_list=refresh_list, manifest_file=manifest, base_url=base_url,
        delay=delay, image_concurrency=concurrency, image_rate=image_rate, overrides={"retries": retries, "timeout": timeout},
        progress=not as_json,
    )
    _finish_fetch(stats, as_json)


@fetch_app.command(
    "rebrickable",
    epilog="\b\nExamples:\n"
    "  gandata fetch rebrickable                          # Rebrickable's minifigs.csv.gz, fetched and cached\n"
    "  gandata fetch rebrickable --csv minifigs.csv.gz --limit 5000",
)
def fetch_rebrickable_cmd(
    out: Annotated[Optional[Path], typer.Option(help="Dataset folder (default DATA/rebrickable/raw).")] = None,
    csv_file: Annotated[Optional[Path], typer.Option("--csv", help="A local minifigs.csv or minifigs.csv.gz.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Stop when the dataset holds this many images.")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Another rebrickable manifest (default manifests/rebrickable.toml).")] = None,
    base_url: BaseUrl = None,
    concurrency: Concurrency = None,
    rate: Rate = None,
    retries: Retries = None,
    timeout: Timeout = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """LEGO minifigure images listed in Rebrickable's bulk CSV, with names and part counts."""
    from .sources.rebrickable import fetch_rebrickable

    stats = fetch_rebrickable(
        out or _data_dir(data_dir) / "rebrickable" / "raw", csv_file=csv_file, limit=limit, manifest_file=manifest,
        base_url=base_url, overrides=_fetch_overrides(concurrency, rate, retries, timeout), progress=not as_json,
    )
    _finish_fetch(stats, as_json)


crop_app = typer.Typer(help="Cut square face crops out of images into a dataset folder.", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(crop_app, name="crop")


def _crop(lego: bool, src: Optional[str], out: Optional[Path], data_dir: Optional[Path], cascade: Optional[Path],
          base_url: Optional[str], debug_grid: Optional[Path], as_json: bool, **options: object) -> None:
    from .crop import CropOptions, crop

    ddir = _data_dir(data_dir)
    dataset = "bricklink" if lego else "anime"
    summary = crop(src or ddir / dataset / "raw", out or ddir / dataset / "faces", CropOptions(lego=lego, **options),
                   cascade=cascade, base_url=base_url, debug_grid=debug_grid, progress=not as_json)
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    methods = ", ".join(f"{k} {v}" for k, v in summary["methods"].items())
    print(f"{summary['stage']}: {summary['images']} images → {summary['crops']} crops in {summary['out']} "
          f"({summary['with_faces']} with a {'head' if lego else 'face'}, {summary['without']} without, "
          f"{summary['unreadable']} unreadable; {summary['skipped_done']} done earlier)")
    if methods:
        print(f"  cut by: {methods}")
    for b in summary["bad"][:5]:
        print(f"  unreadable: {b['origin']}: {b['reason']}")
    print(f"  {summary['seconds']} s ({summary['rate'] or 0} images/s); the dataset now holds {summary['total_crops']} crops")
    if "debug_grid" in summary:
        print(f"  detections drawn on {summary['debug_grid']}")


CropSrc = Annotated[Optional[str], typer.Option("--src", help="A dataset folder, a folder of images or shards.")]
CropOut = Annotated[Optional[Path], typer.Option(help="Output dataset folder.")]
CropSize = Annotated[int, typer.Option(min=8, help="Output side in pixels.")]
Margin = Annotated[float, typer.Option(help="Added to each side of the face box, as a fraction of it.")]
Edge = Annotated[str, typer.Option(help="Crops running off the image: pad, shift (move inside) or drop.")]
PadColor = Annotated[str, typer.Option(help="Colour of --edge pad.")]
MinFace = Annotated[int, typer.Option(min=1, help="Faces smaller than this many pixels (in the source image) are dropped.")]
ScaleFactor = Annotated[float, typer.Option(help="Detector: scale step between pyramid levels.")]
MinNeighbors = Annotated[int, typer.Option(min=0, help="Detector: overlapping detections needed to keep a face.")]
MinSize = Annotated[int, typer.Option(min=1, help="Detector: smallest window in pixels.")]
Equalize = Annotated[bool, typer.Option(help="Detector: equalise the grey image's histogram first.")]
DetectSize = Annotated[int, typer.Option(min=64, help="Detect on a copy scaled down to this long side when larger.")]
Cascade = Annotated[Optional[Path], typer.Option(help="A local lbpcascade_animeface.xml (default: downloaded once, verified, cached).")]
Workers = Annotated[int, typer.Option(min=0, help="Worker threads (0: one per core).")]
DebugGrid = Annotated[Optional[Path], typer.Option(help="Write a contact sheet of source images with their boxes drawn.")]
CropFormat = Annotated[str, typer.Option("--format", help="png, jpg or webp.")]


@crop_app.command(
    "anime-faces",
    epilog="\b\nExamples:\n"
    "  gandata crop anime-faces                               # data/anime/raw → data/anime/faces\n"
    "  gandata crop anime-faces --src ~/illustrations --size 96 --margin 0.25\n"
    "  gandata crop anime-faces --debug-grid check.png --min-face 64",
)
def crop_anime(
    src: CropSrc = None, out: CropOut = None, size: CropSize = 128, margin: Margin = 0.2, edge: Edge = "pad",
    pad_color: PadColor = "white", min_face: MinFace = 64, scale_factor: ScaleFactor = 1.1,
    min_neighbors: MinNeighbors = 5, min_size: MinSize = 24, equalize: Equalize = True, detect_size: DetectSize = 1024,
    cascade: Cascade = None, workers: Workers = 0, debug_grid: DebugGrid = None, image_format: CropFormat = "png",
    base_url: BaseUrl = None, data_dir: DataDir = None, as_json: JsonFlag = False,
) -> None:
    """Anime faces, found with the lbpcascade_animeface detector (reference settings by default)."""
    _crop(False, src, out, data_dir, cascade, base_url, debug_grid, as_json, size=size, margin=margin, edge=edge,
          pad_color=pad_color, min_face=min_face, scale_factor=scale_factor, min_neighbors=min_neighbors,
          min_size=min_size, equalize=equalize, detect_size=detect_size, workers=workers, image_format=image_format)


@crop_app.command(
    "lego-faces",
    epilog="\b\nExamples:\n"
    "  gandata crop lego-faces                                # data/bricklink/raw → data/bricklink/faces\n"
    "  gandata crop lego-faces --size 64 --debug-grid heads.png",
)
def crop_lego(
    src: CropSrc = None, out: CropOut = None, size: CropSize = 128, margin: Margin = 0.2, edge: Edge = "pad",
    pad_color: PadColor = "white", min_face: MinFace = 24, scale_factor: ScaleFactor = 1.1,
    min_neighbors: MinNeighbors = 5, min_size: MinSize = 24, equalize: Equalize = True, detect_size: DetectSize = 1024,
    cascade: Cascade = None, workers: Workers = 0, debug_grid: DebugGrid = None, image_format: CropFormat = "png",
    locator: Annotated[str, typer.Option(help="auto (the cascade, then the figure's layout) or layout (the layout only: no cascade, works offline).")] = "auto",
    base_url: BaseUrl = None, data_dir: DataDir = None, as_json: JsonFlag = False,
) -> None:
    """LEGO minifigure heads: the anime-face cascade where it finds one, else the figure's layout."""
    _crop(True, src, out, data_dir, cascade, base_url, debug_grid, as_json, size=size, margin=margin, edge=edge,
          pad_color=pad_color, min_face=min_face, scale_factor=scale_factor, min_neighbors=min_neighbors,
          min_size=min_size, equalize=equalize, detect_size=detect_size, workers=workers, image_format=image_format,
          locator=locator)


@app.command(
    epilog="\b\nExamples:\n"
    "  gandata dedupe data/bitmoji/raw --report dups.jsonl --grid dups.png\n"
    "  gandata dedupe data/anime/faces ~/more-faces --threshold 6\n"
    "\b\nNothing is changed: remove near duplicates with gandata shard --dedupe near.",
)
def dedupe(
    src: Annotated[list[str], typer.Argument(help="Dataset folders, image folders or shards.")],
    threshold: Annotated[int, typer.Option(min=0, max=32, help="Bits of gandata-phash-v1 that may differ.")] = 8,
    report: Annotated[Optional[Path], typer.Option(help="Write every clustered sample as JSONL (kept or not, and why).")] = None,
    grid: Annotated[Optional[Path], typer.Option(help="Write a contact sheet of the largest clusters, one a row.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Find near-duplicate clusters (perceptual hash + multi-index search)."""
    from .dedupe import dedupe as run_dedupe

    r = run_dedupe(src, threshold=threshold, report=report, grid=grid, progress=not as_json)
    if as_json:
        print(json.dumps(r, ensure_ascii=False))
        return
    print(f"{r['samples']} samples: {r['clusters']} near-duplicate clusters at {r['threshold']} bits, "
          f"{r['in_clusters']} samples in them, {r['near_duplicates']} would be removed (largest cluster: {r['largest']})")
    if r["unreadable"]:
        print(f"  {r['unreadable']} unreadable, e.g. {r['bad'][0]['origin']}: {r['bad'][0]['reason']}")
    if r["report"]:
        print(f"  report: {r['report']}")
    if r["grid"]:
        print(f"  contact sheet: {r['grid']}")


@app.command(
    epilog="\b\nExamples:\n"
    "  gandata train wgan-gp --shards data/bitmoji/shards                      # one GPU (or the CPU)\n"
    "  gandata train cdcgan --shards data/bricklink/shards --gpus 4 --kimg 2000\n"
    "  gandata train dcgan --shards 'data/anime/shards/anime-train-{000000..000007}.tar' --resume auto\n"
    "\b\nSeveral machines: run on each  torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d\n"
    "  --rdzv-endpoint=HOST:29500 -m gandata train wgan-gp --shards … --out …",
)
def train(
    kind: Annotated[str, typer.Argument(help="dcgan, lsgan, wgan, wgan-gp or cdcgan.")],
    shards: Annotated[str, typer.Option(help="A shard folder (with dataset.json), brace pattern, URL or pipe: command.")],
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<kind>).")] = None,
    kimg: Annotated[float, typer.Option(help="Length: thousands of real images shown to the critic.")] = 1000.0,
    batch: Annotated[Optional[int], typer.Option(help="Global batch, split over the GPUs (default: the paper's).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate of G and D (default: the paper's).")] = None,
    n_critic: Annotated[Optional[int], typer.Option(help="Critic steps per generator step (default: 5 for WGANs, else 1).")] = None,
    critic_norm: Annotated[Optional[str], typer.Option(help="batch, group or none (default: group for wgan-gp, else batch).")] = None,
    g_norm: Annotated[str, typer.Option(help="Generator normalisation: batch or none.")] = "batch",
    critic_cond: Annotated[str, typer.Option(help="cdcgan: the critic sees the label as input planes, a projection head, or both.")] = "both",
    nz: Annotated[int, typer.Option(help="Latent size.")] = 100,
    ngf: Annotated[int, typer.Option(help="Generator width.")] = 64,
    ndf: Annotated[int, typer.Option(help="Critic width.")] = 64,
    gp_lambda: Annotated[float, typer.Option(help="wgan-gp: weight of the gradient penalty.")] = 10.0,
    clip: Annotated[float, typer.Option(help="wgan: critic weights are clipped to ±clip.")] = 0.01,
    critic_warmup: Annotated[bool, typer.Option(help="wgan: 100 critic steps for the first 25 G steps and every 500th.")] = True,
    ema_kimg: Annotated[float, typer.Option(help="Half-life of the generator's EMA, in kimg.")] = 10.0,
    snap_kimg: Annotated[float, typer.Option(help="Sample grid and checkpoint every this many kimg.")] = 50.0,
    log_kimg: Annotated[float, typer.Option(help="Metrics every this many kimg.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed (each rank derives its own).")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Data-loader worker processes per GPU.")] = 2,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads per process (0: fitted to the cores and the load; OMP_NUM_THREADS also works).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast on GPUs).")] = "fp32",
    resume: Annotated[Optional[str], typer.Option(help="auto (the newest checkpoint in --out) or a checkpoint file.")] = None,
    gpus: Annotated[int, typer.Option(min=1, help="Processes to launch with torchrun (GPUs; on --device cpu, CPU processes).")] = 1,
    eval_metrics: Annotated[Optional[str], typer.Option("--eval", help="Metrics at every snapshot, e.g. fid,kid (off by default; needs the Inception weights, see gandata eval).")] = None,
    eval_real: Annotated[Optional[str], typer.Option(help="Real set for --eval (default: --shards).")] = None,
    eval_n: Annotated[int, typer.Option(min=2, help="Generated images per --eval.")] = 10_000,
    eval_extractor: Annotated[str, typer.Option(help="Feature extractor for --eval: inception, tiny-random, module:function or file.py:function.")] = "inception",
    inception_weights: InceptionWeights = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a GAN on shards, streaming them; checkpoints, sample grids and metrics go to the run folder."""
    from gandata.trainers.train import TrainError, TrainOptions, launch

    opts = TrainOptions(kind=kind, shards=shards, out=str(out or Path("runs") / kind), kimg=kimg, batch=batch, lr=lr,
                        n_critic=n_critic, critic_norm=critic_norm, critic_cond=critic_cond, g_norm=g_norm, nz=nz, ngf=ngf, ndf=ndf,
                        gp_lambda=gp_lambda, clip=clip, critic_warmup=critic_warmup, ema_kimg=ema_kimg,
                        snap_kimg=snap_kimg, log_kimg=log_kimg, seed=seed, workers=workers, threads=threads, device=device,
                        precision=precision, resume=resume, gpus=gpus, eval_metrics=eval_metrics,
                        eval_real=eval_real, eval_n=eval_n, eval_extractor=eval_extractor,
                        inception_weights=str(inception_weights) if inception_weights else None)
    try:
        summary = launch(opts, progress=not as_json)
    except TrainError as e:
        raise UserError(str(e)) from None
    if int(os.environ.get("RANK", 0)) != 0:
        return
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"trained {summary['kind']} for {summary['kimg']} kimg ({summary['steps']} steps, {summary['world']} "
              f"process(es), {summary['seconds']} s) → {summary['out']}")
        print(f"  checkpoint: {summary.get('checkpoint')}\n  samples:    {summary.get('grid')}")


@app.command(
    epilog="\b\nExamples:\n"
    "  gandata sample runs/wgan-gp --n 64 --out grid.png\n"
    "  gandata sample runs/cdcgan/checkpoint-000500000.pt --label 3 --out hats.png",
)
def sample(
    run: Annotated[Path, typer.Argument(help="A run folder (its newest checkpoint) or a checkpoint file.")],
    n: Annotated[int, typer.Option(min=1, help="Images in the grid.")] = 64,
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("samples.png"),
    label: Annotated[Optional[int], typer.Option(help="cdcgan: draw only this class (default: one class per row).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the latent vectors.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32 or bf16 (autocast on GPUs).")] = "fp32",
    as_json: JsonFlag = False,
) -> None:
    """Draw a grid of samples from a trained generator (its EMA)."""
    from gandata.trainers.train import TrainError, sample as run_sample

    try:
        r = run_sample(run, n=n, out=out, label=label, device=device, precision=precision, seed=seed)
    except TrainError as e:
        raise UserError(str(e)) from None
    print(json.dumps(r) if as_json else f"{r['n']} samples of {r['kind']} at {r['kimg']:g} kimg → {r['out']}")


@app.command(
    "eval",
    epilog="\b\nExamples:\n"
    "  gandata eval runs/wgan-gp --real data/bitmoji/shards                   # newest checkpoint: fid10k, kid10k\n"
    "  gandata eval runs/wgan-gp --real data/bitmoji/shards --every --n 50000\n"
    "  gandata eval runs/cdcgan/checkpoint-000500000.pt --real data/bricklink/shards --metrics kid\n"
    "\b\nThe Inception weights come from --inception-weights, $GANDATA_INCEPTION_WEIGHTS or the cache\n"
    "(`gandata fetch weights inception`); nothing is downloaded here. FIDs compare only when the extractor,\n"
    "weights, resize, N real and N generated match: every result line records them (RUN/eval.jsonl).",
)
def eval_cmd(
    target: Annotated[Path, typer.Argument(help="A run folder (its newest checkpoint; all with --every) or a checkpoint.")],
    real: Annotated[str, typer.Option(help="The real images: a shard folder (its train split), brace pattern or URL.")],
    n: Annotated[int, typer.Option(min=2, help="Generated images.")] = 10_000,
    metrics: Annotated[str, typer.Option(help="fid, kid or fid,kid.")] = "fid,kid",
    n_real: Annotated[Optional[int], typer.Option(min=2, help="Use only the first N real images (default: all).")] = None,
    every: Annotated[bool, typer.Option(help="Evaluate every checkpoint of the run (those done before are reused).")] = False,
    inception_weights: InceptionWeights = None,
    extractor: Annotated[str, typer.Option(help="inception (FID standard), tiny-random (tests; meaningless numbers), module:function or file.py:function.")] = "inception",
    batch: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the latent vectors and KID subsets.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """FID and KID of a trained generator against real shards (own Fréchet/KID code, pytorch-fid's Inception)."""
    from gandata.trainers.metrics import evaluate
    from gandata.trainers.train import TrainError

    try:
        results = evaluate(target, real, n=n, metrics=metrics, extractor=extractor, weights=inception_weights,
                           n_real=n_real, every=every, batch=batch, seed=seed, device=device, progress=not as_json)
    except TrainError as e:
        raise UserError(str(e)) from None
    if as_json:
        print(json.dumps({"results": results}))
        return
    for r in results:
        shown = "  ".join(f"{k} {r[k]:.4g}" + (f" ± {r['kid_std']:.2g}" if k == "kid" else "")
                          for k in ("fid", "kid") if k in r)
        print(f"{r['checkpoint']} ({r['kimg']:g} kimg): {shown}" + ("  (from eval.jsonl)" if r.get("reused") else ""))
    r = results[-1]
    print(f"  N gen {r['n_gen']}, N real {r['n_real']}, {r['extractor']} (weights sha256 {r['weights_sha256'][:12]}…), "
          f"resize {r['resize']}; lines in {Path(target if Path(target).is_dir() else Path(target).parent) / 'eval.jsonl'}")


@fetch_app.command(
    "weights",
    epilog="\b\nExample:\n  gandata fetch weights inception      # pytorch-fid's FID Inception file → the cache\n"
    "\b\nOffline machines: download the file elsewhere and pass it with --inception-weights FILE\n"
    "(or set GANDATA_INCEPTION_WEIGHTS).",
)
def fetch_weights_cmd(
    what: Annotated[str, typer.Argument(help="inception: the FID Inception-v3 weights (2015-12-05).")],
    url: Annotated[Optional[str], typer.Option(help="Download from this address instead (a mirror).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write here instead of the cache.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Download a weight file that metrics need, resuming a partial download, and verify its checksum."""
    from gandata.trainers import inception
    from gandata.trainers.metrics import fetch_weights
    from gandata.trainers.train import TrainError

    if what != "inception":
        raise UserError(f"unknown weights {what!r}; the one known is: inception")
    try:
        r = fetch_weights(url or inception.WEIGHTS_URL, out, progress=not as_json)
    except TrainError as e:
        raise UserError(str(e)) from None
    print(json.dumps(r) if as_json else f"{r['path']} (sha256 {r['sha256']}) is ready; "
          + ("downloaded now" if r["downloaded"] else "it was already there"))


@app.command(
    "run",
    epilog="\b\nExamples:\n"
    "  gandata run pipelines/bitmoji-64.toml                       # fetch → shard → train, resumable\n"
    "  gandata run pipelines/anime-faces-96.toml --set crop.src=~/illustrations\n"
    "  gandata run pipelines/lego-faces-64.toml --only fetch --only crop\n"
    "\b\nRun it again after a crash to continue; a finished pipeline re-runs as a quick no-op.",
)
def run_cmd(
    pipeline_file: Annotated[Path, typer.Argument(help="A pipeline TOML file: [pipeline] and [fetch] [crop] [shard] [train] [eval] tables.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override STAGE.KEY=VALUE (repeatable), e.g. fetch.count=500.")] = None,
    only: Annotated[Optional[list[str]], typer.Option(help="Run only this stage (repeatable); the others' outputs are still used.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the stages of a pipeline file in order (every stage resumable); a summary line per stage."""
    from .pipeline import run as run_pipeline

    r = run_pipeline(pipeline_file, data_dir=_data_dir(data_dir), sets=set_, only=only, progress=not as_json,
                     echo=None if as_json else _err)
    if as_json:
        print(json.dumps(r, default=str, ensure_ascii=False))
        return
    print(f"pipeline {r['pipeline']} ({r['dataset']}) done in {r['seconds']} s:")
    for s in r["stages"]:
        print(f"  {s['stage']:<6} {s['line']}  ({s['seconds']} s) → {s['out']}")


@app.command(
    "demo",
    epilog="\b\nExamples:\n"
    "  gandata demo                        # about 3 minutes on 2 CPU cores → ./gandata-demo\n"
    "  gandata demo --out /tmp/demo --small",
)
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("gandata-demo"),
    small: Annotated[bool, typer.Option(help="A reduced run (tens of images, a few training steps; for CI).")] = False,
    as_json: JsonFlag = False,
) -> None:
    """The whole chain offline: a local render server, fetch, crop, dedupe, shard, train, sample grid, contact sheets."""
    from .demo import demo

    r = demo(out, size="small" if small else "full", progress=not as_json, echo=_err if not as_json else (lambda m: None))
    if as_json:
        print(json.dumps(r, default=str))
        return
    print(f"\ndemo done ({r['requests']} HTTP requests to the local render server); everything is in {r['out']}:")
    for part in ("avatars", "minifigs"):
        for s in r[part]["stages"]:
            print(f"  {part:<8} {s['stage']:<6} {s['line']}\n  {'':<15}→ {s['out']}")
    print(f"  sample grid from the trained generator: {r['samples']}")
    for name, sheet in r["sheets"].items():
        print(f"  contact sheet of the {name} shards:    {sheet}")
    print("\nNext: the real commands (README, 'Commands'); pipelines/*.toml build the full-size datasets.")


def main() -> None:
    """Console entry point: a user's mistake ends in one line on stderr and exit status 1, never a traceback."""
    try:
        app()
    except UserError as e:
        _err(f"gandata: error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        _err("gandata: interrupted; run the same command again to continue where it stopped")
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)


if __name__ == "__main__":
    main()
