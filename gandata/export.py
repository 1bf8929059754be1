"""Shard sets → the layouts other GAN code trains on, streamed (one sample in memory at a time, nothing unpacked
first):

* ``stylegan``: the dataset zip of NVlabs' ``dataset_tool.py`` (StyleGAN2-ADA, StyleGAN3): ``00000/img00000000.png``
  … stored (no compression), every image the same square power-of-two size, RGB or grey, and ``dataset.json`` with
  ``{"labels": [[name, class], …]}`` for conditional training (``--cond=1``) or ``{"labels": null}``. The zip is
  written under a temporary name and renamed when whole, then read back the way their ``ImageFolderDataset`` reads it.
  ``gandata.json`` beside it maps each archive name to its shard key and holds the class names (their loader only
  lists image files and ``dataset.json``).
* ``imagefolder``: ``OUT/<class>/<key>.<ext>``, the layout of torchvision's ``ImageFolder`` and most trainers'
  folder loaders. Class folders are named ``0000_<label>`` so that their sorted order — which ``ImageFolder`` makes
  the class index — is the shards' class id in every split: every class has its folder (empty where the split lacks
  it) and the prefix is as wide as the largest id; ``classes.json`` lists the folders in id order. An unlabelled set
  goes to ``OUT/unlabelled``. Images keep their encoding; each file is written atomically and one already there is
  kept, so a killed export resumes; nothing is written through a link.

``--out`` never overlaps the input (:func:`gandata.paths.refuse_overlap`): the replacement of an earlier export
removes what it did not write, and must never reach the shards. One export at a time writes an output: it is locked
(``.NAME.lock`` beside it, while the export runs). What is exported is proven: every tar whose sha256 the set's
``dataset.json`` records is checked in the pass that reads it (a tar changed since sharding is one line naming it),
and an image from a tar without one is decoded before it is written, in both layouts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from . import images, shardset, storage
from .datasets import clean_key
from .declarations import EXPORT
from .errors import UserError, named
from .fileio import FolderLock, atomic_file, atomic_write, atomic_write_json, remove_stale_tmp
from .options import check_call
from .paths import refuse_overlap
from .progress import Progress
from .summary import Summary

_DEFAULT = EXPORT.defaults()
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


@dataclass
class ExportSummary(Summary):
    format: str
    out: str
    split: str
    images: int
    resolution: int | None  # stylegan: the one side; imagefolder: None
    classes: int | None  # labelled sets: how many classes; else None
    written: int  # files written by this run (imagefolder keeps what an earlier run wrote)
    seconds: float

    def lines(self) -> list[str]:
        what = f"{self.classes} classes" if self.classes else "no labels"
        size = f" at {self.resolution} px" if self.resolution else ""
        return [f"exported {self.images} {self.split} images{size} ({what}) as {self.format} → {self.out}",
                f"  {self.written} files written in {self.seconds} s"]


class _Sample(NamedTuple):
    key: str  # cleaned as shard cleans a foreign tar's (:func:`gandata.datasets.clean_key`)
    ext: str  # the image's extension
    data: bytes  # the image's bytes
    cls: int | None  # its class id
    url: str  # the tar it came from
    proven: bool  # its tar's sha256 is recorded, and checked once the tar is read (else nothing vouches for it)


def _samples(urls: list[str], commands: bool, names: list[str] | None, sset: shardset.ShardSet | None = None):
    """Every sample (:class:`_Sample`), in shard order; keys cleaned, so a member ``../../x.png`` is the key
    ``x-…``. A class id must be a whole number from 0 (below the number of label names, when the set has them).
    A tar whose set's description records its sha256 is checked against it in the same pass
    (:func:`gandata.shardset.checked`): once its last sample was handed on, a tar that changed after sharding
    raises :class:`~gandata.shardset.ChangedShard`."""
    for url in urls:
        described = sset.shard_of(url) if sset else None
        proven = bool(described and described.get("sha256"))
        with shardset.open_shard(url, commands) as raw, shardset.checked(raw, url, described) as f:
            try:
                for key, fields in shardset.samples(f, url, described.get("samples") if described else None):
                    ext = next((e for e in IMAGE_EXTS if e in fields), None)
                    if ext is None:
                        continue
                    if fields[ext] is None:
                        raise UserError(f"{url}: sample {key}'s image is over the "
                                        f"{shardset.MAX_MEMBER_BYTES >> 20} MiB limit")
                    cls = None
                    if "cls" in fields:
                        try:
                            cls = int(fields["cls"].strip())
                        except (ValueError, AttributeError):
                            raise UserError(f"{url}: sample {key} has a class label that is not a number") from None
                        if cls < 0 or (names and cls >= len(names)):
                            raise UserError(f"{url}: sample {key} has the class label {cls}, outside 0-"
                                            f"{len(names) - 1 if names else 'N'}; shard the set again")
                    yield _Sample(clean_key(key), ext, fields[ext], cls, url, proven)
            except (ValueError, EOFError) as e:
                raise UserError(f"{url} is damaged ({e}); check it with gandata inspect, or shard again") from None


def _described(spec: str) -> shardset.ShardSet | None:
    """The set's description when ``spec`` is a shard folder (else None)."""
    try:
        return shardset.read(spec)
    except (UserError, OSError, ValueError):
        return None


