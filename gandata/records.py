"""A sample on its way through ``gandata shard``: one typed record (:class:`Item`) from the map (decode, resize,
hash) through the reduce (duplicates, labels, split) to the writer, on both engines; and the JSON written beside its
image, with one type per field across the whole set."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

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
                if f.name in ("key", "origin", "src") or getattr(self, f.name) != f.default}

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
