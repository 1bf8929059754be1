"""Inputs (dataset folders, image folders, tars) → WebDataset shards + ``dataset.json``: the run, the reduce and the
writer of ``gandata shard``.

How a run goes:

1. The map (:mod:`gandata.shard_map`): every input sample is decoded (a JPEG at the smallest DCT scale that keeps
   twice the output size: ``draft``), made RGB, resized, hashed (the output pixels) and encoded — in a thread pool
   into a spool in ``OUT/.work``, or as Ray tasks — giving one row of :class:`~gandata.records.Items` per key (a
   few hundred bytes a sample: a million samples fit in a few hundred MB). A killed run, or a later run over grown
   inputs, redoes only what is not there yet.
2. The reduce, here: exact duplicates (identical pixels at the output size: the same training sample) are removed,
   keeping the largest source then the smallest key — and with ``--dedupe near``, near duplicates (gandata-phash-v2
   within ``--threshold`` bits) the same way; unreadable inputs are counted; both are listed, with a kind and a
   reason, in ``rejected.jsonl`` and the summary. Labels become class ids.
3. The split comes from a hash of the key (so a sample never changes split when data is added), the order from a
   hash of seed and key (so the same inputs give the same order whatever order they were read in).
4. The writer, here: shards are written with fixed tar metadata (mtime, uid/gid, mode, member order), so the same
   inputs and options give byte-identical tars, each sample's JSON made from its record (read back from disk) with
   one type per field across the set (:mod:`gandata.records`). They are written into ``OUT/.work/next``, moved
   into their generation folder beside the old set (:mod:`gandata.shardset`), and ``dataset.json``, replaced in one
   atomic write, switches readers from the old set to the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, images, shardset, storage
from .datasets import Dataset, dataset_stage_folders, is_dataset
from .declarations import SHARD, clean_name
from .dedupe import HASH_NAME, clusters
from .errors import UserError, hint, named
from .fileio import FolderLock, atomic_file, json_bytes, remove_stale_tmp
from .inputs import Input, open_input
from .options import Color, Declaration, Declared, check_call
from .paths import refuse_other_kind, refuse_overlap
from .progress import Progress
from .records import Item, Items, Signatures, conform, plan_of, sample_json
from .shard_map import CORRUPT, DUPLICATE, MAP_FORMAT, PROBLEM, Rejected, Runner, Spool, map_local, map_on_ray
from .shardset import SPLITS
from .summary import Summary
from .workers import MemoryBudget, cores, steady_heap

WORK = ".work"
REJECTED = "rejected.jsonl"
NEAR, NO_LABEL = "near_duplicate", "missing_label"  # kinds of rejected.jsonl rows (and CORRUPT, DUPLICATE, PROBLEM)


_DEFAULT = SHARD.defaults()


@dataclass
class ShardOptions(Declared):
    """What ``gandata shard`` does to the pixels and the set: the declared options of ``gandata shard``
    (:mod:`gandata.declarations`) under their declared names and defaults, checked by that declaration when made."""

    size: int = _DEFAULT["size"]
    resize: str = _DEFAULT["resize"]
    format: str = _DEFAULT["format"]  # of the images in the shards
    quality: int = _DEFAULT["quality"]
    background: Color = _DEFAULT["background"]
    pad_color: Color = _DEFAULT["pad_color"]
    max_pixels: int = images.DEFAULT_MAX_PIXELS  # the library's own (not an option)
    val_fraction: float = _DEFAULT["val_fraction"]
    seed: int = _DEFAULT["seed"]
    maxcount: int = _DEFAULT["maxcount"]
    min_shards: int = _DEFAULT["min_shards"]
    dedupe: str = _DEFAULT["dedupe"]  # exact | near | none
    threshold: int = _DEFAULT["threshold"]  # bits, for --dedupe near
    label_field: str | None = _DEFAULT["label_field"]
    draft: bool = _DEFAULT["draft"]  # JPEGs decoded at the smallest DCT scale that keeps twice the output size
    workers: int = _DEFAULT["workers"]  # 0: one per CPU core
    memory: int = _DEFAULT["memory"]  # MiB that decoded images may hold at once, all workers together

    def declaration(self) -> Declaration:
        return SHARD

    def effective(self) -> dict:
        """The options that change a byte of the set, as they act (what ``dataset.json`` records and the job digest
        holds): ``--threshold`` only under ``--dedupe near``, and :meth:`pixel_options`' own rules (``--quality``
        not for PNG, ``--pad-color`` only under ``--resize pad``, a colour by its value); ``--workers`` and
        ``--memory`` never."""
        return {**self.pixel_options(), "val_fraction": self.val_fraction, "seed": self.seed,
                "maxcount": self.maxcount, "min_shards": self.min_shards, "dedupe": self.dedupe,
                "threshold": self.threshold if self.dedupe == "near" else None, "label_field": self.label_field}

    def pixel_options(self) -> dict:
        """The options that change a processed image; the spool is reused only while these are unchanged."""
        fmt = self.format.lower()
        return {
            "size": self.size,
            "resize": self.resize,
            "format": "jpg" if fmt == "jpeg" else fmt,
            "quality": self.quality if fmt != "png" else None,
            "background": list(Color.parse(self.background).rgb),
            "pad_color": list(Color.parse(self.pad_color).rgb) if self.resize == "pad" else None,
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
                    f"{self.out}, every shard's sha256 checked); nothing processed or written",
                    *(f"  warning: {w}" for w in self.warnings)]
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
        # the set's folder, not its tars' pattern: dataset.json names the tars (a later run moves them to another
        # generation folder) and carries the labels and the resolution the trainers read
        if c["train"]:  # an empty train split: its warning says what to change, and no trainer could read it
            out.append(f"  train on it: {hint('shards', self.out, command='train KIND')}")
        patterns = [p for p in self.patterns.values() if p]
        if patterns:
            out.append(f"  its tars now: {' and '.join(patterns)}")
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


# ------------------------------------------------------------------------------------------------- helpers


def _unit_hash(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:15], 16) / float(16**15)


def split_of(key: str, val_fraction: float) -> str:
    """The split of a key: fixed by the key alone, so adding data never moves a sample between splits."""
    return "val" if _unit_hash(f"gandata-split:{key}") < val_fraction else "train"


def order_digest(key: str, seed: int) -> bytes:
    """What the samples of a split are sorted by: a hash of seed and key, so the same inputs give the same order
    whatever order they were read in."""
    return hashlib.sha1(f"gandata-order:{seed}:{key}".encode()).digest()


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


def shard(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    name: str,
    options: ShardOptions | None = None,
    progress: bool = False,
    engine: str = _DEFAULT["engine"],
    ray_address: str | None = None,
    task_size: int = _DEFAULT["task_size"],
    keep_work: bool = _DEFAULT["keep_work"],
) -> ShardSummary:
    """Shard ``inputs`` into ``out`` (a folder, or an object-store URL such as ``s3://bucket/prefix``) as
    ``<name>-train-000000.tar`` … plus ``dataset.json``; returns the summary. ``engine="ray"`` runs the work as
    Ray tasks (map: decode, resize, hash; reduce here: duplicates, split, order; write: one task per shard) with
    byte-identical results.

    Finished means finished: ``dataset.json`` records the job (:func:`job_digest`: the inputs' content, the name
    and the options that change a byte); a run of the same job over a set whose every tar has the sha256 its
    description records processes no sample, submits no task and writes nothing. A new set is written into a new
    generation folder beside the old one, which its ``dataset.json``, replacing the old one in one atomic write,
    then names (:func:`_publish`). Inputs are named as written — in records, messages and ``dataset.json`` — on
    both engines; Ray's tasks are given absolute paths. The work folder (spool, parts, markers) is removed after
    success unless ``keep_work``."""
    opts = options or ShardOptions()
    steady_heap()  # the columns of a million samples grow without leaving holes in the heap
    check_call(SHARD, name=name, engine=engine, task_size=task_size, keep_work=keep_work)
    if not inputs:
        raise UserError("no input given; name a dataset folder, a folder of images, or shards")
    t0 = time.monotonic()
    shown = str(out)  # the output as written: what the summary names
    if engine == "ray":  # every path a task sees is resolved here: a worker's current folder is its node's
        out = storage.absolute(out)
    remote = storage.is_url(out)
    out = str(out) if remote else Path(out)
    srcs = [open_input(p) for p in inputs]
    refuse_overlap(out, named("out"), [(p, "SRC") for p in inputs])
    refuse_other_kind(out, "shard set", named("out"))
    if not remote:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output folder {out} ({e.strerror})") from None
    rejected = Rejected()  # rejected.jsonl's rows, on disk until written
    sigs = Signatures()  # the records' JSON types, interned: an item keeps the index of its own
    popts = opts.pixel_options()
    hints = [s.count_hint() for s in srcs]
    with contextlib.ExitStack() as stack:
        stack.callback(rejected.close)
        if not remote:  # an object store has no lock; one writer per prefix is the user's to keep
            stack.enter_context(FolderLock(out))
            remove_stale_tmp(out)
        job = job_digest(srcs, name, opts)
        srcs.sort(key=Input.identity)  # the same set whatever order the inputs were given in
        done = finished(str(out), job, shown)
        if done is not None:
            if not keep_work:
                _remove_work(out)  # a run killed after its swap left it
            done.seconds = round(time.monotonic() - t0, 3)
            return done
        with Progress(f"shard {name}", sum(hints) if None not in hints else None, enabled=progress) as prog:
            near = opts.dedupe == "near"
            if engine == "ray":
                items, reused, run, tasks = map_on_ray(srcs, out, WORK, popts, prog, rejected, ray_address,
                                                       opts.workers, task_size, opts.label_field, near, sigs)
            else:
                spool = Spool(_spool_folder(out), popts)
                stack.callback(spool.close)
                items, reused = map_local(srcs, spool, popts, opts.workers or cores(), prog, rejected,
                                          opts.label_field, near, sigs, MemoryBudget(opts.memory << 20))
                spool.flush()  # every record on disk: the writer reads them back
                run = tasks = None
        stack.callback(items.close)
        _usable(items, srcs, rejected)
        if opts.dedupe in ("exact", "near"):
            _drop_exact_duplicates(items, rejected)
        mass = _drop_near_duplicates(items, opts.threshold, rejected, str(out)) if opts.dedupe == "near" else None
        if mass is None:
            storage.remove(storage.join(str(out), NEAR_SHEET))  # an earlier run's sheet says nothing true now
        labels = _assign_labels(items, opts.label_field, rejected, sigs.all()) if opts.label_field else None
        info, first_rejected = _write(str(out), name, opts, popts["format"], srcs, items, labels, rejected,
                                      progress, run, sigs.all(), job, mass)
        summary = _summary(shown, info, first_rejected)
    if not keep_work:
        _remove_work(out)
    summary.reused = reused
    summary.tasks = tasks
    summary.processed = len(items) - reused
    summary.seconds = round(time.monotonic() - t0, 3)
    summary.rate = round(len(items) / summary.seconds, 1) if summary.seconds else None
    return summary


SET_FORMAT = 2  # how a set is laid out (2: its tars in a generation folder); a change writes finished sets again


def job_digest(srcs: list[Input], name: str, opts: ShardOptions) -> str:
    """What a shard set is made of, and only what changes a byte of it: the inputs' content
    (:meth:`~gandata.inputs.Input.identity`, in any order, by any path to them), the name and the options as they
    act (:meth:`ShardOptions.effective`). The same digest in ``dataset.json``, over tars whose sha256s agree with
    it, means the set there is this job's, whole."""
    what = [SET_FORMAT, MAP_FORMAT, name, opts.effective(), sorted(s.identity() for s in srcs)]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def finished(out: str, job: str, shown: str) -> ShardSummary | None:
    """The summary of the set in ``out`` (``shown`` as the user wrote it) when it is this job's and whole: its
    description names this job and every tar it names has the sha256 recorded there (each tar read once); else
    None. What a run killed during its swap to this set left of the set before it is removed."""
    try:
        ss = shardset.read(out)
        if ss is None or ss.info.get("job") != job or shardset.verify(ss):
            return None
    except (UserError, OSError):  # a damaged description, an unreadable tar, a store that refused: not whole
        return None
    shardset.remove_leftovers(out, ss.info)
    done = _summary(shown, ss.info, [])
    done.finished_before = True
    return done


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


# ------------------------------------------------------------------------------------------------ the reduce


def _usable(items: Items, srcs: list[Input], rejected: Rejected) -> None:
    """List the unusable rows (they are not alive); an error when no row is usable."""
    for r, reason in sorted(items.reasons.items()):
        rejected.add(CORRUPT, items.key(r), items.origin(r), reason)
    if not any(items.alive):
        bad, first = len(rejected) - rejected.counts[PROBLEM], rejected.first_lost
        said = f" (first: {first['origin']}: {first['reason']})" if first else ""
        raise UserError(f"no usable images in {', '.join(s.path for s in srcs)}: {bad} unreadable{said}")


def _remove(items: Items, rows: list[int], rejected: Rejected, kind: str, reason: Callable[[int], str]) -> None:
    for r in rows:
        items.alive[r] = 0
        rejected.add(kind, items.key(r), items.origin(r), reason(r))


def _drop_exact_duplicates(items: Items, rejected: Rejected) -> None:
    """Keep one sample per pixel digest: the largest source, then the smallest key. (Rows are sorted by the first 8
    bytes of their digest, a few bytes a row; each run of equal prefixes is then split by the whole digest.)"""
    rows = items.rows()
    prefix = np.frombuffer(items.digests(), dtype=np.uint64).reshape(-1, 4)[rows, 0]
    order = np.argsort(prefix, kind="stable")
    prefix = prefix[order]
    same = np.flatnonzero(prefix[1:] == prefix[:-1])  # i: sorted row i and i + 1 share a prefix
    del prefix
    if not len(same):
        return
    firsts = same[np.r_[True, np.diff(same) > 1]]  # where each run of equal prefixes starts
    lasts = same[np.r_[np.diff(same) > 1, True]] + 1
    for a, b in zip(firsts.tolist(), lasts.tolist()):
        groups: dict[bytes, list[int]] = {}
        for r in rows[order[a:b + 1]].tolist():
            groups.setdefault(items.digest(r), []).append(r)
        for group in groups.values():
            if len(group) > 1:
                group.sort(key=lambda r: (-items.area(r), items.key(r)))
                kept = items.key(group[0])
                _remove(items, group[1:], rejected, DUPLICATE, lambda _r, k=kept: f"exact duplicate of {k}")


MASS_REMOVAL = 0.5  # near-duplicate removal taking more than this share of the images is said loudly
NEAR_SHEET = "near-duplicates.png"


def _drop_near_duplicates(items: Items, threshold: int, rejected: Rejected, out: str) -> dict | None:
    """Keep one sample per near-duplicate cluster (largest source, then smallest key); every sample kept records
    its cluster (its own key when it has no near duplicate). Returns what the warning says when this removed most
    of the set (:func:`_mass_removal`), else None."""
    rows = items.rows().tolist()
    keys = [items.key(r) for r in rows]
    hashes, areas = [items.phash[r] for r in rows], [items.area(r) for r in rows]
    found = clusters(keys, hashes, areas, threshold)
    lost = []
    for r, k in zip(rows, keys):
        c = found.get(k)
        items.cluster[r] = items.keys.find(c["cluster"]) if c else r
        if c and c["representative"] != k:
            lost.append(r)
    _remove(items, lost, rejected, NEAR, lambda r: (f"near duplicate of {found[items.key(r)]['representative']} "
                                                    f"({found[items.key(r)]['distance']} bits)"))
    if len(lost) <= MASS_REMOVAL * len(rows):
        return None
    return _mass_removal(items, found, keys, hashes, areas, threshold, len(lost), out)


def _kept(found: dict[str, dict], n: int) -> int:
    """How many of ``n`` samples a clustering keeps: one per cluster, and every sample in none."""
    sizes = Counter(c["cluster"] for c in found.values())
    return n - sum(v - 1 for v in sizes.values())


def _mass_removal(items: Items, found: dict[str, dict], keys: list[str], hashes: list[int], areas: list[int],
                  threshold: int, removed: int, out: str) -> dict:
    """What the warning for a near-duplicate removal that took most of the set says (``dataset.json`` keeps it, so
    a finished re-run says it again: :func:`_near_warning`): the biggest clusters' sizes, whether their contact
    sheet (``OUT/near-duplicates.png``) was drawn, and the largest threshold that would keep at least half."""
    n = len(keys)
    sizes = Counter(c["cluster"] for c in found.values()).most_common()
    advice = ["dedupe", "exact", None]  # the option that keeps more, its value, and how many it keeps: named when
    for t in range(threshold - 1, -1, -1):  # the warning is shown (the form that works where it is shown)
        kept = _kept(clusters(keys, hashes, areas, t), n)
        if kept >= n / 2:
            advice = ["threshold", t, kept]
            break
    try:
        _cluster_sheet(items, found, [c for c, _ in sizes[:6]], threshold, storage.join(out, NEAR_SHEET))
        sheet = True
    except (OSError, images.ImageError):
        sheet = False
    return {"removed": removed, "of": n, "threshold": threshold, "biggest": [size for _, size in sizes[:5]],
            "sheet": sheet, "advice": advice}


def _near_warning(mass: dict, out: str) -> str:
    sheet = f"see {storage.join(out, NEAR_SHEET)}" if mass["sheet"] else \
        "no contact sheet: the images could not be read back"
    key, value, kept = mass["advice"]
    advice = (f"{hint('threshold', value)} keeps {kept}" if key == "threshold"
              else f"{hint('dedupe', 'exact')} keeps every distinct image")
    return (f"near-duplicate removal took {mass['removed']} of {mass['of']} images "
            f"({mass['removed'] / mass['of']:.0%}) at {named('threshold', mass['threshold'])}: the biggest clusters "
            f"hold {', '.join(map(str, mass['biggest']))} images ({sheet}); if they are different pictures (one "
            f"template in other colours), {advice}")


def _cluster_sheet(items: Items, found: dict[str, dict], biggest: list[str], threshold: int, path: str) -> None:
    """dedupe's cluster sheet of the biggest clusters, drawn from the processed images (the spool or the parts)."""
    from .dedupe import _shown, cluster_sheet, thumbnail

    members: dict[str, list[dict]] = {c: [] for c in biggest}
    for k, c in found.items():
        if c["cluster"] in members:
            members[c["cluster"]].append({"key": k, **c})
    ordered = list(members.values())
    handles: dict[str, Any] = {}
    try:
        pictures = {}
        for row in ordered:
            for m in _shown(row):
                r = items.keys.find(m["key"])
                pictures[m["key"]] = thumbnail(_read_at(items.files[items.file[r]], items.offset[r], items.length[r],
                                                        handles))
    finally:
        for f in handles.values():
            f.close()
    cluster_sheet(ordered, pictures, path, threshold)


def _read_at(file: str, offset: int, length: int, handles: dict[str, Any]) -> bytes:
    """``length`` bytes at ``offset`` of a local file (its handle kept open in ``handles``) or an object."""
    if storage.is_url(file):
        return storage.read_bytes(file, offset, offset + length)
    f = handles.get(file) or handles.setdefault(file, open(file, "rb"))
    return os.pread(f.fileno(), length, offset)


def _assign_labels(items: Items, field: str, rejected: Rejected, sigs: list) -> dict:
    """Class ids from a record field, into each row's ``cls``: ``{"field", "names"}``; samples without it are
    rejected."""
    rows = items.rows()
    label = np.frombuffer(items.label, dtype=np.int32)
    used = np.unique(label[rows])
    used = used[used >= 0].tolist()
    if not used:
        fields = sorted({path[0] for sig in np.unique(np.frombuffer(items.sig, dtype=np.int32)[rows]).tolist()
                         for path, _ in sigs[sig] if path})
        raise UserError(f"{named('label_field', field)}: no sample has that field; fields seen: "
                        f"{', '.join(fields[:20])}")
    _remove(items, rows[label[rows] < 0].tolist(), rejected, NO_LABEL, lambda _r: f"no {field!r} field for a label")
    distinct = sorted(used, key=lambda lid: _label_sort_key(items.labels[lid]))
    ids = np.full(len(items.labels), -1, dtype=np.int32)
    ids[distinct] = np.arange(len(distinct), dtype=np.int32)
    rows = items.rows()
    np.frombuffer(items.cls, dtype=np.int32)[rows] = ids[label[rows]]
    return {"field": field, "names": [str(items.labels[lid]) for lid in distinct]}


def _chunks(rows: np.ndarray, size: int = 1 << 16) -> Iterator[int]:
    """The rows as Python ints, a chunk at a time (a million at once would be 36 MB of int objects)."""
    for start in range(0, len(rows), size):
        yield from rows[start: start + size].tolist()


def _order(opts: ShardOptions, items: Items) -> dict[str, np.ndarray]:
    """The split and order of the kept samples: rows by split, sorted by :func:`order_digest` (the digests in one
    buffer, 20 bytes a row)."""
    rows = items.rows()
    val = np.fromiter((split_of(items.key(r), opts.val_fraction) == "val" for r in _chunks(rows)), dtype=bool,
                      count=len(rows))
    by_split = {}
    for sp, chosen in zip(SPLITS, (rows[~val], rows[val])):
        digests = bytearray(20 * len(chosen))
        for i, r in enumerate(_chunks(chosen)):
            digests[20 * i: 20 * i + 20] = order_digest(items.key(r), opts.seed)
        by_split[sp] = chosen[np.argsort(np.frombuffer(digests, dtype="S20"), kind="stable")]
    return by_split


# ------------------------------------------------------------------------------------------------ the writer


def write_shard(dest: str, items: list[Item], split: str, ext: str, plan: list,
                label_names: list[str] | None = None, on_sample: Callable[[], None] | None = None) -> dict:
    """Write one reproducible tar at ``dest`` (a local path: atomically; a URL: written locally, then uploaded as
    one object) of ``items``; returns ``{"bytes", "sha256"}``. Runs in the driver (``--engine local``) or as a Ray
    task, reading each image and its record from where they lie (the spool and the run's record file, or a map
    task's part). ``plan``: the type plan (:func:`~gandata.records.plan_of`) that the JSON is conformed to."""
    handles: dict[str, Any] = {}
    types = {tuple(path): kind for path, kind in plan}

    def read(file: str, offset: int, length: int) -> bytes:
        return _read_at(file, offset, length, handles)

    def members() -> Iterator[tuple[str, bytes]]:
        for item in items:
            image = read(item.file, item.offset, item.length)
            record = json.loads(read(item.rfile, item.roffset, item.rlen))
            made = conform(sample_json(item, record, split, label_names), types)
            fields = {"json": json_bytes(made, sort_keys=True), ext: image}
            if item.cls is not None:
                fields["cls"] = str(item.cls).encode()
            for fext in sorted(fields):
                yield f"{item.key}.{fext}", fields[fext]
            if on_sample is not None:
                on_sample()

    try:
        if not storage.is_url(dest):
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            size, sha = shardset.write_tar(Path(dest), members())
        else:
            with tempfile.TemporaryDirectory(prefix="gandata-tar-") as tmp:
                size, sha = shardset.write_tar(Path(tmp) / "shard.tar", members())
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
    items: Items,
    labels: dict | None,
    rejected: Rejected,
    progress: bool,
    run: Runner | None,
    sigs: list,
    job: str,
    mass: dict | None,
) -> tuple[dict, list[dict]]:
    """Write the shards into ``OUT/.work/next`` and publish them (:func:`_publish`); returns the set's description
    and the first rows of ``rejected.jsonl``. ``run`` writes the shards as tasks (``--engine ray``); without it they
    are written here, one after another."""
    by_split = _order(opts, items)
    alive = items.rows()
    plan = plan_of(sigs, set(np.unique(np.frombuffer(items.sig, dtype=np.int32)[alive]).tolist()))
    first_rejected = _write_rejected(rejected, storage.join(out, REJECTED))
    layout = _layout(name, opts, by_split)
    nxt = storage.join(out, WORK, "next")  # the new tars, until all are whole
    written = _write_tars(nxt, layout, items, ext, plan, labels["names"] if labels else None, run,
                          lambda: Progress(f"write {name}", sum(len(v) for v in by_split.values()), enabled=progress))
    info = _describe(name, opts, ext, srcs, items, labels, rejected, layout, written, job, mass)
    _publish(out, nxt, info)
    return info, first_rejected


