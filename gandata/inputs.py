"""Every input a stage reads, as one iterator of :class:`Sample`: a dataset folder (local or in object storage), a
plain folder of images (recursive), WebDataset tars (ours, img2dataset's, anyone's); how ``--engine ray`` cuts them
into parts that a task on another machine reads; and what names an input's content for a finished job.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import braceexpand

from . import shardset, storage
from .compact import KeySet, Strings
from .datasets import (
    IMAGE_EXTS,
    MANIFEST,
    Dataset,
    Problem,
    clean_key,
    is_dataset,
    lineage,
    make_key,
    manifest_rows,
    read_bounded,
)
from .errors import UserError
from .fileio import jsonl_objects


@dataclass
class Sample:
    """One image from any input, plus what is known about it."""

    key: str
    ext: str  # the stored file's extension, lower-case
    record: dict  # the manifest row, the tar's json, or a few fields describing the file
    origin: str  # where it came from, for messages ("data/x/raw/images/ab/k.png", "a.tar:k.jpg")
    load: Callable[[], bytes] = field(repr=False)
    sha256: str | None = None  # of the stored bytes, when known without reading them

    def read(self) -> bytes:
        return self.load()

    def read_or_why(self) -> tuple[bytes, None] | tuple[None, str]:
        """``(bytes, None)``, or ``(None, why)`` when the file cannot be read (a dangling link, a FIFO, a device, a
        file over the size limit): the sample's verdict. A file a Ray task's machine does not see
        (:class:`MissingInput`) is the task's failure, and raised."""
        try:
            return self.load(), None
        except MissingInput:
            raise
        except OSError as e:
            return None, f"cannot read ({e.strerror or e})"


class Input:
    """A readable source of samples: a dataset folder, a plain folder of images, or WebDataset tars.

    Iterating yields :class:`Sample` objects; anything unreadable on the way (a missing file, a torn tar) is
    appended to ``problems`` and iteration goes on.
    """

    kind: str

    def __init__(self, path: str):
        self.path = path
        self.problems: list[Problem] = []

    def __iter__(self) -> Iterator[Sample]:
        raise NotImplementedError

    def count_hint(self) -> int | None:
        return None

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind}

    def identity(self) -> str:
        """A digest of what the input holds as listed — paths with sizes and dates, a manifest's size and date, a
        tar's size and date or ETag — without reading a sample or keeping the listing: what a finished job is
        compared by."""
        h = hashlib.sha256(f"{self.kind}:{storage.absolute(self.path)}".encode())
        for item in self._listing():
            h.update(json.dumps(item, default=str).encode())
        return h.hexdigest()

    def _listing(self) -> Iterator:
        raise NotImplementedError


class DatasetInput(Input):
    kind = "dataset"

    def __init__(self, path: str):
        super().__init__(path)
        self.dataset = Dataset.open(path)

    def __iter__(self) -> Iterator[Sample]:
        ds = self.dataset
        for row in ds.rows(self.problems):
            try:
                file = ds.image_path(row)
            except ValueError as e:
                self.problems.append(Problem(f"{self.path}/{MANIFEST}", str(e)))
                continue
            if not file.is_file():
                self.problems.append(Problem(str(file), "listed in the manifest but missing on disk"))
                continue
            ext = file.suffix.lower().lstrip(".")
            yield Sample(row["key"], ext, row, str(file), lambda f=file: read_bounded(f), row.get("sha256"))

    def count_hint(self) -> int | None:
        return len(self.dataset)

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "lineage": lineage(self.path)}

    def _listing(self) -> Iterator:
        yield _file_ident(str(Path(self.path) / MANIFEST))  # rows are appended, never changed in place


