"""``gandata inspect``: what is in a dataset folder, an image folder or a set of shards, and a contact sheet of it."""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from . import images, shardset, storage
from .datasets import lookup_field
from .declarations import INSPECT
from .errors import named
from .inputs import DatasetInput, Sample, TarInput, open_input
from .options import check_call
from .paths import refuse_overlap
from .progress import Progress
from .summary import Summary

TOP = 10

_DEFAULT = INSPECT.defaults()


@dataclass
class InspectReport(Summary):
    OMIT_NONE = ("width_range", "height_range", "splits", "labels", "bad", "problems", "failures", "last_run",
                 "warning", "grid")
    path: str
    kind: str  # dataset, folder or shards
    samples: int
    unreadable: int
    sizes: list[dict]  # the most common (width, height) with their counts
    distinct_sizes: int
    width_range: list[int] | None = None
    height_range: list[int] | None = None
    splits: dict[str, int] | None = None
    labels: dict[str, int] | None = None
    bad: list[dict] | None = None
    problems: list[dict] | None = None  # problems that lost no sample (a repeated tar member, a bad .json)
    failures: dict[str, int] | None = None  # a dataset folder's failures.jsonl, by reason
    last_run: dict | None = None  # a dataset folder's stats.json
    warning: str | None = None
    grid: str | None = None

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.samples} samples ({self.kind})"
               + (f", {self.unreadable} unreadable" if self.unreadable else "")]
        if self.sizes:
            sizes = ", ".join(f"{s['width']}x{s['height']}: {s['count']}" for s in self.sizes)
            more = (f" (+{self.distinct_sizes - len(self.sizes)} more sizes)"
                    if self.distinct_sizes > len(self.sizes) else "")
            out.append(f"  sizes: {sizes}{more}")
            out.append(f"  width {self.width_range[0]}-{self.width_range[1]}, "
                       f"height {self.height_range[0]}-{self.height_range[1]}")
        if self.splits:
            out.append("  splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        if self.labels:
            out.append(f"  labels ({len(self.labels)}): "
                       + ", ".join(f"{k}: {v}" for k, v in list(self.labels.items())[:20]))
        if self.failures:
            out.append("  failures: " + ", ".join(f"{k}: {v}" for k, v in self.failures.items()))
        if self.last_run:
            out.append(f"  last run: {_last_run(self.last_run)}")
        out += [f"  unreadable: {b['origin']}: {b['reason']}" for b in self.bad or []]
        out += [f"  problem (nothing lost): {b['origin']}: {b['reason']}" for b in self.problems or []]
        if self.warning:
            out.append(f"  warning: {self.warning}")
        if self.grid:
            out.append(f"  contact sheet: {self.grid}")
        return out


def _last_run(stats: dict) -> str:
    """A dataset folder's ``stats.json`` (what the last fetch or crop into it did) in one line: the stage, the
    counts it recorded (those not zero), how long it took, and whether it stopped short."""
    counts = [f"{k.replace('_', ' ')} {v}" for k, v in stats.items()
              if type(v) is int and v and k not in ("bytes", "memory_peak")]
    failures = stats.get("failures")
    if isinstance(failures, dict) and failures:
        counts.append(f"given up on {sum(v for v in failures.values() if type(v) is int)}")
    text = f"{stats.get('stage') or 'a run'}, " + (", ".join(counts) or "nothing counted")
    if isinstance(stats.get("seconds"), (int, float)):
        text += f", {stats['seconds']:g} s"
        if isinstance(stats.get("rate"), (int, float)) and stats["rate"]:
            text += f" ({stats['rate']:g}/s)"
    if stats.get("interrupted") is True:
        text += "; interrupted"
    elif stats.get("stopped"):
        text += f"; stopped: {stats['stopped']}"
    elif stats.get("complete") is False:
        text += "; incomplete"
    return text


def inspect_path(
    path: str | os.PathLike,
    grid: str | os.PathLike | None = None,
    grid_n: int = _DEFAULT["grid_n"],
    cell: int = _DEFAULT["cell"],
    label_field: str | None = None,
    seed: int = _DEFAULT["seed"],
    progress: bool = False,
) -> InspectReport:
    """Count samples, image sizes, labels and failures of ``path``; with ``grid``, write a contact sheet PNG of
    ``grid_n`` samples drawn evenly at random (fixed ``seed``)."""
    check_call(INSPECT, grid_n=grid_n, cell=cell, seed=seed)
    refuse_overlap(grid, named("grid"), [(path, "PATH")])
    src = open_input(path)
    sset = shardset.read(path) if isinstance(src, TarInput) and (storage.is_url(path) or Path(path).is_dir()) \
        else None
    label_names = sset.label_names if sset else None
    sizes: Counter = Counter()
    labels: Counter = Counter()
    splits: Counter = Counter()
    bad: list[dict] = []
    picked: list[tuple[Sample, str]] = []
    rng = random.Random(seed)
    seen = 0
    with Progress(f"inspect {path}", src.count_hint(), enabled=progress) as prog:
        for s in src:
            seen += 1
            prog.advance(1)
            rec = s.record
            if (
                isinstance(src, DatasetInput)
                and isinstance(rec.get("width"), int)
                and isinstance(rec.get("height"), int)
            ):
                w, h = rec["width"], rec["height"]
            else:
                try:  # every byte checked, as shard will (a truncated file has a whole header)
                    _, w, h = images.verify(s.read())
                except (images.ImageError, OSError) as e:
                    bad.append({"origin": s.origin, "reason": str(e)})
                    continue
            sizes[(w, h)] += 1
            if isinstance(rec.get("split"), str):
                splits[rec["split"]] += 1
            label = None
            if label_field:
                label = lookup_field(rec, label_field)
            elif isinstance(rec.get("cls"), int):
                label = rec.get("label") or (
                    label_names[rec["cls"]] if label_names and 0 <= rec["cls"] < len(label_names)
                    else rec["cls"]  # a class id the names do not cover is shown as the number it is
                )
            if label is not None:
                labels[str(label)] += 1
            caption = s.key if label is None else f"{label} {s.key}"
            good = sum(sizes.values())
            if len(picked) < grid_n:
                picked.append((s, caption))
            else:
                j = rng.randrange(good)
                if j < grid_n:
                    picked[j] = (s, caption)
    bad.extend({"origin": p.origin, "reason": p.reason} for p in src.problems if p.lost)
    notes = [{"origin": p.origin, "reason": p.reason} for p in src.problems if not p.lost]

    n = sum(sizes.values())
    report = InspectReport(
        path=str(path), kind=src.kind, samples=n, unreadable=len(bad), problems=notes[:TOP] or None,
        sizes=[{"width": w, "height": h, "count": c} for (w, h), c in sizes.most_common(TOP)],
        distinct_sizes=len(sizes),
    )
    if sizes:
        ws = [w for w, _ in sizes]
        hs = [h for _, h in sizes]
        report.width_range = [min(ws), max(ws)]
        report.height_range = [min(hs), max(hs)]
    if splits:
        report.splits = dict(sorted(splits.items()))
    if labels:
        report.labels = dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])))
    if bad:
        report.bad = bad[:TOP]
    if isinstance(src, DatasetInput):
        ds = src.dataset
        reasons = Counter(str(f.get("error", "unknown")) for f in ds.open_failures().values())
        report.failures = dict(reasons.most_common())
        report.last_run = ds.stats() or None
    if sset:
        problems = shardset.verify(path, checksums=False)  # the tars were just read whole: sizes and names suffice
        expected = sset.total
        if expected is not None and expected != n + len(bad):
            problems.append(f"{shardset.INFO} says {expected} samples but the shards hold {n}")
        report.warning = "; ".join(problems) or None
    if grid:
        picked.sort(key=lambda item: item[0].key)
        layout = images.SheetLayout(len(picked), cell, title=f"{path}: {n} samples ({src.kind}), {len(picked)} shown")
        cells = (_thumbnail(s, caption, cell) for s, caption in picked)  # read a band's row at a time
        storage.put_from(grid, lambda f: images.write_png(f, layout.width, layout.height,
                                                         images.sheet_bands(cells, layout)))
        report.grid = str(grid)
    return report


def _thumbnail(s, caption: str, cell: int) -> tuple[Image.Image | None, str]:
    """One sample as a contact sheet's cell: its full-size image decoded, kept only as its thumbnail."""
    try:
        thumb = images.to_rgb(images.decode(s.read()))
    except (images.ImageError, OSError):
        return None, f"bad {s.key}"
    thumb.thumbnail((cell, cell), Image.Resampling.BOX)
    return thumb, caption