def _layout(name: str, opts: ShardOptions, by_split: dict[str, np.ndarray]) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Each split's shards: ``[(file name, rows)]``, as even in size as ``--maxcount`` and ``--min-shards`` allow."""
    layout: dict[str, list[tuple[str, np.ndarray]]] = {}
    for sp in SPLITS:
        keys = by_split[sp]
        sizes = even_sizes(len(keys), shard_count(len(keys), opts.maxcount, opts.min_shards if sp == "train" else 1))
        bounds = [0, *itertools.accumulate(sizes)]
        layout[sp] = [(shardset.shard_name(name, sp, i), keys[bounds[i]: bounds[i + 1]]) for i in range(len(sizes))]
    return layout


def _write_tars(nxt: str, layout: dict[str, list[tuple[str, np.ndarray]]], items: Items, ext: str, plan: Any,
                names: list[str] | None, run: Runner | None, progress: Callable[[], Progress]) -> dict[str, dict]:
    """Every shard of ``layout`` written into ``nxt``: ``{file name: {"bytes", "sha256"}}`` — as Ray tasks with
    ``run``, else here, one after another."""
    jobs = [(fname, sp, rows) for sp in SPLITS for fname, rows in layout[sp]]

    def task(fname: str, sp: str, rows: np.ndarray) -> tuple:  # what a writer takes, made per shard, no origins
        return storage.join(nxt, fname), [items.item(r, origin=False) for r in rows.tolist()], sp, ext, plan, names

    if run is not None:
        return run(write_shard, [partial(task, *j) for j in jobs], [fname for fname, _, _ in jobs])
    with progress() as prog:
        return {fname: write_shard(*task(fname, sp, rows), lambda: prog.advance(1)) for fname, sp, rows in jobs}