def _splits(split: str) -> list[str]:
    return list(shardset.SPLITS) if split == "all" else [split]


def export(spec: str, out: str | os.PathLike, format: str = _DEFAULT["format"],  # noqa: A002 (--format)
           split: str = _DEFAULT["split"], progress: bool = False, allow_commands: bool = False) -> ExportSummary:
    """Write the ``split`` (train, val or all) of the shard set ``spec`` to ``out`` as ``format``.
    ``allow_commands``: ``pipe:`` specs may run (the user's own command line)."""
    check_call(EXPORT, format=format, split=split)
    fmt = format
    if storage.is_url(out):
        raise UserError(f"--out {out}: export writes to a local path; copy the result to object storage after")
    if not allow_commands:
        shardset.refuse_commands([spec], "shards")
    urls: list[str] = []
    sset = None
    for sp in _splits(split):
        try:
            found, sset = shardset.resolve(spec, sp)
        except FileNotFoundError as e:
            if split == "all" and sp != "train" and urls:
                continue  # --split all of a set whose val split is empty
            described = _described(spec)
            if described is not None and described.samples_in(sp) == 0:
                other = "train" if sp == "val" else "val"
                raise UserError(f"{spec} holds no {sp} images (its {sp} split is empty: sharded with "
                                f"{'--val-fraction 0' if sp == 'val' else 'every sample in val'}); export --split "
                                f"{other} or all") from None
            raise UserError(f"{spec}: {e}") from None
        urls += [u for u in found if u not in urls]
    # the input and each tar it names (a link in a shard folder leads elsewhere): an earlier export's cleanup, or
    # the zip's rename, must never reach them
    refuse_overlap(out, "--out", [(spec, "SHARDS"), *((u, "SHARDS") for u in urls if u != spec)])
    names = sset.label_names if sset else None
    total = sum(sset.samples_in(sp) for sp in _splits(split)) if sset else None
    out = Path(out)
    t0 = time.monotonic()
    samples = _samples(urls, allow_commands, names, sset)
    with Progress(f"export {fmt}", total, enabled=progress) as prog:
        if fmt == "stylegan":
            n, resolution, classes = _stylegan(samples, out, names, prog)
            written = n + 2
        else:
            n, written, classes = _imagefolder(samples, out, names, prog)
            resolution = None
    if n == 0:
        raise UserError(f"{spec} holds no {split} images to export")
    return ExportSummary(format=fmt, out=str(out), split=split, images=n, resolution=resolution, classes=classes,
                         written=written, seconds=round(time.monotonic() - t0, 3))


# ------------------------------------------------------------------------------------------------ stylegan


