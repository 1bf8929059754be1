"""Inputs (dataset folders, image folders, tars) → WebDataset shards + ``dataset.json``.

How a run goes:

1. Every input sample is decoded (a JPEG at the smallest DCT scale that keeps twice the output size: ``draft``),
   made RGB, resized, hashed (the output pixels) and encoded in a thread pool. Results are
   appended to a spool in ``OUT/.work`` (``spool.bin`` + ``index.jsonl``), so a killed run — or a later run over
   grown inputs — redoes only what is not there yet. A sample is reused when its source bytes (sha256) and the
   pixel options are unchanged.
2. Exact duplicates (identical pixels at the output size: the same training sample) are removed, keeping the
   largest source then the smallest key — and with ``--dedupe near``, near duplicates (gandata-phash-v2 within
   ``--threshold`` bits) the same way;
   unreadable inputs are counted; both are listed, with a kind and a reason, in ``rejected.jsonl`` and the summary.
3. The split comes from a hash of the key (so a sample never changes split when data is added), the order from a
   hash of seed and key (so the same inputs give the same order whatever order they were read in).
4. Shards are written atomically with fixed tar metadata (mtime, uid/gid, mode, member order), so the same
   inputs and options give byte-identical tars; ``dataset.json`` is removed first and written last, so it exists
   only beside a complete, consistent set of shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__, images, shardset, storage
from .datasets import (
    Input,
    MissingInput,
    Part,
    Problem,
    dataset_stage_folders,
    lookup_field,
    open_input,
    part_samples,
    partitions,
)
from .dedupe import DEFAULT_THRESHOLD, HASH_NAME, HASH_SIDE, HashCache, clusters, from_hex, phash, to_hex
from .errors import UserError
from .fileio import FolderLock, JsonlLog, atomic_write_json, read_jsonl, remove_stale_tmp
from .progress import Progress
from .shardset import SPLITS
from .summary import Summary
from .workers import Done, MemoryBudget, cores, ordered

WORK = ".work"
REJECTED = "rejected.jsonl"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# fields of a source record that describe the stored source file, not the sample; replaced in the shard's json
_FILE_FIELDS = ("key", "path", "sha256", "width", "height")


@dataclass
class ShardOptions:
    size: int = 64
    resize: str = "center-crop"
    image_format: str = "png"
    quality: int = 95
    background: str = "white"
    pad_color: str = "white"
    max_pixels: int = images.DEFAULT_MAX_PIXELS
    val_fraction: float = 0.02
    seed: int = 0
    maxcount: int = 10000
    min_shards: int = 8
    dedupe: str = "exact"  # exact | near | none
    threshold: int = DEFAULT_THRESHOLD  # bits, for --dedupe near
    label_field: str | None = None
    draft: bool = True  # JPEGs decoded at the smallest DCT scale that keeps twice the output size
    workers: int = 0  # 0: one per CPU core
    memory: int = 1024  # MiB that decoded images may hold at once, all workers together

    def validate(self) -> None:
        def bad(msg: str) -> UserError:
            return UserError(msg)

        if not isinstance(self.size, int) or self.size < 1:
            raise bad(f"--size must be a positive integer (got {self.size!r})")
        if self.resize not in images.RESIZE_MODES:
            raise bad(f"--resize must be one of {', '.join(images.RESIZE_MODES)} (got {self.resize!r})")
        if self.image_format.lower() not in images.FORMATS:
            raise bad(f"--format must be png, jpg or webp (got {self.image_format!r})")
        if not 1 <= self.quality <= 100:
            raise bad(f"--quality must be 1-100 (got {self.quality})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad(f"--val-fraction must be at least 0 and below 1 (got {self.val_fraction})")
        if self.maxcount < 1:
            raise bad(f"--maxcount must be a positive integer (got {self.maxcount})")
        if self.min_shards < 1:
            raise bad(f"--min-shards must be a positive integer (got {self.min_shards})")
        if self.dedupe not in ("exact", "near", "none"):
            raise bad(f"--dedupe must be exact, near or none (got {self.dedupe!r})")
        if not 0 <= self.threshold <= 32:
            raise bad(f"--threshold must be 0-32 bits (got {self.threshold})")
        for opt, value in (("--background", self.background), ("--pad-color", self.pad_color)):
            try:
                images.parse_color(value)
            except ValueError as e:
                raise bad(f"{opt}: {e}") from None

    def pixel_options(self) -> dict:
        """The options that change a processed image; the spool is reused only while these are unchanged."""
        fmt = self.image_format.lower()
        return {
            "size": self.size,
            "resize": self.resize,
            "format": "jpg" if fmt == "jpeg" else fmt,
            "quality": self.quality if fmt != "png" else None,
            "background": list(images.parse_color(self.background)),
            "pad_color": list(images.parse_color(self.pad_color)) if self.resize == "pad" else None,
            "max_pixels": self.max_pixels,
            "hash": HASH_NAME,
            "draft": self.draft,
        }


@dataclass
class ShardSummary(Summary):
    name: str
    out: str
    resolution: int | None
    image_format: str
    counts: dict[str, int]  # train, val, total
    shards: dict[str, int]  # shards per split
    patterns: dict[str, str | None]  # brace pattern per split
    removed: dict[str, int]  # by kind: unreadable, exact_duplicate, near_duplicate, missing_label
    input_problems: int  # problems in the inputs that removed nothing (a repeated tar member, a bad .json)
    rejected: list[dict]  # the first 20 of rejected.jsonl
    report: str  # rejected.jsonl
    labels: dict | None  # {"field", "names", "counts"}
    warnings: list[str]
    reused: int = 0
    processed: int = 0
    seconds: float = 0.0
    rate: float | None = None
    tasks: dict | None = None  # --engine ray: {"map": {"tasks", "ran", "skipped"}}
    finished_before: bool = False  # the same job (inputs and options) had already written this set: nothing done

    def lines(self) -> list[str]:
        c, r = self.counts, self.removed
        if self.finished_before:
            return [f"{self.name} is already sharded from these inputs with these options ({c['total']} samples in "
                    f"{self.out}); nothing read or written"]
        out = [f"sharded {self.name}: {c['train']} train + {c['val']} val samples"
               + (f" at {self.resolution} px" if self.resolution else "")
               + f" → {self.shards['train']} + {self.shards['val']} shards in {self.out}"]
        removed = [f"{r['exact_duplicate']} exact duplicates", f"{r['unreadable']} unreadable"]
        if r.get("near_duplicate"):
            removed.insert(1, f"{r['near_duplicate']} near duplicates")
        if r.get("missing_label"):
            removed.append(f"{r['missing_label']} without a label")
        out.append(f"  removed: {', '.join(removed)}" + (f" (all listed in {self.report})" if any(r.values()) else ""))
        if self.input_problems:
            out.append(f"  {self.input_problems} problems in the inputs removed nothing (listed in {self.report})")
        out += [f"    {row['origin']}: {row['reason']}" for row in self.rejected[:5]]
        if self.labels:
            out.append(f"  labels from {self.labels['field']!r}: {len(self.labels['names'])} classes")
        out.append(f"  train shards: --shards {self.patterns['train']}")
        if self.patterns["val"]:
            out.append(f"  val shards:   {self.patterns['val']}")
        out.append(f"  {self.seconds} s, {self.processed} images processed, {self.reused} reused from an earlier run")
        if self.tasks:
            m = self.tasks["map"]
            out.append(f"  ray: {m['tasks']} map tasks, {m['ran']} run now, {m['skipped']} finished by an earlier run")
        out += [f"  warning: {w}" for w in self.warnings]
        return out

    def brief(self) -> str:
        if self.finished_before:
            return self.lines()[0]
        removed = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.removed.items() if v) or "none"
        return (f"{self.counts.get('train', 0)} train / {self.counts.get('val', 0)} val samples at {self.resolution} px"
                f" in {self.shards['train']} + {self.shards['val']} shards; removed: {removed}")


BYTES_PER_PIXEL = 10  # what a source pixel holds while it is processed (measured on 7900² JPEGs and PNGs)


def process_image(data: bytes, popts: dict, known_phash: int | None = None,
                  budget: MemoryBudget | None = None) -> tuple:
    """Decode → RGB → resize → pixel digest → encode, and the perceptual hash. Runs in worker threads: Pillow,
    libjpeg-turbo and hashlib release the GIL for the heavy parts, so threads scale with cores without pickling or
    process start-up.

    With ``draft``, a JPEG is decoded at the smallest DCT scale whose short side keeps twice what the output needs
    (``images.decode_scaled``), and resized with the whole image's geometry: the output differs from a whole decode
    by 0.38/255 on average on real 512² tiles (see the README). The hash is gandata-phash-v2, from the same decode
    when its scale is the hash's, else from a second, smaller one. The digest is sha256 of the output pixels: two
    sources are exact duplicates when they make the same training sample.

    ``known_phash``: the hash of this file from the :class:`~gandata.dedupe.HashCache` (not computed again).
    Returns ``("ok", encoded, digest, original_w, original_h, w, h, phash)`` or ``("bad", reason)``.
    Runs once ``budget`` has room for the image.
    """
    if budget is not None:
        with budget.hold(images.pixel_count(data)[1] * BYTES_PER_PIXEL):
            return process_image(data, popts, known_phash)
    size, mode = popts["size"], popts["resize"]

    def needed(w: int, h: int) -> int:  # the short side that keeps twice the output's pixels
        if not popts["draft"]:
            return 0
        return 2 * size if mode != "pad" else -(-2 * size * min(w, h) // max(w, h))

    try:
        im, (ow, oh), eighths = images.decode_scaled(data, needed, popts["max_pixels"])
        rgb = images.to_rgb(im, popts["background"])
        out = images.resize(rgb, size, mode, popts["pad_color"] or (255, 255, 255), whole=(ow, oh, eighths / 8))
        digest = images.pixel_digest(out)
        encoded = images.encode(out, popts["format"], popts["quality"] or 95)
        if known_phash is not None:
            h = known_phash
        elif eighths == images.jpeg_eighths(min(ow, oh), HASH_SIDE) or im.format != "JPEG":
            h = phash(rgb)
        else:
            h = phash(images.to_rgb(images.decode_scaled(data, HASH_SIDE, popts["max_pixels"])[0],
                                    popts["background"]))
        return ("ok", encoded, digest, ow, oh, out.width, out.height, to_hex(h))
    except images.ImageError as e:
        return ("bad", str(e))
    except (MemoryError, OSError, ValueError) as e:
        return ("bad", f"cannot process ({type(e).__name__}: {e})")


# ------------------------------------------------------------------------------------------------ the spool


class Spool:
    """Processed images of earlier (possibly killed) runs: ``spool.bin`` holds the bytes, ``index.jsonl`` one
    line per sample written after its bytes. Wiped when the pixel options change."""

    def __init__(self, folder: Path, popts: dict):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        opts_file = folder / "options.json"
        try:
            same = json.loads(opts_file.read_text()) == popts
        except (FileNotFoundError, ValueError):
            same = False
        if not same:
            for f in ("index.jsonl", "spool.bin"):
                (folder / f).unlink(missing_ok=True)
            atomic_write_json(opts_file, popts)
        self.entries: dict[str, dict] = {e["key"]: e for e in read_jsonl(folder / "index.jsonl") if "key" in e}
        self._index = JsonlLog(folder / "index.jsonl")
        self._out = open(folder / "spool.bin", "ab")
        self._end = self._out.seek(0, os.SEEK_END)
        self._in = open(folder / "spool.bin", "rb")

    def lookup(self, key: str, src: str) -> dict | None:
        e = self.entries.get(key)
        return e if e is not None and e.get("src") == src else None

    def put(self, key: str, src: str, result: tuple) -> dict:
        if result[0] == "ok":
            _, data, digest, ow, oh, w, h, ph = result
            self._out.write(data)
            self._out.flush()
            entry = {"key": key, "src": src, "ok": True, "offset": self._end, "length": len(data),
                     "digest": digest, "ow": ow, "oh": oh, "w": w, "h": h, "phash": ph}
            self._end += len(data)
        else:
            entry = {"key": key, "src": src, "ok": False, "reason": result[1]}
        self._index.append(entry)
        self.entries[key] = entry
        return entry

    def read(self, entry: dict) -> bytes:
        return os.pread(self._in.fileno(), entry["length"], entry["offset"])

    def close(self) -> None:
        self._index.close()
        self._out.close()
        self._in.close()


# ------------------------------------------------------------------------------------------------- helpers


def _unit_hash(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16) / float(16**15)


def split_of(key: str, val_fraction: float) -> str:
    """The split of a key: fixed by the key alone, so adding data never moves a sample between splits."""
    return "val" if _unit_hash(f"gandata-split:{key}") < val_fraction else "train"


def order_key(key: str, seed: int) -> str:
    return hashlib.sha1(f"gandata-order:{seed}:{key}".encode()).hexdigest()


def even_sizes(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)] if n else []


def shard_count(n: int, maxcount: int, min_shards: int) -> int:
    """Enough shards that none holds more than ``maxcount``, and ``min_shards`` when there are at least 64 samples
    per shard to spread."""
    if n == 0:
        return 0
    return max(math.ceil(n / maxcount), min(min_shards, n // 64), 1)


def _label_sort_key(value: Any) -> tuple:
    return (
        (0, float(value), "")
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else (1, 0.0, str(value))
    )


def _kind(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return "list" if isinstance(v, list) else "dict" if isinstance(v, dict) else "str"


def _collect_kinds(v: Any, path: tuple, kinds: dict[tuple, set]) -> None:
    k = _kind(v)
    if k is None:
        return
    kinds.setdefault(path, set()).add(k)
    if k == "dict":
        for kk, vv in v.items():
            _collect_kinds(vv, path + (kk,), kinds)
    elif k == "list":
        for el in v:
            _collect_kinds(el, path + ("[]",), kinds)


def _conform(v: Any, path: tuple, plan: dict[tuple, str]) -> Any:
    to = plan.get(path)
    if to == "float" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if to == "str":
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
    if isinstance(v, dict):
        return {k: _conform(x, path + (k,), plan) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_conform(x, path + ("[]",), plan) for x in v]
    return v


def harmonize(records: list[dict]) -> list[dict]:
    """Make every JSON field keep one type across samples (strict readers such as Hugging Face datasets refuse a
    field that is an int in one sample and a string in another): int+float → float, other mixes → strings, and
    null values are left out."""
    kinds: dict[tuple, set] = {}
    for r in records:
        _collect_kinds(r, (), kinds)
    plan = type_plan(kinds)
    return [_conform(r, (), plan) for r in records]


def type_plan(kinds: dict[tuple, set]) -> dict[tuple, str]:
    """``{path: "float" | "str"}`` for every JSON path seen with more than one type."""
    return {path: "float" if ks == {"int", "float"} else "str" for path, ks in kinds.items() if len(ks) > 1}


# fields _sample_json writes over the record's own (with labels also cls and label; with --dedupe near, cluster)
_OVERRIDDEN = ("key", "source_sha256", "original_width", "original_height", "width", "height", "split", "phash")


def record_kinds(record: dict, labelled: bool, near: bool) -> list:
    """The JSON types of the part of a sample's JSON that comes from its record, as ``[[path...], kind]`` pairs —
    what a map task reports so that the reduce can make the type plan of :func:`harmonize` without the records.
    (The fields _sample_json adds have one type each, and replace the record's fields of the same name.)"""
    over = set(_FILE_FIELDS) | set(_OVERRIDDEN) | ({"cls", "label"} if labelled else set()) | \
        ({"cluster"} if near else set())
    kinds: dict[tuple, set] = {}
    _collect_kinds({k: v for k, v in record.items() if k not in over}, (), kinds)
    return sorted([list(path), k] for path, ks in kinds.items() for k in ks)


# --------------------------------------------------------------------------------------------------- shard

CORRUPT, DUPLICATE, NEAR, NO_LABEL = "unreadable", "exact_duplicate", "near_duplicate", "missing_label"
PROBLEM = "input_problem"  # listed in rejected.jsonl, nothing removed (a repeated tar member, a bad .json)


def _reject(rejected: list[dict], kind: str, key: str | None, origin: str, reason: str) -> None:
    rejected.append({"kind": kind, "key": key, "origin": origin, "reason": reason})


def _read_inputs(
    srcs: list[Input], spool: Spool, popts: dict, workers: int, prog: Progress, rejected: list[dict],
    budget: MemoryBudget | None = None,
) -> tuple[dict[str, dict], int]:
    """Process every input sample into the spool. Returns (samples by key, how many were reused)."""
    samples: dict[str, dict] = {}  # key -> {"record", "origin", "src", "entry"}
    reused = 0

    def jobs() -> Iterator[tuple[str, Callable[[], tuple] | Done]]:
        nonlocal reused
        for src in srcs:
            for s in src:
                try:
                    data = None if s.sha256 else s.read()
                except OSError as e:  # a dangling link, a FIFO, a device, a file over the size limit
                    _reject(rejected, CORRUPT, s.key, s.origin, f"cannot read ({e.strerror or e})")
                    prog.advance(1, bad=1)
                    continue
                sha = s.sha256 or hashlib.sha256(data).hexdigest()
                if not _admit(samples, s.key, sha, s.record, s.origin, rejected):
                    prog.advance(1, duplicate=1)
                    continue
                samples[s.key]["file"] = spool_file
                entry = spool.lookup(s.key, sha)
                if entry is not None:
                    samples[s.key]["entry"] = entry
                    reused += 1
                    prog.advance(1, reused=1)
                    continue
                if data is None:
                    try:
                        data = s.read()
                    except OSError as e:
                        yield s.key, Done(("bad", f"cannot read ({e.strerror or e})"))
                        continue
                    if hashlib.sha256(data).hexdigest() != sha:  # the manifest's record of the file no longer holds
                        yield (
                            s.key,
                            Done(("bad", "file changed on disk since its manifest row was written (sha256 differs)")),
                        )
                        continue
                known = cache.get(sha) if cache is not None else None
                yield s.key, partial(process_image, data, popts, known[0] if known else None, budget)
            for p in src.problems:  # a damaged tar, a missing file: removed; a repeated member: listed only
                _reject(rejected, CORRUPT if p.lost else PROBLEM, None, p.origin, p.reason)

    spool_file = str(spool.folder / "spool.bin")
    # the shared hash cache holds hashes of images composited on white (gandata-phash-v2's definition)
    cache = HashCache() if popts["background"] == [255, 255, 255] else None
    try:
        for key, result in ordered(jobs(), workers, max(4, 8 * workers), name="shard"):
            e = samples[key]["entry"] = spool.put(key, samples[key]["src"], result)
            if cache is not None and e["ok"]:
                cache.put(samples[key]["src"], from_hex(e["phash"]), e["ow"], e["oh"])
            prog.advance(1, bad=0 if result[0] == "ok" else 1)
    finally:
        if cache is not None:
            cache.close()
    return samples, reused


MAP_FORMAT = 2  # the layout of a map task's part and result; a change makes earlier parts be redone
TASK_SIZE = 2000  # samples of a dataset or image folder per map task (--engine ray); a tar is one task
# (callable, per-task argument makers, task names) -> {name: result}: how the write step runs its tasks on an engine
Runner = Callable[[Callable[..., dict], list[Callable[[], tuple]], list[str]], dict[str, dict]]


def shard(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    name: str,
    options: ShardOptions | None = None,
    progress: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    task_size: int = TASK_SIZE,
    keep_work: bool = False,
) -> ShardSummary:
    """Shard ``inputs`` into ``out`` (a folder, or an object-store URL such as ``s3://bucket/prefix``) as
    ``<name>-train-000000.tar`` … plus ``dataset.json``; returns the summary. ``engine="ray"`` runs the work as
    Ray tasks (map: decode, resize, hash; reduce here: duplicates, split, order; write: one task per shard) with
    byte-identical results.

    Finished means finished: ``dataset.json`` records the job (a digest of the inputs' listing — paths, sizes,
    dates or sha256s, never the pixels — and the options); a run of the same job over a whole set reads no sample,
    submits no task and writes nothing. A new set is written beside the old one (``.work/next``) and moved into
    place just before its ``dataset.json`` replaces the old one, which is never deleted first. The work folder
    (spool, parts, markers) is removed after success unless ``keep_work``."""
    opts = options or ShardOptions()
    opts.validate()
    if engine not in ("local", "ray"):
        raise UserError(f"--engine must be local or ray (got {engine!r})")
    if not NAME_RE.match(name):
        raise UserError(f"--name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit")
    if not inputs:
        raise UserError("no input given; name a dataset folder, a folder of images, or shards")
    t0 = time.monotonic()
    if engine == "ray":  # every path a task sees is resolved here: a worker's current folder is its node's
        inputs, out = [storage.absolute(p) for p in inputs], storage.absolute(out)
    remote = storage.is_url(out)
    out = str(out) if remote else Path(out)
    srcs = [open_input(p) for p in inputs]
    if not remote:
        for p in inputs:
            if out.exists() and Path(p).resolve() == out.resolve():
                raise UserError(f"{p} is both an input and the output folder; give another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output folder {out} ({e.strerror})") from None
    rejected: list[dict] = []
    popts = opts.pixel_options()
    hints = [s.count_hint() for s in srcs]
    with contextlib.ExitStack() as stack:
        if not remote:  # an object store has no lock; one writer per prefix is the user's to keep
            stack.enter_context(FolderLock(out))
            remove_stale_tmp(out)
        job = job_digest(srcs, name, opts)
        done = finished(str(out), job)
        if done is not None:
            done.seconds = round(time.monotonic() - t0, 3)
            return done
        with Progress(f"shard {name}", sum(hints) if None not in hints else None, enabled=progress) as prog:
            if engine == "ray":
                samples, reused, run, tasks, sigs = _map_on_ray(
                    srcs, out, popts, prog, rejected, ray_address, opts.workers, task_size, opts.label_field,
                    opts.dedupe == "near")
            else:
                spool = Spool(_spool_folder(out), popts)
                stack.callback(spool.close)
                samples, reused = _read_inputs(srcs, spool, popts, opts.workers or cores(), prog, rejected,
                                               MemoryBudget(opts.memory << 20))
                run = tasks = sigs = None
        good = _usable(samples, srcs, rejected)
        if opts.dedupe in ("exact", "near"):
            _drop_exact_duplicates(good, rejected)
        if opts.dedupe == "near":
            _drop_near_duplicates(good, opts.threshold, rejected)
        labels = _assign_labels(good, opts.label_field, rejected, sigs) if opts.label_field else None
        summary = _write(str(out), name, opts, popts["format"], srcs, good, labels, rejected, progress, run, sigs,
                         job)
    if not keep_work:
        _remove_work(out)
    summary.reused = reused
    summary.tasks = tasks
    summary.processed = len(samples) - reused
    summary.seconds = round(time.monotonic() - t0, 3)
    summary.rate = round(len(samples) / summary.seconds, 1) if summary.seconds else None
    return summary


def job_digest(srcs: list[Input], name: str, opts: ShardOptions) -> str:
    """What a shard set is made of: the inputs as listed (:meth:`~gandata.datasets.Input.identity`: paths with sizes
    and dates, a manifest's size and date — no sample is read), the name and every option. The same digest in
    ``dataset.json`` means the set there is this job's, whole."""
    options = {k: v for k, v in asdict(opts).items() if k not in ("workers", "memory")}  # they change no byte
    what = [MAP_FORMAT, name, options, [s.identity() for s in srcs]]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def finished(out: str, job: str) -> ShardSummary | None:
    """The summary of the set in ``out`` when it is this job's and whole (its description says so, and every tar it
    names is there at its size: a stat or a HEAD each); else None."""
    try:
        ss = shardset.read(out)
    except UserError:
        return None
    try:
        if ss is None or ss.info.get("job") != job or shardset.verify(ss, checksums=False):
            return None
    except UserError:  # the store refused a HEAD: not known to be whole
        return None
    info = ss.info
    splits = info["splits"]
    return ShardSummary(
        name=info.get("name", ""), out=str(out), resolution=info.get("resolution"),
        image_format=info.get("image_format", ""), counts=info.get("counts", {}),
        shards={sp: len(splits.get(sp, {}).get("shards", [])) for sp in SPLITS},
        patterns={sp: storage.join(out, splits[sp]["pattern"]) if splits.get(sp, {}).get("pattern") else None
                  for sp in SPLITS},
        removed=info.get("removed", {}), input_problems=info.get("input_problems", 0), rejected=[],
        report=storage.join(out, REJECTED), labels=info.get("labels"), warnings=[], finished_before=True)


def _remove_work(out: str | Path) -> None:
    """After success: the spool, the Ray parts and markers (``OUT/.work``, or the cache's spool of an object-store
    output), which are only there to resume a run that did not finish."""
    if storage.is_url(out):
        shutil.rmtree(_spool_folder(out), ignore_errors=True)
        try:
            fs, path = storage.filesystem(storage.join(out, WORK))
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except (OSError, UserError):
            pass  # left for the next run to reuse or remove
        return
    shutil.rmtree(Path(out) / WORK, ignore_errors=True)


def _spool_folder(out: str | Path) -> Path:
    """The local spool: ``OUT/.work``, or for an object-store output a cache folder named after the URL."""
    if not storage.is_url(out):
        return Path(out) / WORK
    from .assets import cache_dir

    return cache_dir() / "shard-spool" / hashlib.sha256(str(out).rstrip("/").encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- the ray engine


def _admit(samples: dict[str, dict], key: str, sha: str, record: dict, origin: str, rejected: list[dict]) -> bool:
    """Take a sample into ``samples`` unless its key is already there: the same file again is a duplicate (listed),
    a different file under the same key is an error. The one rule for both engines."""
    first = samples.get(key)
    if first is None:
        samples[key] = {"record": record, "origin": origin, "src": sha, "entry": None}
        return True
    if first["src"] != sha:
        raise UserError(
            f"two inputs give the key {key!r} to different images ({first['origin']} and {origin}); "
            "shard them separately or rename one"
        )
    _reject(rejected, DUPLICATE, key, origin, f"same file as {first['origin']}")
    return False


def map_part(task_id: str, part: Part, popts: dict, work: str, label_field: str | None = None,
             near: bool = False) -> dict:
    """A map task: process the part's samples as the local engine does (:func:`process_image`), write their bytes
    as one file (``WORK/<id>.bin``: each image, then its record as JSON), and return per sample what the reduce
    step needs — key, source sha256, pixel digest, perceptual hash, sizes, where its bytes lie, its label value,
    the JSON types of its record (an index into ``sigs``) — in input order, and the part's problems. The records
    themselves stay in the part: the write tasks read them back."""
    sigs: dict[str, int] = {}
    items: list[dict] = []
    parts: list[bytes] = []
    end = 0
    samples, problems = part_samples(part)
    for s in samples:
        try:
            data = s.read()
        except MissingInput:
            raise
        except OSError as e:
            if s.sha256 is None:  # not a sample yet: the local engine lists it without taking its key
                items.append({"key": s.key, "origin": s.origin, "unreadable": f"cannot read ({e.strerror or e})"})
                continue
            data, result = None, ("bad", f"cannot read ({e.strerror or e})")
        if data is not None:
            sha = hashlib.sha256(data).hexdigest()
            if s.sha256 is not None and sha != s.sha256:
                result = ("bad", "file changed on disk since its manifest row was written (sha256 differs)")
            else:
                result = process_image(data, popts)
        item = {"key": s.key, "origin": s.origin, "src": s.sha256 or sha}
        if result[0] == "ok":
            _, encoded, digest, ow, oh, w, h, ph = result
            record = json.dumps(s.record, sort_keys=True, ensure_ascii=False).encode()
            item["entry"] = {"ok": True, "offset": end, "length": len(encoded), "rlen": len(record),
                             "digest": digest, "ow": ow, "oh": oh, "w": w, "h": h, "phash": ph}
            parts += [encoded, record]
            end += len(encoded) + len(record)
            sig = json.dumps(record_kinds(s.record, label_field is not None, near))
            item["sig"] = sigs.setdefault(sig, len(sigs))
            if label_field:
                item["label"] = lookup_field(s.record, label_field)
        else:
            item["entry"] = {"ok": False, "reason": result[1]}
        items.append(item)
    storage.put(storage.join(work, f"{task_id}.bin"), b"".join(parts))
    return {"items": items, "sigs": [json.loads(k) for k in sigs],
            "problems": [[p.origin, p.reason, p.lost] for p in problems]}


def _map_on_ray(srcs: list[Input], out: str | Path, popts: dict, prog: Progress, rejected: list[dict],
                address: str | None, workers: int, task_size: int, label_field: str | None,
                near: bool) -> tuple[dict[str, dict], int, Runner, dict, list]:
    """Run the map tasks on Ray and gather their results into the local engine's ``samples`` (in input order, with
    the same key rules) — without the records, which stay in the parts: a sample holds its label value and the
    index of its record's JSON types instead. Returns ``(samples, how many were reused from an earlier run, the
    write step's runner, the map tasks' counts, the record signatures)``."""
    from . import engine
    from .engine import Task

    work = storage.join(out, WORK, "ray")
    markers = storage.join(work, "markers")
    listed: list[Problem] = []
    what = [popts, label_field, near, MAP_FORMAT]  # everything a map task's output depends on, besides its input
    opts_digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    tasks = []
    for part in partitions(srcs, task_size, listed):
        task_id = f"map-{hashlib.sha256((opts_digest + part.ident).encode()).hexdigest()[:24]}"
        tasks.append(Task(task_id, (task_id, part, popts, work, label_field, near)))
    for p in listed:  # rows without a file: found while listing
        _reject(rejected, CORRUPT if p.lost else PROBLEM, None, p.origin, p.reason)
    def advance(_task: Any, result: dict) -> None:
        prog.advance(len(result["items"]))

    present = set(storage.names(work))  # a part deleted since its task finished is made again
    report = engine.run(map_part, tasks, markers, address=address, workers=workers, label="shard map",
                        on_result=advance, intact=lambda t: f"{t.id}.bin" in present,
                        reads=[s.path for s in srcs], writes=[work, str(out)])
    samples: dict[str, dict] = {}
    sigs: dict[str, int] = {}  # every record signature of the run, interned: a sample keeps its index
    reused = 0
    reused_tasks = {t.id for t in tasks} - report.fresh
    for t in tasks:
        result = report.results.pop(t.id)  # dropped as it is taken in: the reduce keeps only the samples
        file = storage.join(work, f"{t.id}.bin")
        local_sigs = [sigs.setdefault(json.dumps(sg), len(sigs)) for sg in result["sigs"]]
        for item in result["items"]:
            if "unreadable" in item:
                _reject(rejected, CORRUPT, item["key"], item["origin"], item["unreadable"])
                continue
            if _admit(samples, item["key"], item["src"], None, item["origin"], rejected):
                s = samples[item["key"]]
                del s["record"]  # it stays in the part, after the image
                s.update(entry=item["entry"], file=file)
                if "sig" in item:
                    s["sig"] = local_sigs[item["sig"]]
                if label_field:
                    s["label"] = item.get("label")
                reused += t.id in reused_tasks
        for origin, reason, lost in result["problems"]:
            _reject(rejected, CORRUPT if lost else PROBLEM, None, origin, reason)
    keep = {t.id for t in tasks}
    for name in storage.names(markers):  # parts of other options or other inputs: not read again
        if name.startswith("map-") and name[:-5] not in keep:
            storage.remove(storage.join(markers, name))
            storage.remove(storage.join(work, name[:-5] + ".bin"))

    def run(fn: Callable[..., dict], args: list[Callable[[], tuple]], names: list[str]) -> dict[str, dict]:
        # each shard's arguments are made when its task is submitted, then dropped: the driver never holds every
        # sample's description at once; the id is a digest of them (made once here, not kept)
        ids = [f"write-{hashlib.sha256(pickle.dumps(a())).hexdigest()[:24]}" for a in args]
        rep = engine.run(fn, [Task(i, a) for i, a in zip(ids, args)], markers, address=address, workers=workers,
                         label="shard write")
        for i in ids:  # a write marker only bridges a killed write step; the next run writes again
            storage.remove(engine.marker(markers, i))
        return {n: rep.results[i] for n, i in zip(names, ids)}

    return samples, reused, run, {"map": report.to_json()}, [json.loads(k) for k in sigs]


# ------------------------------------------------------------------------------------------------ the reduce


def _usable(samples: dict[str, dict], srcs: list[Input], rejected: list[dict]) -> dict[str, dict]:
    good = {}
    for key, s in samples.items():
        if s["entry"]["ok"]:
            good[key] = s
        else:
            _reject(rejected, CORRUPT, key, s["origin"], s["entry"]["reason"])
    if not good:
        bad = [r for r in rejected if r["kind"] != PROBLEM]
        first = f" (first: {bad[0]['origin']}: {bad[0]['reason']})" if bad else ""
        raise UserError(f"no usable images in {', '.join(s.path for s in srcs)}: {len(bad)} unreadable{first}")
    return good


def _drop_exact_duplicates(good: dict[str, dict], rejected: list[dict]) -> None:
    """Keep one sample per pixel digest: the largest source, then the smallest key."""
    by_digest: dict[str, list[str]] = {}
    for key, s in good.items():
        by_digest.setdefault(s["entry"]["digest"], []).append(key)
    for keys in by_digest.values():
        if len(keys) > 1:
            keys.sort(key=lambda k: (-good[k]["entry"]["ow"] * good[k]["entry"]["oh"], k))
            for k in keys[1:]:
                _reject(rejected, DUPLICATE, k, good.pop(k)["origin"], f"exact duplicate of {keys[0]}")


def _drop_near_duplicates(good: dict[str, dict], threshold: int, rejected: list[dict]) -> None:
    """Keep one sample per near-duplicate cluster (largest source, then smallest key); every sample kept records
    its cluster (its own key when it has no near duplicate)."""
    keys = list(good)
    found = clusters(keys, [from_hex(good[k]["entry"]["phash"]) for k in keys],
                     [good[k]["entry"]["ow"] * good[k]["entry"]["oh"] for k in keys], threshold)
    for k in keys:
        c = found.get(k)
        good[k]["cluster"] = c["cluster"] if c else k
        if c and c["representative"] != k:
            reason = f"near duplicate of {c['representative']} ({c['distance']} bits)"
            _reject(rejected, NEAR, k, good.pop(k)["origin"], reason)


def _assign_labels(good: dict[str, dict], field: str, rejected: list[dict], sigs: list | None = None) -> dict:
    """Class ids from a record field: ``{"field", "names", "ids": {key: id}}``; samples without it are rejected."""
    values = {k: lookup_field(s["record"], field) if "record" in s else s.get("label") for k, s in good.items()}
    present = {k: v for k, v in values.items() if v is not None and not isinstance(v, (dict, list))}
    if not present:
        fields = sorted({f for s in good.values() for f in s.get("record", {})} |
                        {path[0] for sig in sigs or [] for path, _ in sig if path})
        raise UserError(f"--label-field {field}: no sample has that field; fields seen: {', '.join(fields[:20])}")
    for k in [k for k in good if k not in present]:
        _reject(rejected, NO_LABEL, k, good.pop(k)["origin"], f"no {field!r} field for a label")
    distinct = sorted(set(present.values()), key=_label_sort_key)
    ids = {v: i for i, v in enumerate(distinct)}
    return {"field": field, "names": [str(v) for v in distinct], "ids": {k: ids[present[k]] for k in good}}


def _sample_json(key: str, s: dict, split: str, labels: dict | None) -> dict:
    """The JSON written beside each image: the source record, minus what described the source file."""
    e = s["entry"]
    js = {k: v for k, v in s["record"].items() if k not in _FILE_FIELDS}
    js.update(key=key, source_sha256=s["src"], original_width=e["ow"], original_height=e["oh"],
              width=e["w"], height=e["h"], split=split, phash=e["phash"])
    if "cluster" in s:
        js["cluster"] = s["cluster"]
    if labels:
        js["cls"] = labels["ids"][key]
        js["label"] = labels["names"][js["cls"]]
    return js


def _order(opts: ShardOptions, good: dict[str, dict]) -> dict[str, list[str]]:
    """The split and order of the kept samples: keys by split."""
    by_split: dict[str, list[str]] = {sp: [] for sp in SPLITS}
    for key in good:
        by_split[split_of(key, opts.val_fraction)].append(key)
    for sp in SPLITS:
        by_split[sp].sort(key=lambda k: order_key(k, opts.seed))
    return by_split


def _lean_plan(good: dict[str, dict], sigs: list) -> list:
    """The type plan over the kept samples from their record signatures (:func:`record_kinds`, interned in
    ``sigs``), as :func:`harmonize` would make it from their JSON."""
    kinds: dict[tuple, set] = {}
    for sig in {s["sig"] for s in good.values()}:
        for path, kind in sigs[sig]:
            kinds.setdefault(tuple(path), set()).add(kind)
    # the fields _sample_json adds: one type each (see _OVERRIDDEN)
    return [[list(path), kind] for path, kind in type_plan(kinds).items()]


def _samples_of(keys: list[str], split: str, good: dict[str, dict], labels: dict | None,
                json_by_key: dict | None) -> list[list]:
    """One shard's samples for :func:`write_shard`: ``[key, [file, offset, length, record length], json, cls]``.
    ``json`` is the sample's JSON, ready (the local engine), or what :func:`write_shard` needs to make it from
    the record stored after the image in a map task's part (``--engine ray``: the records never reach the driver)."""
    out = []
    for key in keys:
        s, e = good[key], good[key]["entry"]
        if json_by_key is not None:
            js: Any = json.dumps(json_by_key[key], sort_keys=True, ensure_ascii=False).encode()
        else:
            js = {"src": s["src"], "ow": e["ow"], "oh": e["oh"], "w": e["w"], "h": e["h"], "phash": e["phash"],
                  "split": split, **({"cluster": s["cluster"]} if "cluster" in s else {})}
        out.append([key, [s["file"], e["offset"], e["length"], e.get("rlen", 0)], js,
                    labels["ids"][key] if labels else None])
    return out


def write_shard(dest: str, samples: list[list], ext: str, plan: list | None = None,
                label_names: list[str] | None = None, on_sample: Callable[[], None] | None = None) -> dict:
    """Write one reproducible tar at ``dest`` (a local path: atomically; a URL: written locally, then uploaded as
    one object) from :func:`_samples_of`; returns ``{"bytes", "sha256"}``. Runs in the driver (``--engine local``)
    or as a Ray task, reading each image (and, for a map task's part, the record after it) from where it lies.
    ``plan``: the type plan of :func:`type_plan` as ``[[path...], kind]`` pairs, for JSON made here."""
    handles: dict[str, Any] = {}
    types = {tuple(path): kind for path, kind in plan or []}

    def read(file: str, offset: int, length: int) -> bytes:
        if storage.is_url(file):
            return storage.read_bytes(file, offset, offset + length)
        f = handles.get(file) or handles.setdefault(file, open(file, "rb"))
        return os.pread(f.fileno(), length, offset)

    def resolved() -> Iterator[tuple[str, bytes]]:
        for key, (file, offset, length, rlen), js, cls in samples:
            data = read(file, offset, length + rlen)
            if not isinstance(js, bytes):  # made here from the record that follows the image in the part
                s = {"record": json.loads(data[length:]), "src": js["src"], "entry": js}
                if "cluster" in js:
                    s["cluster"] = js["cluster"]
                labels = {"ids": {key: cls}, "names": label_names} if cls is not None else None
                made = _conform(_sample_json(key, s, js["split"], labels), (), types)
                js = json.dumps(made, sort_keys=True, ensure_ascii=False).encode()
            fields = {"json": js, ext: data[:length]}
            if cls is not None:
                fields["cls"] = str(cls).encode()
            for fext in sorted(fields):
                yield f"{key}.{fext}", fields[fext]
            if on_sample is not None:
                on_sample()

    try:
        if not storage.is_url(dest):
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            size, sha = shardset.write_tar(Path(dest), resolved())
        else:
            with tempfile.TemporaryDirectory(prefix="gandata-tar-") as tmp:
                size, sha = shardset.write_tar(Path(tmp) / "shard.tar", resolved())
                storage.put_file(Path(tmp) / "shard.tar", dest)
    finally:
        for f in handles.values():
            f.close()
    return {"bytes": size, "sha256": sha}


def _write(
    out: str,
    name: str,
    opts: ShardOptions,
    ext: str,
    srcs: list[Input],
    good: dict[str, dict],
    labels: dict | None,
    rejected: list[dict],
    progress: bool,
    run: Runner | None = None,
    sigs: list | None = None,
    job: str | None = None,
) -> ShardSummary:
    """Write the shards beside the set (``OUT/.work/next``), move them into place, then replace ``dataset.json``
    (never deleted first: a reader sees the old description until the new one is there). ``run`` writes the shards
    as tasks (``--engine ray``); without it they are written here, one after another."""
    by_split = _order(opts, good)
    total = sum(len(v) for v in by_split.values())
    split_of_key = {k: sp for sp in SPLITS for k in by_split[sp]}
    lean = "record" not in next(iter(good.values()))  # --engine ray: the records stayed in the parts
    if lean:
        json_by_key, plan = None, _lean_plan(good, sigs or [])
    else:
        json_by_key, plan = dict(zip(split_of_key, harmonize([_sample_json(k, good[k], split_of_key[k], labels)
                                                               for k in split_of_key]))), None
    nxt = storage.join(out, WORK, "next")  # the new tars, until all are whole
    rejected.sort(key=lambda r: (r["kind"], r["origin"], r["reason"], r["key"] or ""))
    storage.put(storage.join(out, REJECTED),
                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected).encode())

    layout: dict[str, list[tuple[str, list[str]]]] = {}  # split -> [(file name, keys)]
    for sp in SPLITS:
        keys = by_split[sp]
        n_shards = shard_count(len(keys), opts.maxcount, opts.min_shards if sp == "train" else 1)
        sizes, starts = even_sizes(len(keys), n_shards), 0
        layout[sp] = []
        for i, n in enumerate(sizes):
            layout[sp].append((shardset.shard_name(name, sp, i), keys[starts: starts + n]))
            starts += n
    jobs = [(fname, sp, keys) for sp in SPLITS for fname, keys in layout[sp]]
    names = labels["names"] if labels else None
    if run is not None:
        written = run(write_shard, [partial(lambda f, sp, k: (storage.join(nxt, f), _samples_of(
            k, sp, good, labels, json_by_key), ext, plan, names), f, sp, k) for f, sp, k in jobs],
            [f for f, _, _ in jobs])
    else:
        written = {}
        with Progress(f"write {name}", total, enabled=progress) as prog:
            for fname, sp, keys in jobs:
                written[fname] = write_shard(storage.join(nxt, fname),
                                             _samples_of(keys, sp, good, labels, json_by_key), ext, plan, names,
                                             lambda: prog.advance(1))
    splits_info: dict[str, dict] = {}
    for sp in SPLITS:
        shards = [{"name": f, "samples": len(k), "bytes": written[f]["bytes"], "sha256": written[f]["sha256"]}
                  for f, k in layout[sp]]
        splits_info[sp] = {
            "pattern": shardset.brace_pattern([s["name"] for s in shards]),
            "samples": len(by_split[sp]),
            "shards": shards,
        }

    removed = {kind: sum(1 for r in rejected if r["kind"] == kind) for kind in (CORRUPT, DUPLICATE, NEAR, NO_LABEL)}
    problems = sum(1 for r in rejected if r["kind"] == PROBLEM)
    label_info = None
    if labels:
        c = Counter(labels["ids"].values())
        label_info = {"field": labels["field"], "names": labels["names"],
                      "counts": {nm: c[i] for i, nm in enumerate(labels["names"])}}
    for fname in written:  # every new tar is whole: into place, then the description that names them
        storage.move(storage.join(nxt, fname), storage.join(out, fname))
    info = {
        "format": "webdataset",
        "created_by": f"gandata {__version__}",
        "job": job,
        "name": name,
        "resolution": opts.size if opts.resize != "keep-ratio" else None,
        "image_format": ext,
        "fields": sorted(["json", ext] + (["cls"] if labels else [])),
        "counts": {"train": len(by_split["train"]), "val": len(by_split["val"]), "total": total},
        "splits": splits_info,
        "labels": label_info,
        "removed": removed,
        "input_problems": problems,  # listed in rejected.jsonl; nothing was removed for them
        "sources": [s.describe() for s in srcs],
        "options": asdict(opts),
    }
    shardset.write_info(out, info)
    stale = shardset.stale_shard_re(name)
    for fname in storage.names(out):
        if stale.match(fname) and fname not in written:
            storage.remove(storage.join(out, fname))

    warnings = []
    n_train, n_train_shards = len(by_split["train"]), len(splits_info["train"]["shards"])
    if n_train_shards < 8:
        warnings.append(
            f"only {n_train_shards} train shard(s): training with several GPUs × loader workers (8 readers is typical) "
            "needs at least that many shards to give every reader its own; "
            + (f"use --maxcount {n_train // 8} to get 8" if n_train >= 8 else "add more images")
        )
    return ShardSummary(
        name=name,
        out=str(out),
        resolution=info["resolution"],
        image_format=ext,
        counts=info["counts"],
        shards={sp: len(splits_info[sp]["shards"]) for sp in SPLITS},
        patterns={sp: storage.join(out, splits_info[sp]["pattern"]) if splits_info[sp]["pattern"] else None
                  for sp in SPLITS},
        removed=removed,
        input_problems=problems,
        rejected=rejected[:20],
        report=storage.join(out, REJECTED),
        labels=label_info,
        warnings=warnings,
    )


def default_name(src: str | os.PathLike, data_dir: str | os.PathLike) -> str:
    """``DATA/<dataset>/<stage>`` → ``<dataset>``; any other path → its folder (or file stem) name."""
    p = Path(src).resolve()
    try:
        rel = p.relative_to(Path(data_dir).resolve())
        if len(rel.parts) >= 1:
            return rel.parts[0]
    except ValueError:
        pass
    base = p.name if p.is_dir() else p.name.split(".")[0].split("{")[0].rstrip("-_")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "dataset"
    return name


def shard_all(data_dir: str | os.PathLike, options: ShardOptions | None = None,
              progress: bool = False) -> list[ShardSummary]:
    """Shard every dataset under the data dir, each from its most processed stage, into ``DATA/<dataset>/shards``."""
    found = dataset_stage_folders(data_dir)
    if not found:
        raise UserError(
            f"no datasets under {data_dir} (looked for {data_dir}/<dataset>/<stage>/manifest.jsonl); "
            "fetch one first, or name the folders to shard"
        )
    return [shard([str(stage)], Path(data_dir) / ds / "shards", ds, options, progress) for ds, stage in found.items()]

