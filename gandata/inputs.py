"""Every input a stage reads, as one iterator of :class:`Sample`: a dataset folder (local or in object storage), a
plain folder of images (recursive), WebDataset tars (ours, img2dataset's, anyone's); how ``--engine ray`` cuts them
into parts that a task on another machine reads; and what names an input's content for a finished job
(:meth:`Input.identity`).
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
import time
from collections.abc import Callable, Iterable, Iterator
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
from .fileio import atomic_write_json, jsonl_objects


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
        self.path = path  # as the user wrote it: what messages and dataset.json show, on every engine
        self.problems: list[Problem] = []
        self._identity: str | None = None

    def __iter__(self) -> Iterator[Sample]:
        raise NotImplementedError

    def count_hint(self) -> int | None:
        return None

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "content": self.identity()}

    def identity(self) -> str:
        """What names the input's content, which a finished job is compared by: a digest of everything a run reads
        from it, each file by its name in the input and its bytes — a dataset folder's manifest and every image it
        lists, an image folder's files, each tar — or an object's ETag (a store gives every PUT a new one). Never
        where the input lies (the same files through another spelling, a symbolic link or another current folder
        are the same input), and never a file's size and date alone: ``cp -p``, ``rsync -t``, ``tar x`` and tars
        padded to a fixed size give other bytes the same size and date.

        Local files are read and hashed only when their stamps (device, inode, size, modification and
        change time) differ from those the last digest of this input was taken at (kept in the cache,
        :func:`_hashed`): the kernel moves a file's change time at every write and no tool sets it back, and a
        file put in another's place has another inode — so a finished re-run reads nothing but stats."""
        if self._identity is None:
            self._identity = _tagged(self.kind, self._entries(), self._tags()) if storage.is_url(self.path) \
                else _hashed(self.kind, self._entries, self.path)
        return self._identity

    def _entries(self) -> Iterator[tuple[str, str]]:
        """``(name in the input, where it is read: a local path or an object's URL)`` of every file a run reads,
        in the order it reads them."""
        raise NotImplementedError

    def _tags(self) -> Callable[[str], str]:
        """An object's content tag by its URL (one HEAD each; a listing where an input has many)."""
        return _tag_of


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
        return {**super().describe(), "lineage": lineage(self.path)}

    def _entries(self) -> Iterator[tuple[str, str]]:
        yield MANIFEST, str(Path(self.path) / MANIFEST)
        for row in self.dataset.rows():
            try:
                yield row["path"], str(self.dataset.image_path(row))
            except ValueError:  # a path that leaves the folder: never read, and said so by the run
                continue


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

    def _entries(self) -> Iterator[tuple[str, str]]:
        yield MANIFEST, storage.join(self.path, MANIFEST)
        for row in self.rows():
            yield row["path"], storage.join(self.path, row["path"])

    def _tags(self) -> Callable[[str], str]:
        tags, root = storage.tags(self.path), len(self.path) + 1  # every object below the prefix: one listing
        return lambda url: tags.get(url[root:], "missing")


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

    def _entries(self) -> Iterator[tuple[str, str]]:
        for rel in self.files():
            yield rel, str(self.root / rel)


class TarInput(Input):
    """WebDataset shards: ours (a folder with dataset.json), img2dataset's output, or any tar list."""

    kind = "shards"

    def __init__(self, path: str, tars: list[Path] | list[str], at: list[str] | None = None,
                 expected: list[int | None] | None = None):
        super().__init__(path)
        self.tars = tars  # local paths, or object-store URLs, as named in messages and records
        self.at = at or [str(t) for t in tars]  # where each is opened (a Ray task: the driver's absolute path)
        self._expected = expected  # each tar's samples by its set's description (None: no description says)
        self._set: shardset.ShardSet | None | bool = False

    def shard_set(self) -> shardset.ShardSet | None:
        """The description of the set this input is (a set's folder or prefix), else None."""
        if self._set is False:
            self._set = shardset.read(self.path) if storage.is_url(self.path) or Path(self.path).is_dir() else None
        return self._set

    def expected(self) -> list[int | None]:
        """How many samples each tar holds by its set's description (None where there is none)."""
        if self._expected is None:
            ss = self.shard_set()
            self._expected = [ss.samples_of(t) if ss else None for t in self.tars]
        return self._expected

    def count_hint(self) -> int | None:
        ss = self.shard_set()
        return ss.total if ss else None

    def _entries(self) -> Iterator[tuple[str, str]]:
        for tar, at in zip(self.tars, self.at):
            yield str(tar).rstrip("/").rsplit("/", 1)[-1], at  # the name a sample's record carries ("shard")

    def __iter__(self) -> Iterator[Sample]:
        for tar, at, expected in zip(self.tars, self.at, self.expected()):
            yield from self._read_tar(tar, at, expected)

    def _read_tar(self, tar: Path | str, at: str, expected: int | None) -> Iterator[Sample]:
        """The samples of one tar; one cut short, or holding other than the ``expected`` samples its set's
        description counts, is damaged after the samples it gave."""
        key: str | None = None
        try:
            with shardset.open_shard(at) if storage.is_url(at) else open(at, "rb") as f:  # a store: deadlines
                for key, fields in shardset.samples(f, str(tar), expected):
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
    dataset or image folder, each read where the task runs by the absolute path the driver gave it, and named as
    the user's input names it) or ``tar`` (one tar, the same way). ``ident`` is a digest of what it holds (keys,
    absolute paths, a manifest's sha256s and the files' stamps: :func:`_stamp`), so the same inputs give the same
    parts from any current folder and a grown or changed input changes only the parts it touched."""

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
            part("files", chunk, [[c[0], c[5], c[4], _ident(c[5])] for c in chunk])

    for src in inputs:
        if isinstance(src, TarInput):
            for tar, at, expected in zip(src.tars, src.at, src.expected()):
                at = storage.absolute(at)
                part("tar", [str(tar), at, expected], [at, expected, _ident(at)])
            continue
        chunk: list[list] = []
        for s in src:
            chunk.append([s.key, s.ext, s.record, s.origin, s.sha256, storage.absolute(s.origin)])
            if len(chunk) == size:
                flush(chunk)
                chunk = []
        flush(chunk)
        problems.extend(src.problems)
    return parts


def _ident(path: str) -> list | str:
    """What tells a file's content apart without reading it: a local file's stamp, an object's tag."""
    return _tag_of(path) if storage.is_url(path) else _stamp(path)