def _describe(name: str, opts: ShardOptions, ext: str, srcs: list[Input], items: Items, labels: dict | None,
              rejected: Rejected, layout: dict[str, list[tuple[str, np.ndarray]]], written: dict[str, dict],
              job: str, mass: dict | None) -> dict:
    """The new set's ``dataset.json``: every shard's name (in the set's generation folder), samples, bytes and
    sha256 per split, the labels, what was removed and what the summary warned of, the sources and the options
    as they acted — made from the job alone, so the same job writes the same bytes on any engine or machine."""
    gen = shardset.generation([(f, written[f]["sha256"]) for sp in SPLITS for f, _ in layout[sp]])
    splits_info = {}
    for sp in SPLITS:
        shards = [{"name": f"{gen}/{f}", "samples": len(k), "bytes": written[f]["bytes"],
                   "sha256": written[f]["sha256"]} for f, k in layout[sp]]
        splits_info[sp] = {"pattern": shardset.brace_pattern([s["name"] for s in shards]),
                           "samples": sum(len(k) for _, k in layout[sp]), "shards": shards}
    label_info = None
    if labels:
        c = np.bincount(np.frombuffer(items.cls, dtype=np.int32)[items.rows()],
                        minlength=len(labels["names"])).tolist()
        label_info = {"field": labels["field"], "names": labels["names"],
                      "counts": {nm: c[i] for i, nm in enumerate(labels["names"])}}
    counts = {sp: splits_info[sp]["samples"] for sp in SPLITS}
    return {
        "format": "webdataset",
        "created_by": f"gandata {__version__}",
        "job": job,
        "name": name,
        "resolution": opts.size if opts.resize != "keep-ratio" else None,
        "image_format": ext,
        "fields": sorted(["json", ext] + (["cls"] if labels else [])),
        "counts": {"train": counts["train"], "val": counts["val"], "total": counts["train"] + counts["val"]},
        "splits": splits_info,
        "labels": label_info,
        "removed": {kind: rejected.counts[kind] for kind in (CORRUPT, DUPLICATE, NEAR, NO_LABEL)},
        "input_problems": rejected.counts[PROBLEM],  # listed in rejected.jsonl; nothing was removed for them
        "near_duplicates": mass,  # the mass-removal warning's facts (None: no warning)
        "sources": [s.describe() for s in srcs],
        "options": opts.effective(),
    }


