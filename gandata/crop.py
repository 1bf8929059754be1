"""Face detection and square crops: ``gandata crop anime-faces`` and ``gandata crop lego-faces``.

Detection is OpenCV's ``CascadeClassifier`` with nagadomi's ``lbpcascade_animeface.xml`` and the reference settings
(``equalizeHist``, scaleFactor 1.1, minNeighbors 5, minSize 24), all exposed. Speed without changing what is found:

* faces smaller than ``--min-face`` (64 px by default: smaller faces give crops that a 128 px dataset must upscale)
  are dropped anyway, so they are not searched for: the detector's ``minSize`` becomes ``max(min_size, min_face)``,
  which skips the small-scale pyramid levels while the levels it keeps are the very images the reference detector
  scans — the same faces, boxes within a pixel; ``--min-face 24`` finds everything the reference finds;
* images larger than ``--detect-size`` are detected on a downscaled copy (boxes mapped back);
* images are processed by ``--workers`` threads, OpenCV set to one thread each (cv2 releases the GIL).

Crop geometry: the box grows by ``--margin`` (a fraction of its side, per side) and stays square; a crop running off
the image is padded (``--edge pad``, with ``--pad-color``), moved inside (``shift``) or skipped (``drop``); it is
resized to ``--size``. Several faces → keys ``<parent>_f0``, ``<parent>_f1`` … (largest first).

``lego-faces`` crops whole heads (hair, hat, helmet, hood), found by :mod:`gandata.heads`: ``--locator learned``
(a small detector shipped with gandata, for catalogue shots and photos alike), ``layout`` (the figure's proportions,
for catalogue shots), ``cascade`` (the anime cascade's face grown to its head, else the layout) or ``auto`` (the best
measured: docs/quality.md). Every locator gives the same framing (the head box, then ``--margin``) and a confidence;
heads under ``--threshold`` are not cut. Each record says which method cut it and how sure it was. Images without a
head (droids, vehicles) are skipped and counted, with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from . import assets, heads, images, storage
from .datasets import Dataset, Problem, child_key
from .declarations import CROP_ANIME, CROP_LEGO
from .errors import UserError, hint, named
from .fileio import atomic_write_json
from .inputs import Input, Part, Sample, file_stamp, open_input, part_samples, partitions
from .options import Color, Declaration, Declared, check_call
from .paths import refuse_overlap
from .progress import Progress
from .summary import Summary
from .terminal import shown
from .workers import Done, MemoryBudget, cores, ordered

CASCADE_URL = "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
DETECTOR = "lbpcascade_animeface"
METHOD_DETECTOR = {"cascade": DETECTOR, "layout": "layout", "learned": "lego-heads"}  # a record's "detector"
EDGES = ("pad", "shift", "drop")
_FILE_FIELDS = ("key", "path", "sha256", "width", "height")


_DEFAULT = CROP_LEGO.defaults()  # anime-faces declares the same defaults, but for min_face (and no locator)


@dataclass
class CropOptions(Declared):
    """The declared options of ``gandata crop anime-faces`` or ``lego-faces`` (``lego``) under their declared names
    and defaults, checked by that declaration when made; ``min_face`` left None is the command's own default."""

    size: int = _DEFAULT["size"]  # output side in pixels
    margin: float = _DEFAULT["margin"]  # added to each side, as a fraction of the face box
    edge: str = _DEFAULT["edge"]  # crops running off the image: pad | shift | drop
    pad_color: Color = _DEFAULT["pad_color"]
    background: Color = _DEFAULT["background"]  # transparency is composited onto this first
    min_face: int | None = None  # faces smaller than this (px in the original image) are dropped, and not searched
    scale_factor: float = _DEFAULT["scale_factor"]
    min_neighbors: int = _DEFAULT["min_neighbors"]
    min_size: int = _DEFAULT["min_size"]
    equalize: bool = _DEFAULT["equalize"]
    detect_size: int = _DEFAULT["detect_size"]  # images with a longer side are detected on a copy scaled down to this
    format: str = _DEFAULT["format"]  # of the crops
    workers: int = _DEFAULT["workers"]  # 0: one per core
    memory: int = _DEFAULT["memory"]  # MiB that decoded images may hold at once, all workers together
    lego: bool = False  # whole LEGO heads (gandata.heads) instead of anime faces
    locator: str = _DEFAULT["locator"]  # lego: auto | learned | layout | cascade (gandata.heads)
    threshold: float | None = None  # lego: heads found with less confidence are not cut (None: the locator's own)

    def declaration(self) -> Declaration:
        return CROP_LEGO if self.lego else CROP_ANIME

    def __post_init__(self) -> None:
        if not self.lego and (self.locator != _DEFAULT["locator"] or self.threshold is not None):
            raise UserError(f"{named('locator')} and {named('threshold')} are for lego-faces only (anime faces are "
                            "found by the cascade)")
        super().__post_init__()
        if self.min_face is None:
            self.min_face = self.declaration().option("min_face").default


