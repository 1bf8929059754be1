"""Dataset folders: their layout, their keys, their manifests.

This module is the only one that knows how a dataset folder is laid out::

    ROOT/
      manifest.jsonl     one JSON object per accepted sample, appended and flushed as it is written
      failures.jsonl     one JSON object per sample given up on
      stats.json         what the last run did (counts, bytes, seconds, rate, stage, options, inputs)
      images/ab/KEY.EXT  the files, fanned out by a hash of the key
      NAME.jsonl         a source's own journal (e.g. pages.jsonl: listing pages already read)
      .lock              held by the one process writing to the folder

It also says what keys are (short, stable, safe), reads one stored file safely (:func:`read_bounded`), and stages a
dataset folder bound for object storage. The inputs a stage reads — dataset folders, image folders, tars — are
:mod:`gandata.inputs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import shardset, storage
from .compact import KeySet
from .errors import UserError, named
from .fileio import (
    FolderLock,
    GroupCommit,
    JsonlLog,
    atomic_write,
    atomic_write_json,
    read_jsonl,
    remove_stale_tmp,
)
from .paths import refuse_other_kind

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
STATS = "stats.json"
IMAGES = "images"
DURABILITY = ("batch", "file", "none")

MAX_KEY_LEN = 96  # `<key>.json` fits a plain USTAR name (100 bytes): ordinary samples need no pax header
KEY_RE = re.compile(rf"^[a-z0-9_-]{{1,{MAX_KEY_LEN}}}$")
IMAGE_EXTS = {"png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"}
REQUIRED_FIELDS = ("width", "height", "source")

# --------------------------------------------------------------------------------------------- keys


def is_key(key: str) -> bool:
    return isinstance(key, str) and bool(KEY_RE.match(key))


def check_key(key: str) -> str:
    if not is_key(key):
        raise ValueError(f"bad key {key!r}: keys are 1-{MAX_KEY_LEN} characters of a-z, 0-9, '_' and '-'")
    return key


def _short_hash(text: str, n: int = 8) -> str:
    """A hash of the text's bytes: a file name that is not UTF-8 (its surrogate escapes) hashes as its own bytes."""
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def make_key(*parts: object) -> str:
    """A readable key from source fields, e.g. ``make_key("bricklink", "sw0001a")`` → ``bricklink-sw0001a``.

    The parts are joined with ``-`` and lower-cased; any other character outside ``[a-z0-9_-]`` becomes ``_``.
    When that replacement changed anything (or the key would be too long), a hash of the exact original text is
    appended, so two inputs share a key only when their joined text is equal ignoring case.
    """
    text = "-".join(str(p) for p in parts)
    low = text.lower()
    slug = re.sub(r"[^a-z0-9_-]+", "_", low).strip("_-")
    if slug == low and 0 < len(slug) <= MAX_KEY_LEN:
        return slug
    head = slug[: MAX_KEY_LEN - 9].rstrip("_-")
    return f"{head}-{_short_hash(text)}" if head else _short_hash(text, 16)


def clean_key(raw: str) -> str:
    """A key for a sample whose name came from outside (a tar member's ``../../x``, ``/tmp/x``, ``Photo 1``): itself
    when it is already a key, else :func:`make_key` of it — what every reader of foreign tars uses, so no name ever
    becomes a path outside the folder it is written into."""
    return raw if is_key(raw) else make_key(raw)


def hash_key(prefix: str, fields: Any) -> str:
    """A key for a sample described by parameters (``fields``: any JSON value), e.g. ``bitmoji-3f9a0c51e2d4b7a8``.

    Equal parameters give the same key whatever the order of dict entries.
    """
    canon = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return child_key(make_key(prefix), "-" + hashlib.sha1(canon.encode("utf-8", "surrogateescape")).hexdigest()[:16])


def child_key(parent: str, suffix: str) -> str:
    """``parent + suffix`` (a crop's ``<parent>_f0``, a hashed key's ``<prefix>-<digest>``), shortened to fit
    :data:`MAX_KEY_LEN` when it would not: the parent is cut and a hash of all of it added, so distinct parents
    keep distinct keys. Keys that fit are unchanged."""
    if len(parent) + len(suffix) <= MAX_KEY_LEN:
        return parent + suffix
    head = parent[: MAX_KEY_LEN - len(suffix) - 9].rstrip("_-")
    return f"{head}-{_short_hash(parent)}{suffix}"