def _decoded(sample: _Sample) -> Image.Image:
    """The sample's image decoded whole, or one line naming its tar and key: every image of a zip, and an image of
    an ImageFolder export that nothing vouches for (its tar's sha256 is not recorded: a set made elsewhere)."""
    try:
        return images.decode(sample.data)
    except images.ImageError as e:
        raise UserError(f"{sample.url}: sample {sample.key}: {e}; check the set with gandata inspect, or shard it "
                        "again") from None


def _stylegan_png(sample: _Sample) -> tuple[bytes, tuple[int, int, int]]:
    """The image as dataset_tool stores it (PNG, RGB or grey) and its (width, height, channels)."""
    im, data, ext = _decoded(sample), sample.data, sample.ext
    if ext == "png" and im.mode in ("RGB", "L"):
        return data, (im.width, im.height, 3 if im.mode == "RGB" else 1)
    rgb = images.to_rgb(im) if im.mode != "L" else im
    return images.encode(rgb, "png"), (rgb.width, rgb.height, 3 if rgb.mode == "RGB" else 1)


def _stylegan(samples, out: Path, names: list[str] | None, prog: Progress) -> tuple[int, int, int | None]:
    if out.suffix != ".zip":
        raise UserError(f"--out {out}: a StyleGAN dataset is a .zip file (e.g. --out data/anime-64.zip)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; a StyleGAN dataset is a .zip file")
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out {out}: {out.parent} is a file, not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _write_zip(samples, out, names, prog)


def _write_zip(samples, out: Path, names: list[str] | None, prog: Progress) -> tuple[int, int, int | None]:
    """The zip, written under a temporary name and renamed when whole and read back (under the output's lock)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a killed export's (only ours: the folder may be shared)
        stale.unlink(missing_ok=True)
    labels: list = []
    index: list = []
    attrs = None
    labelled = False
    with atomic_file(out, mode="w+b") as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, sample in enumerate(samples):
                key, cls = sample.key, sample.cls
                png, shape = _stylegan_png(sample)
                if attrs is None:
                    attrs = shape
                    w, h, _ = shape
                    if w != h or w & (w - 1):
                        raise UserError(f"StyleGAN needs square images with a power-of-two side; these are {w}×{h}: "
                                        "shard them with --size 64 (or 128, 256…) first")
                elif shape != attrs:
                    raise UserError(f"sample {key} is {shape[0]}×{shape[1]} with {shape[2]} channel(s), the first "
                                    f"was {attrs[0]}×{attrs[1]} with {attrs[2]}: StyleGAN needs them all alike")
                idx = f"{i:08d}"
                name = f"{idx[:5]}/img{idx}.png"
                zf.writestr(name, png)
                labels.append([name, cls] if cls is not None else None)
                index.append([name, key])
                prog.advance(1)
            if not index:
                raise UserError("the shards hold no images to export")
            labelled = all(x is not None for x in labels)
            zf.writestr("dataset.json", json.dumps({"labels": labels if labelled else None}))
            zf.writestr("gandata.json", json.dumps({"keys": index, "label_names": names if labelled else None},
                                                   ensure_ascii=False))
        f.flush()
        f.seek(0)
        _check_stylegan_zip(f, len(index))  # read back before the zip appears under its name
    classes = (max(x[1] for x in labels) + 1) if labels and labelled else None
    return len(index), attrs[0] if attrs else 0, classes


def _check_stylegan_zip(path, n: int) -> None:
    """Read the zip back as StyleGAN's ImageFolderDataset does (:func:`read_back_stylegan`)."""
    fnames, labels, _ = read_back_stylegan(path)
    if len(fnames) != n:
        raise RuntimeError(f"the zip lists {len(fnames)} images, {n} were written")
    if labels is not None and len(labels) != n:
        raise RuntimeError("dataset.json does not label every image")


# --------------------------------------------------------------------------------------------- imagefolder


MARK = ".gandata-export"  # in an ImageFolder export: this folder is gandata's to replace
MAX_UNNAMED_CLASSES = 100_000  # a set without label names gets a folder for every id up to its largest


