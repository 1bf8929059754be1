"""A sample on its way through ``gandata shard``: one typed record (:class:`Item`) from the map (decode, resize,
hash) through the reduce (duplicates, labels, split) to the writer, on both engines; and the JSON written beside its
image, with one type per field across the whole set."""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .compact import KeySet
from .errors import UserError

# fields of a source record that describe the stored source file, not the sample; replaced in the shard's json
FILE_FIELDS = ("key", "path", "sha256", "width", "height")
# fields sample_json writes over the record's own (with labels also cls and label; with --dedupe near, cluster)
OVERRIDDEN = ("key", "source_sha256", "original_width", "original_height", "width", "height", "split", "phash")


@dataclass(slots=True)
class Item:
    """One input sample: where it came from, what the map made of it, where its bytes and its record's JSON lie,
    and what the reduce decided. ``src`` is the sha256 of the source bytes; ``digest`` of the output pixels."""

    key: str
    origin: str
    src: str
    ok: bool = False
    reason: str = ""  # why it is unusable (ok False)
    digest: str = ""
    ow: int = 0  # the source's size
    oh: int = 0
    w: int = 0  # the output's size
    h: int = 0
    phash: str = ""
    file: str = ""  # where the encoded image lies (the spool, or a map task's part)
    offset: int = 0
    length: int = 0
    rfile: str = ""  # where the record's JSON lies (a run's record file, or the part, after the image)
    roffset: int = 0
    rlen: int = 0
    sig: int = 0  # the record's JSON types: an index into the run's signatures (record_kinds)
    label: Any = None  # the value of --label-field
    cls: int | None = None  # its class id
    cluster: str | None = None  # --dedupe near: the cluster's representative
    at: int = -1  # its row in the run's :class:`Items`

    RESULT = ("ok", "reason", "digest", "ow", "oh", "w", "h", "phash", "offset", "length")  # what the map made

    def result(self) -> dict:
        """What the map made of the sample, as a JSON row (the spool's index, a map task's answer)."""
        return {f: getattr(self, f) for f in self.RESULT if f != "reason" or not self.ok}

    def take(self, row: dict) -> Item:
        for f in self.RESULT:
            if f in row:
                setattr(self, f, row[f])
        return self

    def row(self) -> dict:
        """Every field that differs from its default, as JSON (a map task's answer)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name in ("key", "origin", "src") or (getattr(self, f.name) != f.default and f.name != "at")}

    @classmethod
    def of(cls, row: dict) -> Item:
        return cls(**row)


def sample_json(item: Item, record: dict, split: str, label_names: list[str] | None) -> dict:
    """The JSON written beside each image: the source record, minus what described the source file."""
    js = {k: v for k, v in record.items() if k not in FILE_FIELDS}
    js.update(key=item.key, source_sha256=item.src, original_width=item.ow, original_height=item.oh,
              width=item.w, height=item.h, split=split, phash=item.phash)
    if item.cluster is not None:
        js["cluster"] = item.cluster
    if label_names is not None and item.cls is not None:
        js["cls"] = item.cls
        js["label"] = label_names[item.cls]
    return js


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


def conform(v: Any, plan: dict[tuple, str], path: tuple = ()) -> Any:
    """``v`` with the type plan applied (:func:`type_plan`): ints made floats, other mixes made strings, nulls left
    out of objects."""
    to = plan.get(path)
    if to == "float" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if to == "str":
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True, ensure_ascii=False)
    if isinstance(v, dict):
        return {k: conform(x, plan, path + (k,)) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [conform(x, plan, path + ("[]",)) for x in v]
    return v


def type_plan(kinds: dict[tuple, set]) -> dict[tuple, str]:
    """``{path: "float" | "str"}`` for every JSON path seen with more than one type: strict readers such as Hugging
    Face datasets refuse a field that is an int in one sample and a string in another."""
    return {path: "float" if ks == {"int", "float"} else "str" for path, ks in kinds.items() if len(ks) > 1}


def record_kinds(record: dict, labelled: bool, near: bool) -> list:
    """The JSON types of the part of a sample's JSON that comes from its record, as ``[[path...], kind]`` pairs —
    what the map reports so that the reduce can make the type plan without holding the records. (The fields
    :func:`sample_json` adds have one type each, and replace the record's fields of the same name.)"""
    over = set(FILE_FIELDS) | set(OVERRIDDEN) | ({"cls", "label"} if labelled else set()) | \
        ({"cluster"} if near else set())
    kinds: dict[tuple, set] = {}
    _collect_kinds({k: v for k, v in record.items() if k not in over}, (), kinds)
    return sorted([list(path), k] for path, ks in kinds.items() for k in ks)


def plan_of(sigs: list, used: set[int]) -> list:
    """The type plan over the kept samples from the signatures they use (``used``: indexes into ``sigs``), as
    ``[[path...], kind]`` pairs — the same plan their whole JSON would give (:func:`type_plan`)."""
    kinds: dict[tuple, set] = {}
    for sig in used:
        for path, kind in sigs[sig]:
            kinds.setdefault(tuple(path), set()).add(kind)
    return [[list(path), kind] for path, kind in type_plan(kinds).items()]


class Signatures:
    """The distinct record signatures of a run, interned: a sample keeps the index of its own."""

    def __init__(self):
        self._index: dict[str, int] = {}

    def add(self, sig: list) -> int:
        text = json.dumps(sig)
        return self._index.setdefault(text, len(self._index))

    def all(self) -> list:
        return [json.loads(k) for k in self._index]


class Items:
    """Every input sample of a shard run, one row each in input order, held in columns: what the reduce decides on
    (key, source and pixel digests, sizes, hash, label) and where the writer finds the image and its record — about
    200 bytes a sample, where an :class:`Item` each took over a kilobyte (docs/memory.md). The origins (paths, for
    messages) wait in a temporary file. A row is added when its key is admitted (:meth:`admit`) and filled when the
    map has made it (:meth:`fill`); :meth:`item` gives it back as an :class:`Item`."""

    def __init__(self) -> None:
        self.keys = KeySet()  # a row's id is its key's id
        self._origins = tempfile.TemporaryFile(prefix="gandata-origins-")
        self._origin_ends = array("q")
        self._unflushed = False  # origins written since the last read
        self._src = bytearray()  # 32 bytes a row
        self._digest = bytearray()
        self.ok = array("b")
        self.alive = array("b")  # still in the set: usable, and not removed by the reduce
        self.ow, self.oh, self.w, self.h = array("i"), array("i"), array("i"), array("i")
        self.phash = array("Q")
        self.file, self.rfile = array("i"), array("i")  # into self.files
        self.offset, self.roffset = array("q"), array("q")
        self.length, self.rlen = array("i"), array("i")  # an image or a record is under 2 GiB
        self.sig = array("i")
        self.label = array("i")  # into self.labels, or -1
        self.cls = array("i")  # set by the reduce, or -1
        self.cluster = array("i")  # the row of the cluster's representative, or -1
        self.files: list[str] = []
        self._file_ids: dict[str, int] = {}
        self.labels: list[Any] = []  # distinct label values, first seen first (equal values are one: 1 == 1.0)
        self._label_ids: dict[Any, int] = {}
        self.reasons: dict[int, str] = {}  # why a row is unusable

    def __len__(self) -> int:
        return len(self.ok)

    def close(self) -> None:
        self._origins.close()

    def admit(self, item: Item) -> int:
        """Add ``item`` as a new row (its ``at``) and return -1, unless its key is already there: then the first
        row when the source bytes are the same (a duplicate), and an error when they differ. The one rule for both
        engines."""
        row, new = self.keys.add(item.key)
        if not new:
            if self.src(row) != item.src:
                raise UserError(
                    f"two inputs give the key {item.key!r} to different images ({self.origin(row)} and "
                    f"{item.origin}); shard them separately or rename one")
            return row
        item.at = row
        data = item.origin.encode("utf-8", "surrogateescape")  # a file name that is not UTF-8 keeps its bytes
        self._origins.write(data)
        self._unflushed = True
        self._origin_ends.append((self._origin_ends[-1] if row else 0) + len(data))
        self._src += bytes.fromhex(item.src)
        self._digest += bytes(32)
        for col in (self.ok, self.alive):
            col.append(0)
        for col in (self.ow, self.oh, self.w, self.h, self.phash, self.offset, self.roffset, self.length, self.rlen,
                    self.sig):
            col.append(0)
        for col in (self.file, self.rfile, self.label, self.cls, self.cluster):
            col.append(-1)
        return -1

    def _file_id(self, file: str) -> int:
        if not file:
            return -1
        fid = self._file_ids.get(file)
        if fid is None:
            fid = self._file_ids[file] = len(self.files)
            self.files.append(file)
        return fid

    def fill(self, item: Item) -> None:
        """Record what the map made of the row's sample."""
        r = item.at
        self.ok[r] = self.alive[r] = int(item.ok)
        if not item.ok:
            self.reasons[r] = item.reason
            return
        self._digest[32 * r: 32 * r + 32] = bytes.fromhex(item.digest)
        self.ow[r], self.oh[r], self.w[r], self.h[r] = item.ow, item.oh, item.w, item.h
        self.phash[r] = int(item.phash, 16)
        self.file[r], self.offset[r], self.length[r] = self._file_id(item.file), item.offset, item.length
        self.rfile[r], self.roffset[r], self.rlen[r] = self._file_id(item.rfile), item.roffset, item.rlen
        self.sig[r] = item.sig
        v = item.label
        if v is not None and not isinstance(v, (dict, list)):
            lid = self._label_ids.get(v)
            if lid is None:
                lid = self._label_ids[v] = len(self.labels)
                self.labels.append(v)
            self.label[r] = lid

    def key(self, r: int) -> str:
        return self.keys.keys[r]

    def origin(self, r: int) -> str:
        start = self._origin_ends[r - 1] if r else 0
        if self._unflushed:
            self._origins.flush()
            self._unflushed = False
        return os.pread(self._origins.fileno(), self._origin_ends[r] - start, start).decode("utf-8", "surrogateescape")

    def src(self, r: int) -> str:
        return bytes(self._src[32 * r: 32 * r + 32]).hex()

    def digest(self, r: int) -> bytes:
        return bytes(self._digest[32 * r: 32 * r + 32])

    def digests(self) -> memoryview:
        return memoryview(self._digest)

    def area(self, r: int) -> int:
        return self.ow[r] * self.oh[r]

    def rows(self) -> np.ndarray:
        """The rows still in the set, in input order."""
        return np.flatnonzero(np.frombuffer(self.alive, dtype=np.int8))

    def item(self, r: int, origin: bool = True) -> Item:
        """The row as an :class:`Item`; without its origin (a read from disk) for a writer, which does not use it."""
        ok = bool(self.ok[r])
        return Item(
            self.key(r), self.origin(r) if origin else "", self.src(r), ok, self.reasons.get(r, ""),
            self.digest(r).hex() if ok else "", self.ow[r], self.oh[r], self.w[r], self.h[r],
            f"{self.phash[r]:016x}" if ok else "",
            self.files[self.file[r]] if self.file[r] >= 0 else "", self.offset[r], self.length[r],
            self.files[self.rfile[r]] if self.rfile[r] >= 0 else "", self.roffset[r], self.rlen[r], self.sig[r],
            self.labels[self.label[r]] if self.label[r] >= 0 else None, self.cls[r] if self.cls[r] >= 0 else None,
            self.key(self.cluster[r]) if self.cluster[r] >= 0 else None, r)