def lookup_field(record: dict, field: str) -> Any:
    """``record[field]``, where ``a.b`` reaches into nested objects; None when absent."""
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


# ---------------------------------------------------------------------------------------- dataset folders


def is_dataset(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def manifest_rows(objects: Iterable[dict], where: str, problems: list | None = None) -> Iterator[dict]:
    """A manifest's valid rows, one per key (see :meth:`Dataset.rows`)."""
    seen = KeySet()  # a million keys in tens of megabytes, not hundreds
    for row in objects:
        key = row.get("key")
        if not is_key(key) or not isinstance(row.get("path"), str):
            if problems is not None:
                problems.append(Problem(where, f"a row with the key {key!r} and the path {row.get('path')!r} is not "
                                        "a valid sample; skipped"))
            continue
        if seen.add(key)[1]:
            yield row


class Dataset:
    """A dataset folder. ``Dataset.create`` opens it for writing (resuming what is there); ``Dataset.open`` reads."""

    def __init__(self, root: str | os.PathLike, writable: bool = False, durability: str = "batch"):
        if durability not in DURABILITY:
            raise UserError(f"{named('durability')} must be one of {', '.join(DURABILITY)} (got {durability!r})")
        self.root = Path(root)
        self.writable = writable
        self.durability = durability
        self._commit: GroupCommit | None = None
        self._keys: KeySet | None = None  # what the manifest holds, while writing
        self._manifest: JsonlLog | None = None
        self._failures: JsonlLog | None = None
        self._lock: FolderLock | None = None
        self._mutex = threading.Lock()
        self._writing: set[str] = set()
        self._journals: list[JsonlLog] = []
        self._shas: dict[str, str] | None = None  # sha256 → key of the stored bodies, once adopt() needs it
        if writable:
            self._open_for_writing()

    @classmethod
    def create(cls, root: str | os.PathLike, durability: str = "batch") -> Dataset:
        """Open (creating if needed) a dataset folder to append to. Keys already in its manifest are done.
        ``durability``: ``batch`` (files fsynced in groups, off the writers' threads, before their rows are
        written), ``file`` (each file fsynced as it is written, then its row) or ``none`` (no fsync: the operating
        system writes when it likes; after a power loss a row may name a damaged file). A folder that holds a
        shard set or a training run is refused (:func:`gandata.paths.refuse_other_kind`)."""
        refuse_other_kind(root, "dataset folder", named("out"))
        return cls(root, writable=True, durability=durability)

    @classmethod
    def open(cls, root: str | os.PathLike) -> Dataset:
        root = Path(root)
        if not root.exists():
            raise UserError(f"{root} does not exist; give the folder a stage wrote (e.g. data/bitmoji/raw)")
        if not is_dataset(root):
            raise UserError(f"{root} is not a gandata dataset folder (it has no {MANIFEST})")
        return cls(root)

    def _open_for_writing(self) -> None:
        try:
            (self.root / IMAGES).mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError) as e:
            raise UserError(f"cannot make the dataset folder {self.root}: a file is in the way ({e})") from None
        self._lock = FolderLock(self.root).acquire()
        remove_stale_tmp(self.root)
        for sub in os.scandir(self.root / IMAGES):
            if sub.is_dir():
                remove_stale_tmp(sub.path)
        # a row is done while its file is there (one it names that was deleted is fetched or cut again) or once it
        # went to the store (a staged folder keeps only the rows of what it published)
        published = KeySet()
        for row in read_jsonl(self.root / PUBLISHED):
            if isinstance(row.get("key"), str):
                published.add(row["key"])
        self._keys = KeySet()
        for row in self.rows():
            if row["key"] in published or _stored(self, row):
                self._keys.add(row["key"])
        self._manifest = JsonlLog(self.root / MANIFEST)
        self._failures = JsonlLog(self.root / FAILURES)
        if self.durability == "batch":
            self._commit = GroupCommit(lambda lines: [log.append(obj) for log, obj in lines])

    # ---- reading

    def rows(self, problems: list | None = None) -> Iterator[dict]:
        """The manifest rows, one per key (the first row of a key wins); a torn last line is skipped. A row whose
        key is not a valid key (``../evil``) or that has no path is skipped, and listed in ``problems`` if given."""
        return manifest_rows(read_jsonl(self.root / MANIFEST), str(self.root / MANIFEST), problems)

    def keys(self) -> set[str]:
        if self._keys is not None:
            return set(self._keys)
        return {row["key"] for row in self.rows()}

    def __contains__(self, key: str) -> bool:
        return key in (self._keys if self._keys is not None else self.keys())

    def __len__(self) -> int:
        return len(self._keys) if self._keys is not None else sum(1 for _ in self.rows())

    def failures(self) -> Iterator[dict]:
        return read_jsonl(self.root / FAILURES)

    def open_failures(self) -> dict[str, dict]:
        """The latest failure of every key that has not been accepted since."""
        done = self._keys if self._keys is not None else self.keys()
        latest: dict[str, dict] = {}
        for row in self.failures():
            key = row.get("key")
            if isinstance(key, str) and key not in done:
                latest[key] = row
        return latest

    def image_path(self, row: dict) -> Path:
        rel = Path(row["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"manifest path {row['path']!r} leaves the dataset folder")
        return self.root / rel

    def read_bytes(self, row: dict) -> bytes:
        return read_bounded(self.image_path(row))

    def stats(self) -> dict:
        try:
            return json.loads((self.root / STATS).read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    # ---- writing

    def _need_writable(self) -> None:
        if not self.writable or self._manifest is None:
            raise RuntimeError("dataset opened read-only; use Dataset.create to write")

    def add(self, key: str, data: bytes, ext: str, record: dict, sha256: str | None = None) -> dict | None:
        """Store one accepted sample: its file (atomically), then its manifest row (flushed) — at once with
        ``durability`` file or none, once the file is on disk with batch (:class:`GroupCommit`).

        ``record`` must hold ``width``, ``height`` and ``source``; ``key``, ``path`` and ``sha256`` are filled in
        (pass ``sha256`` when the caller has already hashed ``data``).
        Returns the manifest row, or None when the key is already in the dataset (nothing is written).
        """
        self._need_writable()
        check_key(key)
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            raise ValueError(f"record for {key} lacks {', '.join(missing)}")
        ext = ext.lower().lstrip(".")
        if ext not in IMAGE_EXTS:
            raise ValueError(f"unsupported image extension {ext!r}")
        with self._mutex:  # reserve the key, so that two threads never store it twice
            if key in self._keys or key in self._writing:
                return None
            self._writing.add(key)
        try:
            rel = f"{IMAGES}/{_short_hash(key, 2)}/{key}.{ext}"
            path = self.root / rel
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, data, fsync=self.durability == "file")
            row = {"key": key, "path": rel, "sha256": sha256 or hashlib.sha256(data).hexdigest()}
            row.update((k, v) for k, v in record.items() if k not in row)
            if self._commit is not None:
                self._commit.put(path, (self._manifest, row))
            else:
                self._manifest.append(row)
            with self._mutex:
                self._keys.add(key)
            return row
        finally:
            with self._mutex:
                self._writing.discard(key)

    def work_folder(self, name: str) -> Path:
        """A folder for a stage's own work beside the samples (``ROOT/.work/<name>``: a Ray run's parts and markers);
        hidden, so no reader of the dataset takes it for images."""
        folder = self.root / ".work" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def adopt(self, part: Dataset) -> dict[str, int]:
        """Move the samples of another dataset folder on the same file system (a Ray task's part) into this one:
        each file renamed into place, then its row (the same durability as :meth:`add`); a key already here, or a
        body already stored under another key (the same sha256: a duplicate body), is not taken and its file is
        left behind. The part's failures of keys still missing here are recorded here. Returns the counts."""
        self._need_writable()
        counts = {"adopted": 0, "known": 0, "duplicate_bodies": 0}
        if self._shas is None:  # rows adopted before may still wait in the group commit: kept here, not re-read
            self._shas = {row["sha256"]: row["key"] for row in self.rows()}
        shas = self._shas
        for row in part.rows():
            key = row["key"]
            if key in self._keys:
                counts["known"] += 1
                continue
            if row["sha256"] in shas:
                counts["duplicate_bodies"] += 1
                self.fail(key, "duplicate body", detail=f"same bytes as {shas[row['sha256']]}", url=row.get("url"),
                          permanent=True)
                continue
            try:
                src = part.image_path(row)
            except ValueError:
                continue
            path = self.image_path(row)
            path.parent.mkdir(exist_ok=True)
            try:
                os.replace(src, path)
            except FileNotFoundError:  # moved by an earlier, interrupted adoption whose row was not written
                if not path.is_file():
                    continue
            shas[row["sha256"]] = key
            if self._commit is not None:
                self._commit.put(path, (self._manifest, row))
            else:
                self._manifest.append(row)
            self._keys.add(key)
            counts["adopted"] += 1
        for key, failure in part.open_failures().items():
            if key not in self._keys:
                self._failures.append(failure)
        return counts

    def fail(self, key: str, error: str, **info: Any) -> None:
        """Record a sample given up on (e.g. url, status), so that nothing fails silently."""
        self._need_writable()
        self._failures.append({"key": key, "error": error, **info})

    def journal(self, name: str) -> JsonlLog | _InOrder:
        """An append-only log a source keeps beside the manifest (``ROOT/<name>.jsonl``), e.g. listing pages already
        read, so that a re-run neither asks for them again nor loses the items they listed. Its lines are written
        behind the manifest rows added before them (a crop's "parent done" line never outlives its crops' rows)."""
        self._need_writable()
        if not re.match(r"^[a-z][a-z0-9_-]*$", name) or name in ("manifest", "failures"):
            raise ValueError(f"bad journal name {name!r}")
        log = JsonlLog(self.root / f"{name}.jsonl")
        self._journals.append(log)
        return log if self._commit is None else _InOrder(log, self._commit)

    def read_journal(self, name: str) -> Iterator[dict]:
        return read_jsonl(self.root / f"{name}.jsonl")

    def forget_journal(self, name: str) -> None:
        (self.root / f"{name}.jsonl").unlink(missing_ok=True)

    def write_stats(self, stats: dict) -> None:
        atomic_write_json(self.root / STATS, stats)

    def close(self) -> None:
        try:
            if self._commit is not None:
                self._commit.close()  # the rows still waiting for their files to be on disk
        finally:
            for log in (self._manifest, self._failures, *self._journals):
                if log is not None:
                    log.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stored(ds: Dataset, row: dict) -> bool:
    try:
        return ds.image_path(row).is_file()
    except (ValueError, OSError):
        return False


class _InOrder:
    """A journal whose appends queue behind the rows waiting in a :class:`GroupCommit`."""

    def __init__(self, log: JsonlLog, commit: GroupCommit):
        self._log, self._commit = log, commit

    def append(self, obj: dict) -> None:
        self._commit.put(None, (self._log, obj))


# ------------------------------------------------------------------------------------------ reading files


@dataclass
class Problem:
    origin: str
    reason: str
    lost: bool = True  # a sample was lost to it; False: reported, and the sample is still read (minus the bad part)

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


PUBLISHED = "published.jsonl"  # in a staging folder: the keys whose image is in the object store


def staging_folder(url: str) -> Path:
    """The local folder that stands in for the dataset folder at ``url`` while a stage writes it."""
    from .assets import cache_dir

    return cache_dir() / "staged-datasets" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def stage_remote(url: str) -> Path:
    """A local dataset folder for a stage that writes the dataset folder at ``url`` (``s3://bucket/data/x/raw``):
    the stage writes there as always (atomic files, manifest rows, resumable), then :func:`publish` copies it to
    the store. When the folder is new here but the store already holds the dataset (written from another machine),
    its manifest, failures and journals are brought down first, so the stage goes on from them."""
    url = url.rstrip("/")
    local = staging_folder(url)
    if (local / MANIFEST).exists():
        return local
    local.mkdir(parents=True, exist_ok=True)
    for name in storage.names(url):
        if name.endswith(".jsonl") and name != PUBLISHED or name == STATS:
            atomic_write(local / name, storage.read_bytes(storage.join(url, name)))
    keys = [row["key"] for row in read_jsonl(local / MANIFEST)]
    atomic_write(local / PUBLISHED, "".join(json.dumps({"key": k}) + "\n" for k in keys).encode())
    return local


def publish(local: Path, url: str, threads: int = 16) -> int:
    """Copy a staged dataset folder to ``url``: every image not there yet (one object each; the local copy is then
    removed, so the staging folder keeps only the rows), then the failures, journals and stats, the manifest last
    — so the store's manifest only ever names images that are there. Returns how many images were uploaded."""
    from concurrent.futures import ThreadPoolExecutor

    url = url.rstrip("/")
    ds = Dataset(local)
    done = {r.get("key") for r in read_jsonl(local / PUBLISHED)}
    todo = [row for row in ds.rows() if row["key"] not in done]
    log = JsonlLog(local / PUBLISHED)

    def upload(row: dict) -> str | None:
        file = ds.image_path(row)
        if not file.is_file():
            return None
        storage.put_file(file, storage.join(url, row["path"]))
        return row["key"]

    sent = 0
    try:
        with ThreadPoolExecutor(threads) as pool:
            for row, key in zip(todo, pool.map(upload, todo)):
                if key is not None:
                    log.append({"key": key})
                    ds.image_path(row).unlink(missing_ok=True)
                    sent += 1
    finally:
        log.close()
    names = sorted(p.name for p in local.iterdir() if p.is_file() and (p.suffix == ".jsonl" or p.name == STATS)
                   and p.name not in (PUBLISHED, MANIFEST))
    for name in [*names, MANIFEST]:
        if (local / name).exists():
            storage.put(storage.join(url, name), (local / name).read_bytes())
    return sent


def lineage(path: str | os.PathLike, _depth: int = 0) -> list[dict]:
    """The stages that made a dataset folder, newest first: ``[{"path", "stage", "options"}, …]``, following each
    stage's recorded inputs (from stats.json) back to the source."""
    if _depth > 16 or not is_dataset(path):
        return []
    stats = Dataset(path).stats()
    step = {"path": str(path)}
    step.update((k, stats[k]) for k in ("stage", "options") if k in stats)
    chain = [step]
    for src in stats.get("inputs", []):
        chain.extend(lineage(src, _depth + 1))
    return chain


def read_bounded(path: Path | str, limit: int | None = None) -> bytes:
    """A local file's bytes, refusing (``OSError``) what is not a regular file (a FIFO would block, a device never
    ends) or is larger than ``limit`` (default :data:`shardset.MAX_MEMBER_BYTES`) — checked before reading. An
    object-store URL is read the same way: its size checked first (one HEAD), then one GET."""
    limit = shardset.MAX_MEMBER_BYTES if limit is None else limit
    if storage.is_url(path):
        size = storage.info(str(path)).get("size") or 0
        if size > limit:
            raise OSError(f"{size} bytes, over the {limit >> 20} MiB limit for one image")
        return storage.read_bytes(str(path))
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise OSError(f"{st.st_size} bytes, over the {limit >> 20} MiB limit for one image")
        data = f.read(min(limit, st.st_size) + 1)  # read(n) allocates n bytes first: not the limit each time
    if len(data) > limit:
        raise OSError(f"grew past the {limit >> 20} MiB limit while being read")
    return data


def _file_kind(mode: int) -> str:
    return ("FIFO" if stat.S_ISFIFO(mode) else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "socket" if stat.S_ISSOCK(mode) else "directory" if stat.S_ISDIR(mode) else "special file")


def dataset_stage_folders(data_dir: str | os.PathLike) -> dict[str, Path]:
    """For every dataset under the data dir (``DATA/<dataset>/<stage>``), its most processed stage folder.

    The most processed stage is the one no other stage of the same dataset reads from (per the stages'
    stats.json); ties go to the most recently written manifest.
    """
    root = Path(data_dir)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stages = [p for p in sorted(ds_dir.iterdir()) if p.is_dir() and is_dataset(p)]
        if not stages:
            continue
        read_by_others: set[Path] = set()
        for st in stages:
            for src in Dataset(st).stats().get("inputs", []):
                read_by_others.add(Path(src).resolve())
        leaves = [st for st in stages if st.resolve() not in read_by_others] or stages
        found[ds_dir.name] = max(leaves, key=lambda p: (p / MANIFEST).stat().st_mtime_ns)
    return found