# -------------------------------------------------------------------------------------------- the cascade


def cascade_file(local: str | os.PathLike | None = None, base_url: str | None = None) -> tuple[str, dict]:
    """A path to the verified cascade XML: ``local``, or the cached download of the canonical address."""
    from .fetch import rebase

    _, origin = assets.asset("anime-face cascade (lbpcascade_animeface.xml, 246 945 bytes)",
                             rebase(CASCADE_URL, base_url), "cascade", local, sha256=CASCADE_SHA256)
    path = origin.get("path") or origin["cached"]
    if cv2.CascadeClassifier(path).empty():
        raise UserError(f"OpenCV cannot load the cascade {path}; give a good copy with {hint('cascade', 'FILE')}")
    return path, origin


KEEP_CASCADE_PIXELS = 4_000_000


class Detector:
    """One CascadeClassifier per thread (they are not safe to share), with the speed-ups described above."""

    def __init__(self, path: str | None, opts: CropOptions):
        self.path, self.opts = path, opts
        self._local = threading.local()
        self._learned = heads.LearnedHeads()

    def _cascade(self) -> cv2.CascadeClassifier:
        c = getattr(self._local, "cascade", None)
        if c is None:
            c = self._local.cascade = cv2.CascadeClassifier(self.path)
        return c

    def heads(self, rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[list[heads.Head], str | None]:
        """``lego-faces``: the heads the ``--locator`` finds, at or above ``--threshold`` and ``--min-face``, most
        confident first; or none and why."""
        o = self.opts
        threshold = heads.SURE[o.locator] if o.threshold is None else o.threshold
        found, why = [], None
        if o.locator == "auto":
            found, why = heads.auto_heads(rgb, alpha, self._learned, threshold)
        elif o.locator == "learned":
            found = self._learned(rgb, threshold)
            why = None if found else "no head found by the learned detector"
        elif o.locator == "cascade":
            faces, _ = self.detect(rgb)
            found = [heads.head_of_face(f) for f in faces]
        if o.locator == "layout" or (o.locator == "cascade" and not found):
            found, why = heads.layout_heads(rgb, alpha)
        sure = [h for h in found if o.locator == "auto" or h.confidence >= threshold]  # auto applies it itself
        kept = [h for h in sure if max(h.box[2], h.box[3]) >= o.min_face]
        if found and not sure:
            why = f"heads found, but less sure than {named('threshold')} {threshold:g}"
        elif sure and not kept:
            why = f"heads found, but smaller than {named('min_face')} {o.min_face} px"
        return sorted(kept, key=lambda h: -h.confidence), why

    def detect(self, rgb: np.ndarray) -> tuple[list[tuple[int, int, int, int]], float]:
        """Boxes (x, y, w, h) in the image's pixels, largest first, and the scale detection ran at (none without a
        cascade: ``--locator layout``)."""
        o = self.opts
        if self.path is None:
            return [], 1.0
        h, w = rgb.shape[:2]
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = 1.0
        if max(h, w) > o.detect_size:
            scale = max(o.detect_size / max(h, w), o.min_size / max(o.min_face, o.min_size))
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if o.equalize:
            gray = cv2.equalizeHist(gray)
        ms = max(o.min_size, int(np.ceil(o.min_face * scale)))
        found = self._cascade().detectMultiScale(gray, scaleFactor=o.scale_factor, minNeighbors=o.min_neighbors,
                                                 minSize=(ms, ms))
        if gray.size > KEEP_CASCADE_PIXELS:  # the classifier keeps its pyramid buffers (~4 bytes a pixel) until it
            self._local.cascade = None  # is dropped: after a large image, a fresh one (2 ms to load) next time
        boxes = [tuple(int(round(v / scale)) for v in b) for b in found]
        boxes = [b for b in boxes if b[2] >= o.min_face and b[3] >= o.min_face]
        return sorted(boxes, key=lambda b: (-b[2] * b[3], b[0], b[1])), scale


# ------------------------------------------------------------------------------------------------ geometry


def crop_box(box: tuple[int, int, int, int], img_w: int, img_h: int, margin: float,
             edge: str) -> tuple[int, int, int, int] | None:
    """The square crop (x0, y0, x1, y1) around a face box with ``margin`` per side; None when ``edge`` is drop and
    the square leaves the image. With ``pad`` the square may extend outside (it is padded); with ``shift`` it is
    moved inside, and shrunk to the image's short side if it is larger."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w / 2, y + h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + side, y0 + side
    inside = x0 >= 0 and y0 >= 0 and x1 <= img_w and y1 <= img_h
    if inside or edge == "pad":
        return x0, y0, x1, y1
    if edge == "drop":
        return None
    side = min(side, img_w, img_h)
    x0 = min(max(int(round(cx - side / 2)), 0), img_w - side)
    y0 = min(max(int(round(cy - side / 2)), 0), img_h - side)
    return x0, y0, x0 + side, y0 + side


def cut(rgb: np.ndarray, box: tuple[int, int, int, int], pad: tuple[int, int, int]) -> Image.Image:
    """The H×W×3 ``rgb`` cut to ``box`` (x0, y0, x1, y1); parts outside the image are ``pad`` colour (never wrapped
    around)."""
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    canvas = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    canvas[:] = pad
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return Image.fromarray(canvas)


# ----------------------------------------------------------------------------------------------- the stage


PREVIEW = 384  # long side of the copy of each image kept for --debug-grid
# bytes a source pixel holds while it is processed (measured on 7900² images: the RGB array, the detector's grey
# copy and its pyramid; other formats add Pillow's 4-byte image while it becomes the array)
BYTES_PER_PIXEL = {"jpeg": 8}
OTHER_BYTES_PER_PIXEL = 14


def _process(data: bytes, key: str, opts: CropOptions, detector: Detector, pad: tuple, background: tuple,
             preview: bool = False, budget: MemoryBudget | None = None) -> dict:
    """One source image → its crops (and, with ``preview``, a small copy for the debug grid). Runs in a worker
    thread, once ``budget`` has room for the image; holds it as one RGB array and the detector's grey copy."""
    if budget is not None:
        fmt, pixels = images.pixel_count(data)
        with budget.hold(pixels * BYTES_PER_PIXEL.get(fmt, OTHER_BYTES_PER_PIXEL)):
            return _process(data, key, opts, detector, pad, background, preview)
    try:
        rgb, alpha = images.decode_rgb_alpha(data, background, alpha=opts.lego)
    except images.ImageError as e:
        return {"status": "unreadable", "reason": str(e)}
    digest = hashlib.sha256(data).hexdigest()  # the journal's: a re-run tells a replaced source image by it
    height, width = rgb.shape[:2]
    why = None
    if opts.lego:
        found, why = detector.heads(rgb, alpha)
        boxes, scale = [h.box for h in found], 1.0
        found_as = [(h.method, h.confidence) for h in found]
    else:
        boxes, scale = detector.detect(rgb)
        found_as = [("cascade", None)] * len(boxes)
    crops, boxes_shown = [], []
    for i, (box, (method, confidence)) in enumerate(zip(boxes, found_as)):
        cb = crop_box(box, width, height, opts.margin, opts.edge)
        boxes_shown.append((box, cb))
        if cb is None:
            continue
        face = images.resize(cut(rgb, cb, pad), opts.size, "center-crop")
        crops.append({"index": i, "bbox": list(box), "crop_box": list(cb), "method": method,
                      "confidence": confidence, "data": images.encode(face, opts.format)})
    status = "faces" if crops else ("no_head" if opts.lego else "no_face")
    if boxes and not crops:  # found, but every crop ran off the image
        n = len(boxes)
        them = "them" if n > 1 else "it"
        why = (f"{n} {'head' if opts.lego else 'face'}{'s' if n > 1 else ''} found, but "
               f"{'their crops run' if n > 1 else 'its crop runs'} off the image ({_other_edges(them)})")
    elif not boxes and not opts.lego:
        why = "no face found by the cascade"
    small = None
    if preview:
        small = Image.fromarray(rgb)
        small.thumbnail((PREVIEW, PREVIEW), Image.Resampling.BOX)
    return {"status": status, "crops": crops, "boxes": boxes_shown, "scale": scale, "size": (width, height),
            "reason": why if status in ("no_head", "no_face") else None, "preview": small, "sha256": digest}


def _other_edges(what: str) -> str:
    """Why a found face or head gave no crop under ``--edge drop``, and the options that keep ``what``."""
    return f"{hint('edge', 'drop')}; {hint('edge', 'shift')} or {hint('edge', 'pad')} would keep {what}"


@dataclass
class CropSummary(Summary):
    OMIT_NONE = ("debug_grid",)
    stage: str  # crop anime-faces | crop lego-faces
    out: str
    inputs: list[str]
    images: int  # source images looked at in this run
    with_faces: int
    without: int
    unreadable: int
    crops: int  # new crops written
    methods: dict[str, int]  # crops by how they were found: cascade, layout
    skipped_done: int  # source images done by an earlier run
    total_crops: int  # crops the dataset now holds
    bad: list[dict]
    seconds: float
    rate: float | None
    cascade: dict  # where the detector came from (path or url, sha256)
    options: dict
    debug_grid: str | None = None
    off_edge: int = 0  # of those without: found, but every crop ran off the image (--edge drop)

    def lines(self) -> list[str]:
        lego = self.stage.endswith("lego-faces")
        out = [f"{self.stage}: {self.images} images → {self.crops} crops in {self.out} ({self.with_faces} with a "
               f"{'head' if lego else 'face'}, {self.without} without, {self.unreadable} unreadable; "
               f"{self.skipped_done} done earlier)"]
        if self.methods:
            out.append("  cut by: " + ", ".join(f"{k} {v}" for k, v in self.methods.items()))
        if self.off_edge:
            out.append(f"  {self.off_edge} of those without: {'heads' if lego else 'faces'} found, but their crops run "
                       f"off the image ({_other_edges('them')})")
        out += [f"  unreadable: {b['origin']}: {b['reason']}" for b in self.bad[:5]]
        out.append(f"  {self.seconds} s ({self.rate or 0} images/s); the dataset now holds {self.total_crops} crops")
        if self.debug_grid:
            out.append(f"  detections drawn on {self.debug_grid}")
        return out

    def brief(self) -> str:
        return (f"{self.crops} new crops from {self.images} images ({self.skipped_done} done earlier); "
                f"{self.total_crops} in all")


def crop(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: CropOptions | None = None,
    cascade: str | os.PathLike | None = None,
    base_url: str | None = None,
    debug_grid: str | os.PathLike | None = None,
    grid_n: int = 36,
    progress: bool = False,
    engine: str = _DEFAULT["engine"],
    ray_address: str | None = None,
    task_size: int = _DEFAULT["task_size"],
) -> CropSummary:
    """Cut faces (or LEGO heads) out of every image of ``src`` into the dataset folder ``out``; returns the summary.
    ``engine="ray"``: the detection and cutting run as Ray tasks of ``task_size`` images (a tar is one task); this
    process writes their crops into ``out`` in input order, so the dataset is the one the local engine makes."""
    opts = options or CropOptions()
    check_call(opts.declaration(), engine=engine, task_size=task_size, base_url=base_url)
    t0 = time.monotonic()
    if engine == "ray":  # every path a task sees is resolved here: a worker's current folder is its node's
        src, out = storage.absolute(src), storage.absolute(out)
    source = open_input(src)
    refuse_overlap(out, named("out"), [(src, named("src"))])
    refuse_overlap(debug_grid, named("debug_grid"), [(src, named("src"))])
    locator = opts.locator if opts.lego else "cascade"
    if locator == "cascade":
        try:
            path, origin = cascade_file(cascade, base_url)
        except UserError as e:
            if not opts.lego:
                raise
            raise UserError(f"{e}; or crop with the shipped detector, offline: {hint('locator', 'learned')}") from None
    else:
        path, origin = None, ({"locator": "layout"} if locator == "layout"
                              else {**heads.LearnedHeads().origin(), "locator": locator})
    detector = Detector(path, opts)
    pad, background = Color.parse(opts.pad_color).rgb, Color.parse(opts.background).rgb
    stage = "crop lego-faces" if opts.lego else "crop anime-faces"
    workers = opts.workers or cores()
    threads_before = cv2.getNumThreads(), _torch_threads(1 if locator in ("learned", "auto") else None)
    cv2.setNumThreads(1)
    try:
        with Dataset.create(out) as ds, Progress(stage, source.count_hint(), enabled=progress) as prog:
            _same_job(ds, stage, opts, out)
            writer = _CropWriter(ds, opts, source.kind, prog, grid_n if debug_grid else 0)
            done = writer.done()
            _refuse_changed(source, done, out)
            if engine == "ray":
                results = _crop_on_ray(source, set(done), opts, path, pad, background, writer.grid_n,
                                       ds.work_folder("ray"), ray_address, task_size, writer.counts, prog)
            else:
                jobs = _jobs(source, done, opts, detector, pad, background, writer.counts, prog, writer.wants_preview,
                             MemoryBudget(opts.memory << 20))
                results = ordered(jobs, workers, 4 * workers, name="crop")
            for sample, result in results:
                writer.take(sample, result)
            writer.problems(source.problems)
            summary = writer.summary(stage, out, src, time.monotonic() - t0, origin)
            ds.write_stats(summary.to_json())
    finally:
        cv2.setNumThreads(threads_before[0])
        _torch_threads(threads_before[1])
    if debug_grid:
        _debug_sheet(writer.examples, debug_grid, stage)
        summary.debug_grid = str(debug_grid)
    return summary


CROP_JOB = "crop.json"  # what a dataset folder's crops were made by: the stage and the options that shape a crop
SAME_CROP = ("size", "margin", "edge", "pad_color", "background", "min_face", "scale_factor", "min_neighbors",
             "min_size", "equalize", "detect_size", "format", "locator", "threshold")  # not workers, memory


def _job(stage: str, opts: CropOptions) -> dict:
    """The stage and the options that shape its crops, as ``crop.json`` records them (colours by their RGB)."""
    options = {k: list(Color.parse(v).rgb) if k in ("pad_color", "background") else v
               for k, v in ((k, getattr(opts, k)) for k in SAME_CROP)}
    if opts.lego and opts.threshold is None:  # the locator's own default, as given or not
        options["threshold"] = heads.SURE[opts.locator]
    return {"stage": stage, "options": options}


def _same_job(ds: Dataset, stage: str, opts: CropOptions, out: str | os.PathLike) -> None:
    """A dataset folder holds the crops of one stage and one set of options: the same command continues it, a
    changed option is refused in one line naming it (as train does; a pipeline stage likewise) — never a folder of
    crops of two sizes, margins or locators. Recorded in ``crop.json`` when the first run starts; a folder cropped
    by a version that kept no record is compared with its last run's ``stats.json``."""
    path, now = Path(ds.root) / CROP_JOB, _job(stage, opts)
    try:
        was = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        was = None
    if not isinstance(was, dict):
        last = ds.stats()
        was = None
        if len(ds) and last.get("stage") and last["stage"] not in ("crop anime-faces", "crop lego-faces"):
            raise UserError(f"{out} holds the images of {shown(last['stage'])!r}, not crops: give another "
                            f"{named('out')}")
        if len(ds) and isinstance(last.get("options"), dict) and last.get("stage") in ("crop anime-faces",
                                                                                       "crop lego-faces"):
            lego = last["stage"] == "crop lego-faces"
            try:
                was = _job(last["stage"], CropOptions(**{k: v for k, v in last["options"].items()
                                                         if k in SAME_CROP}, lego=lego))
            except (UserError, TypeError, ValueError):
                was = None
    if isinstance(was, dict):
        if was.get("stage") != stage:
            raise UserError(f"{out} holds the crops of {was.get('stage')!r}, not {stage}: give another "
                            f"{named('out')}")
        before, after = was.get("options") or {}, now["options"]
        if after["edge"] != "pad" and before.get("edge") != "pad":
            before, after = {**before, "pad_color": None}, {**after, "pad_color": None}  # nothing is padded
        diff = [f"{named(k)} {_said(before.get(k))} (now {_said(after[k])})" for k in SAME_CROP
                if k in before and before[k] != after[k]]
        if diff:
            raise UserError(f"{out} holds crops made with {', '.join(diff)}: give the options it was made with to "
                            f"go on with it, or another {named('out')} for these")
    if not path.exists():
        atomic_write_json(path, now)


def _said(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _refuse_changed(source: Input, done: dict[str, dict], out: str | os.PathLike) -> None:
    """Refuse, in one line, to go on with a dataset folder whose source images changed since they were cropped (a
    file replaced by other bytes keeps its key: its old crops would stay, the new image never cropped). A source
    image is compared by its stamp, then — if the stamp moved — by its bytes' sha256; a dataset folder's images by
    their manifest's sha256s (nothing read). Tars and objects in a store are not compared (their members have no
    stamp, and reading every one again would cost a whole run)."""
    if not done or source.kind not in ("dataset", "folder"):
        return
    listed = len(source.problems)
    changed, n = None, 0
    for sample in source:
        was = done.get(sample.key)
        if was is not None and _changed(sample, was):
            changed, n = changed or sample.origin, n + 1
    del source.problems[listed:]  # the run lists them, once
    if changed:
        were = f"s of {out} changed since they were" if n > 1 else f" of {out} changed since it was"
        raise UserError(f"{n} source image{were} cropped (first: {shown(changed)}): crop into another "
                        f"{named('out')}, or remove {out} to crop them all again")


def _changed(sample: Sample, was: dict) -> bool:
    """Whether a source image an earlier run finished has other bytes now (its journal line's sha256 and stamp)."""
    if not isinstance(was.get("sha256"), str):
        return False  # finished by a version that kept no digest
    if sample.sha256:
        return sample.sha256 != was["sha256"]
    if storage.is_url(sample.origin):
        return False
    stamp = file_stamp(sample.origin)
    if stamp is not None and stamp == was.get("stamp"):
        return False
    data, _ = sample.read_or_why()
    return data is not None and hashlib.sha256(data).hexdigest() != was["sha256"]


def _torch_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads (the learned detector runs one per crop worker); returns what it was. None: not
    touched (torch is not loaded for the other locators)."""
    if n is None:
        return None
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


class _CropWriter:
    """What a crop run writes, for both engines: each source image's crops and journal line in the dataset, the
    counts, the unreadable inputs and the previews of the debug grid; then the summary."""

    def __init__(self, ds: Dataset, opts: CropOptions, source_kind: str, prog: Progress, grid_n: int):
        self.ds, self.opts, self.source_kind, self.prog, self.grid_n = ds, opts, source_kind, prog, grid_n
        self.journal = ds.journal("parents")
        self.counts: Counter = Counter()
        self.methods: Counter = Counter()
        self.examples: list[tuple[Image.Image, tuple[int, int], list, str]] = []
        self.bad: list[dict] = []
        self.params = {"scale_factor": opts.scale_factor, "min_neighbors": opts.min_neighbors,
                       "min_size": opts.min_size, "equalize": opts.equalize, "min_face": opts.min_face,
                       "detect_size": opts.detect_size}

    def done(self) -> dict[str, dict]:
        """The source images an earlier run finished — crops written, or found without a face — by key, with their
        journal line (the source's sha256 and stamp, where recorded). One that was unreadable is not done: the next
        run reads it again (a file still being copied, a disk that came back)."""
        done: dict[str, dict] = {}
        for r in self.ds.read_journal("parents"):
            if isinstance(r.get("parent"), str):
                if r.get("status") == "unreadable":
                    done.pop(r["parent"], None)
                else:
                    done[r["parent"]] = r
        # a parent whose crops the manifest no longer holds all of (a torn last row, a damaged one) is done again:
        # the crops still there are kept (their keys are taken), the lost ones written anew
        held = Counter(row.get("parent") for row in self.ds.rows() if row["key"] in self.ds)
        return {k: r for k, r in done.items() if held[k] >= (r.get("faces") or 0)}

    def wants_preview(self) -> bool:
        return len(self.examples) < self.grid_n

    def take(self, sample: Sample, result: dict) -> None:
        """Write one source image's crops, its journal line and counts."""
        status = result["status"]
        self.counts[status] += 1
        if status != "faces" and result.get("boxes"):
            self.counts["off_edge"] += 1
        if status == "unreadable":
            self.bad.append({"origin": sample.origin, "reason": result["reason"]})
            self.ds.fail(sample.key, result["reason"], origin=sample.origin)
            self.journal.append({"parent": sample.key, "status": status})
            self.prog.advance(1, bad=1)
            return
        o = self.opts
        parent = {k: v for k, v in sample.record.items() if k not in _FILE_FIELDS}
        for c in result["crops"]:
            record = {**parent, "source": sample.record.get("source", self.source_kind), "parent": sample.key,
                      "bbox": c["bbox"], "crop_box": c["crop_box"], "method": c["method"],
                      "detector": METHOD_DETECTOR[c["method"]],
                      "detector_params": self.params if c["method"] == "cascade" else {},
                      **({"confidence": c["confidence"]} if c.get("confidence") is not None else {}),
                      "margin": o.margin, "edge": o.edge, "width": o.size, "height": o.size,
                      "parent_width": result["size"][0], "parent_height": result["size"][1]}
            if self.ds.add(child_key(sample.key, f"_f{c['index']}"), c["data"], o.format, record) is not None:
                self.counts["crops"] += 1
                self.methods[c["method"]] += 1
        stamp = file_stamp(sample.origin)
        self.journal.append({"parent": sample.key, "status": status, "faces": len(result["crops"]),
                             **({"reason": result["reason"]} if result["reason"] else {}),
                             **({"sha256": result["sha256"]} if result.get("sha256") else {}),
                             **({"stamp": stamp} if stamp else {})})
        if result["preview"] is not None and self.wants_preview():
            self.examples.append((result["preview"], result["size"], result["boxes"], sample.key))
        self.prog.advance(1, faces=len(result["crops"]))

    def problems(self, problems: list[Problem]) -> None:
        """The input's own problems (a missing file, a damaged tar): listed, never fatal."""
        for p in problems:
            self.counts["unreadable"] += p.lost  # a repeated tar member lost nothing: listed only
            self.bad.append({"origin": p.origin, "reason": p.reason})

    def summary(self, stage: str, out: str | os.PathLike, src: str | os.PathLike, seconds: float,
                origin: dict) -> CropSummary:
        counts = self.counts
        n_images = sum(counts[s] for s in ("faces", "no_face", "no_head", "unreadable"))
        return CropSummary(
            stage=stage, out=str(out), inputs=[str(src)], images=n_images, with_faces=counts["faces"],
            without=counts["no_face"] + counts["no_head"], unreadable=counts["unreadable"],
            crops=counts["crops"], methods=dict(self.methods), skipped_done=counts["skipped_done"],
            total_crops=len(self.ds), bad=self.bad[:20], seconds=round(seconds, 3),
            rate=round(n_images / seconds, 1) if seconds > 0 else None, cascade=origin, options=asdict(self.opts),
            off_edge=counts["off_edge"],
        )


def crop_part(part: Part, done: list[str], opts: CropOptions, cascade_xml: bytes | None, pad: tuple,
              background: tuple, preview_n: int, part_file: str) -> dict:
    """A Ray task of ``crop --engine ray``: every image of the part not in ``done``, through :func:`_process` as
    the local engine runs it. The crops (and up to ``preview_n`` previews, as PNG) go to one file, ``part_file``;
    the result says per image what :func:`crop` writes, in input order, with each crop's place in that file."""
    cv2.setNumThreads(1)
    if opts.lego and opts.locator in ("learned", "auto"):
        _torch_threads(1)  # a task's process: one thread, as each local worker
    skip = set(done)
    blobs: list[bytes] = []
    end = 0

    def put(data: bytes) -> list[int]:
        nonlocal end
        blobs.append(data)
        end += len(data)
        return [end - len(data), len(data)]

    with tempfile.TemporaryDirectory(prefix="gandata-cascade-") as tmp:
        path = None
        if cascade_xml is not None:  # shipped with the task: a worker on another machine has no cache of it
            path = str(Path(tmp) / "cascade.xml")
            Path(path).write_bytes(cascade_xml)
        detector = Detector(path, opts)
        items, shown = [], 0
        samples, problems = part_samples(part)
        for s in samples:
            if s.key in skip:
                continue
            data, why = s.read_or_why()
            if data is None:
                result = {"status": "unreadable", "reason": why}
            else:
                result = _process(data, s.key, opts, detector, pad, background, preview=shown < preview_n)
            if result.get("preview") is not None:
                shown += 1
                result["preview"] = put(images.encode(result["preview"], "png"))
            for c in result.get("crops", []):
                c["data"] = put(c["data"])
            items.append({"key": s.key, "ext": s.ext, "origin": s.origin, "record": s.record, "result": result})
    storage.put(part_file, b"".join(blobs))
    return {"items": items, "problems": [[p.origin, p.reason, p.lost] for p in problems]}


def _crop_on_ray(source: Input, done: set[str], opts: CropOptions, cascade: str | None, pad: tuple,
                 background: tuple, grid_n: int, work: Path, address: str | None, task_size: int, counts: Counter,
                 prog: Progress) -> Iterator[tuple[Sample, dict]]:
    """``(sample, result)`` for every image not done, as the local engine yields them, computed by Ray tasks whose
    parts and markers go to ``work``."""
    from . import engine

    parts = partitions([source], task_size, [])  # the listing's own problems stay in source.problems
    xml = Path(cascade).read_bytes() if cascade else None
    opts_digest = hashlib.sha256(json.dumps([asdict(opts), hashlib.sha256(xml or b"").hexdigest(), pad,
                                             background]).encode()).hexdigest()[:16]
    tasks = []
    for i, part in enumerate(parts):
        task_id = f"crop-{hashlib.sha256((opts_digest + part.ident).encode()).hexdigest()[:24]}"
        keys = [row[0] for row in part.payload] if part.kind == "files" else []
        tasks.append(engine.Task(task_id, (part, sorted(done.intersection(keys)), opts, xml, pad, background,
                                           grid_n if i < 2 else 0, str(work / f"{task_id}.bin"))))
    report = engine.run(crop_part, tasks, str(work / "markers"), address=address, workers=opts.workers,
                        label="crop", intact=lambda t: Path(t.args[-1]).is_file(), reads=[source.path],
                        writes=[str(work)])
    for t in tasks:
        result = report.results[t.id]
        blob = storage.read_bytes(t.args[-1])
        for item in result["items"]:
            if item["key"] in done:  # taken by an earlier run that read this task's marker
                counts["skipped_done"] += 1
                prog.advance(1)
                continue
            r = item["result"]
            for c in r.get("crops", []):
                off, n = c["data"]
                c["data"] = blob[off: off + n]
            if r.get("preview") is not None:
                off, n = r["preview"]
                r["preview"] = Image.open(io.BytesIO(blob[off: off + n])).convert("RGB")
            r.setdefault("preview", None)
            r.setdefault("reason", None)
            r["boxes"] = [(tuple(b), tuple(cb) if cb else None) for b, cb in r.get("boxes", [])]
            yield Sample(item["key"], item["ext"], item["record"], item["origin"], lambda: b""), r
        source.problems.extend(Problem(o, reason, lost) for o, reason, lost in result["problems"])


def _jobs(source: Input, done: dict[str, dict], opts: CropOptions, detector: Detector, pad: tuple, background: tuple,
          counts: Counter, prog: Progress, preview: Callable[[], bool], budget: MemoryBudget) -> Iterator[tuple]:
    """(sample, job) for every sample not done by an earlier run."""
    for sample in source:
        if sample.key in done:
            counts["skipped_done"] += 1
            prog.advance(1)
            continue
        data, why = sample.read_or_why()
        if data is None:
            yield sample, Done({"status": "unreadable", "reason": why})
            continue
        yield sample, partial(_process, data, sample.key, opts, detector, pad, background, preview(), budget)


def _debug_sheet(examples: list, path: str | os.PathLike, stage: str) -> None:
    cells = []
    for small, (width, _), boxes, key in examples:
        d = ImageDraw.Draw(small)
        f = small.width / width  # boxes are in the source image's pixels
        lw = max(2, small.width // 200)
        for box, cb in boxes:
            x, y, w, h = box
            d.rectangle((x * f, y * f, (x + w) * f, (y + h) * f), outline=(255, 40, 40), width=lw)
            if cb is not None:
                d.rectangle(tuple(v * f for v in cb), outline=(40, 220, 40), width=lw)
        cells.append((small, f"{len(boxes)} {key}"))
    title = f"{stage}: red = detected, green = cropped ({len(examples)} images)"
    storage.put(path, images.encode(images.contact_sheet(cells or [(None, "no images")], cell=192, title=title)))