def _width(n_classes: int) -> int:
    """Digits of the class folders' prefix: 4, or as many as the largest class id has (10 000 classes: 5), so that
    the folders' sorted order is their ids' order."""
    return max(4, len(str(max(n_classes - 1, 0))))


def _folder_name(cls: int | None, names: list[str] | None, width: int) -> str:
    if cls is None:
        return "unlabelled"
    label = names[cls] if names and 0 <= cls < len(names) else str(cls)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")[:60] or "class"
    return f"{cls:0{width}d}_{safe}"


def _own_folder(path: Path) -> None:
    """``path`` as a real folder of the export: a symbolic link there (a class folder replaced by a link to
    elsewhere) is removed — the link, never what it leads to — so nothing is ever written through it."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(exist_ok=True)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """The output of an export (a zip or a folder) locked for the block: ``.NAME.lock`` beside it, there only while
    an export holds it, so that a second export into the same output is one line instead of each removing the
    other's files (a folder's sweep, a zip's stale temporaries)."""
    where = Path(os.path.abspath(out))
    try:
        lock = FolderLock(where.parent, f".{where.name}.lock", transient=True).acquire()
    except UserError:
        raise UserError(f"another gandata export is writing {out}; wait for it to finish, or give another "
                        f"{named('out')}") from None
    except OSError as e:
        raise UserError(f"{named('out', out)}: cannot lock it ({e.strerror})") from None
    try:
        yield
    finally:
        lock.release()


def _foreign(out: Path) -> bool:
    """Whether ``out`` is a folder that holds files and is not an earlier export's (no :data:`MARK`)."""
    return out.is_dir() and not (out / MARK).exists() and any(out.iterdir())


def _imagefolder(samples, out: Path, names: list[str] | None, prog: Progress) -> tuple[int, int, int | None]:
    """Write the samples as ``OUT/<class>/<key>.<ext>``. The folder must be new, empty, or an earlier export (its
    :data:`MARK`); afterwards it holds exactly this export: a file already there with the same bytes is kept (a
    killed export resumes), one with other bytes is replaced, and whatever an earlier export left that this one
    did not write (other classes, other keys, links) is removed. A key that comes again gets ``-2``, ``-3``… so
    every sample counted is a file. Every class of the set has its folder, empty where this split lacks the class,
    so torchvision's class index (the folders' sorted order) is the class id in every split. Nothing is written
    through a link inside OUT. The folder is locked for the export (:func:`_locked`). What is written is proven:
    a tar with a recorded sha256 is checked as it is read, and the files written from one that fails are removed
    again before the line that names it; an image from a tar without one is decoded first, as the zip's are."""
    if out.suffix == ".zip" or (out.exists() and not out.is_dir()):
        raise UserError(f"--out {out}: an ImageFolder export is a folder")
    foreign = (f"--out {out} holds files that gandata export did not write; give a new or empty folder (an earlier "
               "export's folder is replaced)")
    if _foreign(out):
        raise UserError(foreign)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--out {out}: a part of this path is a file, not a folder") from None
    with _locked(out):
        if _foreign(out):  # decided again under the lock: what another command did meanwhile
            raise UserError(foreign)
        out.mkdir(exist_ok=True)
        return _write_folder(samples, out, names, prog)