class RemoteDatasetInput(Input):
    """A dataset folder in object storage (``s3://bucket/data/anime/faces``, copied there whole), read: its manifest
    in one GET, each image by its URL when a task reads it."""

    kind = "dataset"

    def __init__(self, url: str):
        super().__init__(url.rstrip("/"))
        self._rows: list[dict] | None = None

    def rows(self) -> list[dict]:
        if self._rows is None:
            where = storage.join(self.path, MANIFEST)
            data = storage.read_bytes(where)
            self._rows = list(manifest_rows(jsonl_objects(io.BytesIO(data)), where, self.problems))
        return self._rows

    def __iter__(self) -> Iterator[Sample]:
        for row in self.rows():
            rel = row["path"]
            if rel.startswith("/") or ".." in rel.split("/"):
                self.problems.append(Problem(storage.join(self.path, MANIFEST),
                                             f"manifest path {rel!r} leaves the dataset folder"))
                continue
            url = storage.join(self.path, rel)
            ext = rel.rsplit(".", 1)[-1].lower()
            yield Sample(row["key"], ext, row, url, lambda u=url: read_bounded(u), row.get("sha256"))

    def count_hint(self) -> int | None:
        return len(self.rows())

    def _listing(self) -> Iterator:
        yield _tar_ident(storage.join(self.path, MANIFEST))[1:]  # its size and ETag: one HEAD