def _publish(out: str, nxt: str, info: dict) -> None:
    """The swap to a new set, atomic for readers: the new tars (each whole, in ``nxt``) into their generation folder
    beside the old set, which nothing reads yet; then the description that names them, in one atomic write (a
    renamed temporary; one PUT), which moves every reader from the old set to the new; then what no description
    names any more is removed (:func:`~gandata.shardset.remove_leftovers`). A kill between any two steps leaves
    one whole, described set, the old or the new, and the same command completes the rest."""
    for s in shardset.ShardSet(out, info).shards():
        storage.move(storage.join(nxt, s["name"].rsplit("/", 1)[-1]), storage.join(out, s["name"]))
    shardset.write_info(out, info)
    shardset.remove_leftovers(out, info)


def _summary(out: str, info: dict, first_rejected: list[dict]) -> ShardSummary:
    """The summary of the set ``info`` describes (``out`` as the user wrote it), with the set's warnings: those
    the reduce had, kept in ``dataset.json``, and too few shards for many readers."""
    splits, options = info["splits"], info.get("options") or {}
    warnings = [_near_warning(info["near_duplicates"], out)] if info.get("near_duplicates") else []
    n_train, n_train_shards = info["counts"]["train"], len(splits["train"]["shards"])
    if n_train == 0 and info["counts"]["val"]:
        warnings.append(_empty_train_warning(info["counts"]["val"], options.get("val_fraction")))
    elif n_train_shards < 8:
        warnings.append(
            f"only {n_train_shards} train shard(s): training with several GPUs × loader workers (8 readers is typical) "
            "needs at least that many shards to give every reader its own; "
            + (_more_shards(n_train, options.get("min_shards", 1)) if n_train >= 8 else "add more images")
        )
    return ShardSummary(
        name=info["name"],
        out=str(out),
        resolution=info["resolution"],
        image_format=info["image_format"],
        counts=info["counts"],
        shards={sp: len(splits[sp]["shards"]) for sp in SPLITS},
        patterns={sp: storage.join(out, splits[sp]["pattern"]) if splits[sp]["pattern"] else None for sp in SPLITS},
        removed=info["removed"],
        input_problems=info["input_problems"],
        rejected=first_rejected,
        report=storage.join(out, REJECTED),
        labels=info["labels"],
        warnings=warnings,
    )