def _write_folder(samples, out: Path, names: list[str] | None, prog: Progress) -> tuple[int, int, int | None]:
    """:func:`_imagefolder`'s writing, under the folder's lock."""
    atomic_write(out / MARK, b"written by gandata export; the next export into this folder replaces it\n")
    width = _width(len(names)) if names else 4  # without names: widened at the end if the ids need it
    n = written = 0
    keep: set[str] = {MARK}
    seen: set[str] = set()
    classes: set[int] = set()
    tar, from_tar = None, []  # the tar being read, and the files this export wrote from it
    try:
        for sample in samples:
            if sample.url != tar:
                tar, from_tar = sample.url, []
            if not sample.proven:
                _decoded(sample)
            wrote = _write_sample(sample, out, names, width, keep, seen)
            if wrote is not None:
                from_tar.append(wrote)
                written += 1
            if sample.cls is not None:
                classes.add(sample.cls)
            n += 1
            prog.advance(1)
    except shardset.ChangedShard:  # what came from a tar that is not the one written: nothing vouches for it
        for path in from_tar:
            path.unlink(missing_ok=True)
        raise
    _remove_all_but(out, keep)
    if not classes:
        return n, written, None
    n_classes = len(names) if names else max(classes) + 1
    if _width(n_classes) != width:  # ids past 9999 in a set without names: every class folder gets the wider prefix
        for cls in sorted(classes):
            (out / _folder_name(cls, names, width)).rename(out / _folder_name(cls, names, _width(n_classes)))
        width = _width(n_classes)
    folders = [_folder_name(c, names, width) for c in range(n_classes)]
    for folder_name in folders:  # the classes this split lacks: empty, so that no later index shifts
        _own_folder(out / folder_name)
    atomic_write_json(out / "classes.json", {"classes": folders, "label_names": names})
    return n, written, n_classes


def _write_sample(sample: _Sample, out: Path, names: list[str] | None, width: int, keep: set[str],
                  seen: set[str]) -> Path | None:
    """One sample as ``OUT/<class>/<key>.<ext>`` (``keep``: the names written so far, a key that comes again gets
    ``-2``…; ``seen``: the class folders made so far). Returns the file when it was written, None when the same
    bytes were there already."""
    key, ext, data, cls = sample.key, sample.ext, sample.data, sample.cls
    if cls is not None and not names and cls >= MAX_UNNAMED_CLASSES:
        raise UserError(f"sample {key} has the class label {cls}, and the set names no classes: an ImageFolder "
                        f"export makes a folder for every class id up to the largest (at most "
                        f"{MAX_UNNAMED_CLASSES}); shard the set with --label-field, or export --format stylegan")
    folder = out / _folder_name(cls, names, width)
    if folder.name not in seen:
        _own_folder(folder)
        remove_stale_tmp(folder)
        seen.add(folder.name)
    name, again = f"{folder.name}/{key}.{ext}", 1
    while name in keep:
        again += 1
        name = f"{folder.name}/{key}-{again}.{ext}"
    keep.add(name)
    path = out / name
    if path.is_symlink() or not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        atomic_write(path, data, fsync=False)  # renamed over a link, never written through it
        return path
    return None


def _remove_all_but(out: Path, keep: set[str]) -> None:
    """Remove what an earlier export left in ``out`` that this one did not write (files and links, then empty
    folders); a link is removed as a link, whatever it leads to."""
    for folder, dirs, files in os.walk(out, topdown=False):
        rel = Path(folder).relative_to(out)
        for f in [*files, *(d for d in dirs if (Path(folder) / d).is_symlink())]:
            if (rel / f).as_posix() not in keep:
                (Path(folder) / f).unlink()
        if rel != Path(".") and not any(Path(folder).iterdir()):
            Path(folder).rmdir()


def read_back_stylegan(path) -> tuple[list[str], list | None, tuple]:
    """(image names, labels per image or None, first image's array shape C×H×W) — StyleGAN's loader's view of a
    dataset zip (a path or an open file), for checks and tests."""
    import numpy as np

    Image.init()  # the loader lists the names with an extension PIL knows
    with zipfile.ZipFile(path) as zf:
        all_names = set(zf.namelist())
        fnames = sorted(f for f in all_names if os.path.splitext(f)[1].lower() in Image.EXTENSION)
        arr = np.array(images.decode(zf.read(fnames[0])))
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        labels = json.loads(zf.read("dataset.json"))["labels"] if "dataset.json" in all_names else None
    per_image = [dict(labels)[f] for f in fnames] if labels is not None else None
    return fnames, per_image, arr.transpose(2, 0, 1).shape