def _walk_images(root: Path) -> Iterator[Path]:
    """Image files under ``root`` in a stable order, skipping hidden files and folders. Symbolic links are followed,
    but every real folder is entered once (a link back up the tree is not a loop) and every real file is yielded
    once (two links to one picture are one sample)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[int, set[int]] = {}  # device → inodes (a set of ints: half the memory of (dev, ino) tuples)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.rsplit(".", 1)[-1].lower() in IMAGE_EXTS and "." in name:
                path = Path(dirpath) / name
                try:
                    fst = os.stat(path)
                except OSError:  # a dangling link: listed, and read() says why
                    yield path
                    continue
                if stat.S_ISREG(fst.st_mode):
                    inodes = seen_files.setdefault(fst.st_dev, set())
                    if fst.st_ino in inodes:
                        continue
                    inodes.add(fst.st_ino)
                yield path


class FolderInput(Input):
    """A plain folder of images, searched recursively (a user's own collection, or an ImageFolder tree whose top
    subfolders are classes: each record's ``folder``, so ``--label-field folder`` labels by them)."""

    kind = "folder"

    def __init__(self, path: str):
        super().__init__(path)
        self.root = Path(path)
        self._files: Strings | None = None  # paths relative to the root, in one buffer (docs/memory.md)

    def files(self) -> Strings:
        if self._files is None:
            self._files = Strings()
            for p in _walk_images(self.root):
                self._files.append(p.relative_to(self.root).as_posix())
        return self._files

    def __iter__(self) -> Iterator[Sample]:
        seen = KeySet()
        for rel in self.files():
            file = self.root / rel
            key = make_key(rel.rsplit(".", 1)[0])
            if not seen.add(key)[1]:  # a.png beside a.jpg: the later one keys on its full name
                key = make_key(rel)
                seen.add(key)
            ext = file.suffix.lower().lstrip(".")
            record = {"source": "folder", "file": rel}
            if "/" in rel:  # an ImageFolder tree (ROOT/<class>/…): the top subfolder, a label source
                record["folder"] = rel.split("/", 1)[0]
            yield Sample(key, ext, record, str(file), lambda f=file: read_bounded(f))

    def count_hint(self) -> int | None:
        return len(self.files())

    def _listing(self) -> Iterator:
        for rel in self.files():
            yield [rel, *_file_ident(str(self.root / rel))]


class TarInput(Input):
    """WebDataset shards: ours (a folder with dataset.json), img2dataset's output, or any tar list."""

    kind = "shards"

    def __init__(self, path: str, tars: list[Path] | list[str]):
        super().__init__(path)
        self.tars = tars  # local paths, or object-store URLs

    def count_hint(self) -> int | None:
        ss = shardset.read(self.path) if storage.is_url(self.path) or Path(self.path).is_dir() else None
        return ss.total if ss else None

    def _listing(self) -> Iterator:
        for tar in self.tars:
            yield _tar_ident(tar)

    def __iter__(self) -> Iterator[Sample]:
        for tar in self.tars:
            yield from self._read_tar(tar)

    def _read_tar(self, tar: Path | str) -> Iterator[Sample]:
        key: str | None = None
        try:
            with storage.open_stream(str(tar)) if storage.is_url(tar) else open(tar, "rb") as f:
                for key, fields in shardset.samples(f, str(tar)):
                    yield from self._sample(tar, key, fields)
        except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
            reason = f"not a readable tar ({e})" if key is None else f"tar is damaged after {key!r} ({e})"
            self.problems.append(Problem(str(tar), reason))

    def _sample(self, tar: Path | str, raw_key: str, fields: dict[str, bytes]) -> Iterator[Sample]:
        for ext in fields.pop(shardset.REPEATED, []):
            self.problems.append(Problem(f"{tar}:{raw_key}.{ext}", "member repeated in the tar; the first copy is "
                                         "used", lost=False))
        image_ext = next((e for e in sorted(fields) if e.rsplit(".", 1)[-1] in IMAGE_EXTS), None)
        if image_ext is None:
            self.problems.append(Problem(f"{tar}:{raw_key}", f"sample has no image (fields: {', '.join(fields)})"))
            return
        oversized = [e for e, v in fields.items() if v is None]
        if oversized:
            self.problems.append(Problem(f"{tar}:{raw_key}.{oversized[0]}", f"member over the "
                                         f"{shardset.MAX_MEMBER_BYTES >> 20} MiB limit; not read"))
            return
        record: dict = {}
        if "json" in fields:
            try:
                loaded = json.loads(fields["json"])
                if isinstance(loaded, dict):
                    record = loaded
            except ValueError:
                self.problems.append(Problem(f"{tar}:{raw_key}.json", "invalid JSON; the image is kept without it",
                                             lost=False))
        cls_field = next((e for e in sorted(fields) if e.rsplit(".", 1)[-1] == "cls"), None)
        if cls_field and "cls" not in record:
            try:
                record["cls"] = int(fields[cls_field].strip())
            except ValueError:
                self.problems.append(Problem(f"{tar}:{raw_key}.{cls_field}", "class label is not an integer; the "
                                             "image is kept without it", lost=False))
        record.setdefault("source", "webdataset")
        record["shard"] = str(tar).rstrip("/").rsplit("/", 1)[-1]
        key = clean_key(raw_key)
        data = fields[image_ext]
        yield Sample(key, image_ext.rsplit(".", 1)[-1], record, f"{tar}:{raw_key}.{image_ext}", lambda d=data: d)


@dataclass(frozen=True)
class Part:
    """A deterministic slice of the inputs, the unit of work of ``--engine ray``: ``files`` (a run of samples of a
    dataset or image folder, each read by its path where the task runs) or ``tar`` (one tar). ``ident`` is a digest
    of what it holds (keys, file paths and their sha256 or size and mtime; a tar's path, size and mtime), so the
    same inputs give the same parts and a grown input changes only the parts it touched."""

    kind: str
    payload: tuple
    ident: str


def partitions(inputs: list[Input], size: int, problems: list[Problem]) -> list[Part]:
    """The inputs cut into :class:`Part` s of ``size`` samples (a tar is one part), in input order. Problems met
    while listing (a manifest row whose file is missing) are appended to ``problems``."""
    parts: list[Part] = []

    def part(kind: str, payload: list, ident: list) -> None:
        parts.append(Part(kind, tuple(payload), hashlib.sha256(json.dumps([kind, ident]).encode()).hexdigest()[:24]))

    def flush(chunk: list[list]) -> None:
        if chunk:
            part("files", chunk, [[c[0], c[3], c[4] or _file_ident(c[3])] for c in chunk])

    for src in inputs:
        if isinstance(src, TarInput):
            for tar in src.tars:
                part("tar", [str(tar)], _tar_ident(tar))
            continue
        chunk: list[list] = []
        for s in src:
            chunk.append([s.key, s.ext, s.record, s.origin, s.sha256])
            if len(chunk) == size:
                flush(chunk)
                chunk = []
        flush(chunk)
        problems.extend(src.problems)
    return parts


def _tar_ident(tar: Path | str) -> list:
    """What names a tar's content: its path, size and mtime; an object's URL, size and ETag (or mtime)."""
    if storage.is_url(tar):
        info = storage.info(str(tar))
        return [str(tar), info.get("size"), info.get("ETag") or info.get("etag") or str(info.get("LastModified")
                                                                                           or info.get("mtime"))]
    st = Path(tar).stat()
    return [str(Path(tar).resolve()), st.st_size, st.st_mtime_ns]


def _file_ident(path: str) -> list:
    if storage.is_url(path):
        return _tar_ident(path)[1:]
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError as e:
        return [f"unreadable: {e.strerror}"]


class MissingInput(OSError):
    """A file the driver listed that the machine running a task cannot find: the task's failure (retried, then the
    run's), never a sample's verdict — a marker must not record what a re-run on a machine that sees the file would
    not reproduce."""


def _missing(path: str, code: int = errno.ENOENT) -> MissingInput:
    return MissingInput(code, f"{path} is not there on {socket.gethostname()} (the machine that listed it sees it); "
                        "every machine of the cluster must see the inputs at the same path (a shared file system) "
                        "or read them from object storage")


def _on_this_node(path: str) -> bytes:
    try:
        return read_bounded(path if storage.is_url(path) else Path(path))
    except (FileNotFoundError, NotADirectoryError) as e:
        raise _missing(path, e.errno) from None


def part_samples(part: Part) -> tuple[Iterator[Sample], list[Problem]]:
    """The samples of a part, read where the task runs, as its input would give them; and the list that problems
    met while reading (a damaged tar) are appended to. A file or tar that is not there raises
    :class:`MissingInput`."""
    if part.kind == "tar":
        tar = part.payload[0]
        if not storage.is_url(tar) and not os.path.exists(tar):
            raise _missing(tar)
        src = TarInput(tar, [tar if storage.is_url(tar) else Path(tar)])
        return iter(src), src.problems
    return (Sample(key, ext, record, origin, lambda f=origin: _on_this_node(f), sha)
            for key, ext, record, origin, sha in part.payload), []


def open_input(spec: str | os.PathLike) -> Input:
    """Open any input a stage accepts, or raise :class:`UserError` with one line saying what is wrong."""
    spec = str(spec)
    if storage.is_url(spec):
        return _remote_input(spec)
    if re.match(r"^[a-z][a-z0-9+.-]*:", spec) and not os.path.exists(spec):
        raise UserError(f"{spec}: only local paths and object storage (s3://, gs://) can be read here; download "
                        "the shards first")
    path = Path(spec)
    if path.is_dir():
        if is_dataset(path):
            return DatasetInput(spec)
        tars = shardset.local_tars(spec)
        if tars:
            missing = [t for t in tars if not t.is_file()]
            if missing:
                raise UserError(
                    f"{spec}: {shardset.INFO} lists {missing[0].name}, which is missing; re-run gandata shard"
                )
            return TarInput(spec, tars)
        folder = FolderInput(spec)
        if not folder.files():
            raise UserError(
                f"{spec} holds no images ({', '.join(sorted(IMAGE_EXTS))}) and no shards; point at a folder of images"
            )
        return folder
    if spec.endswith(".tar") or "{" in spec:
        tars = shardset.local_tars(spec)
        missing = [t for t in tars if not t.is_file()]
        if missing:
            raise UserError(f"{missing[0]} does not exist ({len(missing)} of the {len(tars)} shards named are missing)")
        return TarInput(spec, tars)
    if path.exists():
        raise UserError(f"{spec} is a file; give a folder of images, a dataset folder, or .tar shards")
    raise UserError(f"{spec} does not exist; give a folder of images, a dataset folder, or .tar shards")


def _remote_input(spec: str) -> Input:
    """Object storage: a dataset folder's prefix (its manifest.jsonl), a shard set's prefix (its dataset.json), a
    prefix of tars, one tar, a brace pattern."""
    try:
        if not spec.endswith(".tar") and "{" not in spec and storage.exists(storage.join(spec, MANIFEST)):
            return RemoteDatasetInput(spec)
        if spec.endswith(".tar") or "{" in spec:
            tars = list(braceexpand.braceexpand(spec))
            missing = [t for t in tars if not storage.exists(t)]
            if missing:
                raise UserError(f"{missing[0]} does not exist ({len(missing)} of the {len(tars)} shards named are "
                                "missing)")
            return TarInput(spec, tars)
        ss = shardset.read(spec)
        if ss is not None:
            return TarInput(spec, [str(t) for t in ss.tars()])
        tars = [storage.join(spec, n) for n in storage.names(spec) if n.endswith(".tar") and not n.startswith(".")]
    except OSError as e:
        raise UserError(f"{spec}: cannot read it ({e})") from None
    if not tars:
        raise UserError(f"{spec} holds no dataset.json and no .tar objects; object storage is read as shards")
    return TarInput(spec, tars)