def file_stamp(path: str) -> list | None:
    """A local regular file's stamp (see :func:`_stamp`), or None where there is none to take (a URL, a tar's
    member, a file that cannot be read)."""
    if storage.is_url(path):
        return None
    st = _stamp(path)
    return st if isinstance(st, list) else None


def _stamp(path: str) -> list | str:
    """A local file's stamp: device, inode, size, modification and change time (ns) — it differs whenever the
    bytes found at ``path`` can differ — or why there is no file to read."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _tag_of(url: str) -> str:
    try:
        return storage.tag(storage.info(url))
    except FileNotFoundError:
        return "missing"


def _sha256_of(path: str) -> str:
    """A local file's sha256, read in blocks (never a FIFO or a device: opened without blocking, checked to be a
    regular file), or why it cannot be read."""
    try:
        with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return "not a regular file"
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        return f"unreadable ({e.strerror})"


SETTLED_NS = 2_000_000_000  # a stamp is kept only when every file is older than this: a file changed again within
# the clock's tick (kernels stamp times from a coarse clock) would otherwise keep its stamp with other bytes
DIGESTS = "input-digests"  # in the cache: {"stamp", "content"} per input, by kind and real path


def _hashed(kind: str, entries: Callable[[], Iterable[tuple[str, str]]], path: str) -> str:
    """A local input's content digest: its files' names and sha256s — unless the digest of their
    stamps is the one recorded beside the last content digest of this input (its real path: another spelling or a
    link to it is the same), when that is given back without reading anything."""
    from .assets import cache_dir

    stamps, newest = hashlib.sha256(kind.encode()), 0
    for name, where in entries():
        st = _stamp(where)
        stamps.update(json.dumps([name, st]).encode())
        newest = max(newest, st[4] if isinstance(st, list) else 0)
    memo = cache_dir() / DIGESTS / (hashlib.sha256(f"{kind}:{os.path.realpath(path)}".encode()).hexdigest()[:32]
                                    + ".json")
    try:
        known = json.loads(memo.read_bytes())
        if known["stamp"] == stamps.hexdigest() and isinstance(known["content"], str):
            return known["content"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    content = hashlib.sha256(kind.encode())
    for name, where in entries():  # one after another: a pool's hand-over costs more than hashing a small image
        content.update(json.dumps([name, _sha256_of(where)]).encode())
    if time.time_ns() - newest > SETTLED_NS:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(memo, {"stamp": stamps.hexdigest(), "content": content.hexdigest()})
        except OSError:  # a read-only or full cache: the digest is only read again next time
            pass
    return content.hexdigest()


def _tagged(kind: str, entries: Iterable[tuple[str, str]], tag: Callable[[str], str]) -> str:
    """An input in object storage: its objects' names and tags (nothing read)."""
    h = hashlib.sha256(kind.encode())
    for name, url in entries:
        h.update(json.dumps([name, tag(url)]).encode())
    return h.hexdigest()


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
        tar, at, expected = part.payload
        if not storage.is_url(at) and not os.path.exists(at):
            raise _missing(at)
        src = TarInput(tar, [tar], [at], [expected])
        return iter(src), src.problems
    return (Sample(key, ext, record, origin, lambda f=at: _on_this_node(f), sha)
            for key, ext, record, origin, sha, at in part.payload), []


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