def _more_shards(n_train: int, min_shards: int) -> str:
    """The ``--maxcount`` that splits ``n_train`` samples into 8 train shards or more, with as many samples in each
    as that allows, and how many shards it really gives: ``ceil(n / maxcount) >= 8`` holds up to ``(n - 1) // 7``
    (11 samples: 1, 11 shards; 46: 6, 8 shards)."""
    maxcount = (n_train - 1) // 7
    return f"use {hint('maxcount', maxcount)} to get {shard_count(n_train, maxcount, min_shards)}"


def _empty_train_warning(n_val: int, val_fraction: float | None) -> str:
    """A set whose every sample went to val: no trainer can read it (a trainer reads the train split), so the
    warning names the option that did it and a value that leaves samples to train on — the default, or 0 (every
    sample in train) where the default did it (a few samples, each in val by its key's hash)."""
    default = _DEFAULT["val_fraction"]
    lower = default if val_fraction is None or val_fraction > default else 0
    given = f" at {named('val_fraction', val_fraction)}" if val_fraction is not None else ""
    return (f"the train split is empty: all {n_val} samples went to val{given}, and training reads the train split; "
            f"shard it again with {hint('val_fraction', lower)} to leave samples to train on")


def _write_rejected(rejected: Rejected, dest: str) -> list[dict]:
    """``rejected.jsonl``, sorted, written whole (atomically; to a store as one object); returns its first 20
    rows."""
    first: list[dict] = []

    def write(f: Any) -> None:
        for row in rejected.sorted():
            f.write(json_bytes(row) + b"\n")
            if len(first) < 20:
                first.append(row)

    if not storage.is_url(dest):
        with atomic_file(dest) as f:
            write(f)
    else:
        with tempfile.TemporaryDirectory(prefix="gandata-rejected-") as tmp:
            with open(Path(tmp) / REJECTED, "wb") as f:
                write(f)
            storage.put_file(Path(tmp) / REJECTED, dest)
    return first


def default_name(src: str | os.PathLike, data_dir: str | os.PathLike) -> str:
    """The set's name from its first input, the same from whatever folder the command runs in: a stage folder of a
    workspace (``…/<dataset>/<stage>``: a dataset folder that a gandata stage wrote, or any folder under the data
    dir) → ``<dataset>``; any other folder → its name; a tar or pattern → its stem."""
    p = Path(src).resolve()
    try:
        rel = p.relative_to(Path(data_dir).resolve())
        if len(rel.parts) >= 1:
            return clean_name(rel.parts[0])
    except ValueError:
        pass
    if is_dataset(p) and Dataset(p).stats().get("stage") and p.parent != p:
        return clean_name(p.parent.name)  # DATA/bitmoji/raw from anywhere: bitmoji
    return clean_name(p.name if p.is_dir() else p.name.split(".")[0].split("{")[0].rstrip("-_"))


def shard_all(data_dir: str | os.PathLike, options: ShardOptions | None = None,
              progress: bool = False) -> list[ShardSummary]:
    """Shard every dataset under the data dir, each from its most processed stage, into ``DATA/<dataset>/shards``."""
    found = dataset_stage_folders(data_dir)
    if not found:
        raise UserError(
            f"no datasets under {data_dir} (looked for {data_dir}/<dataset>/<stage>/manifest.jsonl); "
            "fetch one first, or name the folders to shard"
        )
    return [shard([str(stage)], Path(data_dir) / ds / "shards", clean_name(ds), options, progress)
            for ds, stage in found.items()]

