"""The map of ``gandata shard``: every input sample decoded, made RGB, resized, hashed and encoded, once — in this
process's threads into the spool (``OUT/.work``: a killed run, or a later run over grown inputs, redoes only what is
not there), or as Ray tasks each writing one part. Both give the reduce the same thing: one row of
:class:`~gandata.records.Items` per key, in input order, with the same key rules, and records that stay on disk."""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from . import images, storage
from .compact import KeySet
from .datasets import lookup_field
from .dedupe import HASH_SIDE, HashCache, from_hex, phash, to_hex
from .fileio import JsonlLog, atomic_write_json, json_bytes
from .inputs import Input, Part, Problem, part_samples, partitions
from .progress import Progress
from .records import Item, Items, Signatures, record_kinds
from .workers import Done, MemoryBudget, ordered

BYTES_PER_PIXEL = 10  # what a source pixel holds while it is processed (measured on 7900² JPEGs and PNGs)
MAP_FORMAT = 3  # the layout of a map task's part and answer; a change makes earlier parts be redone
CORRUPT, DUPLICATE, PROBLEM = "unreadable", "exact_duplicate", "input_problem"  # kinds of rejected.jsonl rows
CHANGED = "file changed on disk since its manifest row was written (sha256 differs)"


class Rejected:
    """The rows of ``rejected.jsonl`` as they are found: counted by kind and kept in a temporary file — a run that
    removes most of a million samples must not hold a dict for each — then given back sorted (kind, origin, reason,
    key) by a merge of sorted runs of :attr:`RUN` rows."""

    RUN = 100_000

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="gandata-rejected-")
        self.counts: Counter[str] = Counter()
        self.first_lost: dict | None = None  # the first row that removed a sample

    def add(self, kind: str, key: str | None, origin: str, reason: str) -> None:
        row = {"kind": kind, "key": key, "origin": origin, "reason": reason}
        self._file.write(json_bytes(row) + b"\n")
        self.counts[kind] += 1
        if kind != PROBLEM and self.first_lost is None:
            self.first_lost = row

    def __len__(self) -> int:
        return sum(self.counts.values())

    @staticmethod
    def _order(row: dict) -> tuple:
        return row["kind"], row["origin"], row["reason"], row["key"] or ""

    def sorted(self) -> Iterator[dict]:
        self._file.flush()
        self._file.seek(0)
        runs = []
        try:
            while chunk := [json.loads(line) for line in itertools.islice(self._file, self.RUN)]:
                chunk.sort(key=self._order)
                if not runs and len(chunk) < self.RUN:  # all of it
                    yield from chunk
                    return
                run = tempfile.TemporaryFile(prefix="gandata-rejected-run-")
                run.writelines(json_bytes(r) + b"\n" for r in chunk)
                run.seek(0)
                runs.append(run)
            yield from heapq.merge(*(map(json.loads, r) for r in runs), key=self._order)
        finally:
            for r in runs:
                r.close()
            self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()


def process_image(item: Item, data: bytes, popts: dict, known_phash: int | None = None,
                  budget: MemoryBudget | None = None) -> bytes | None:
    """Decode → RGB → resize → pixel digest → encode, and the perceptual hash, into ``item`` (``ok``, sizes,
    ``digest``, ``phash``, or ``reason``); returns the encoded image (None when unusable). Runs in worker threads:
    Pillow, libjpeg-turbo and hashlib release the GIL for the heavy parts, so threads scale with cores without
    pickling or process start-up.

    With ``draft``, a JPEG is decoded at the smallest DCT scale whose short side keeps twice what the output needs
    (``images.decode_scaled``), and resized with the whole image's geometry: the output differs from a whole decode
    by 0.38/255 on average on real 512² tiles (docs/commands.md, shard). The hash is gandata-phash-v2, from the same
    decode when its scale is the hash's, else from a second, smaller one. The digest is sha256 of the output pixels: two
    sources are exact duplicates when they make the same training sample.

    ``known_phash``: the hash of this file from the :class:`~gandata.dedupe.HashCache` (not computed again).
    Runs once ``budget`` has room for the image."""
    if budget is not None:
        with budget.hold(images.pixel_count(data)[1] * BYTES_PER_PIXEL):
            return process_image(item, data, popts, known_phash)
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
    except images.ImageError as e:
        return _unusable(item, str(e))
    except (MemoryError, OSError, ValueError) as e:
        return _unusable(item, f"cannot process ({type(e).__name__}: {e})")
    item.ok, item.digest, item.ow, item.oh, item.w, item.h, item.phash = \
        True, digest, ow, oh, out.width, out.height, to_hex(h)
    return encoded


def _unusable(item: Item, reason: str) -> None:  # None: "no encoded image", the map's answer for it
    item.ok, item.reason = False, reason
    return None


def admit(items: Items, item: Item, rejected: Rejected) -> bool:
    """Take ``item`` as a new row unless its key is already there: the same file again is a duplicate (listed), a
    different file under the same key is an error (:meth:`Items.admit`)."""
    first = items.admit(item)
    if first < 0:
        return True
    rejected.add(DUPLICATE, item.key, item.origin, f"same file as {items.origin(first)}")
    return False


def _describe(item: Item, record: dict, label_field: str | None, near: bool, sigs: Signatures) -> None:
    """The record's JSON types and label value, kept on the item (the record itself stays on disk)."""
    item.sig = sigs.add(record_kinds(record, label_field is not None, near))
    if label_field:
        item.label = lookup_field(record, label_field)


# ------------------------------------------------------------------------------------------ the local engine


class Spool:
    """Processed images of earlier (possibly killed) runs: ``spool.bin`` holds the bytes, ``index.jsonl`` one
    line per sample (:meth:`Item.result`) written after its bytes. Wiped when the pixel options change. This run's
    records go to ``records.bin`` (each row's JSON once, read back by the writer)."""

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
        # where each key's latest row of the earlier runs lies in index.jsonl (read back when its key comes)
        self._earlier, self._at, self._len = KeySet(), array("q"), array("q")
        self._read_index(folder / "index.jsonl")
        self._index = JsonlLog(folder / "index.jsonl")
        self._index_in = open(folder / "index.jsonl", "rb")
        self.path = str(folder / "spool.bin")
        self._out = open(self.path, "ab")
        self._end = self._out.seek(0, os.SEEK_END)
        self.records_path = str(folder / "records.bin")
        self._records = open(self.records_path, "wb")
        self._rend = 0

    def _read_index(self, path: Path) -> None:
        """Note where each key's latest row is; a torn last line ends the index, a corrupt line is skipped."""
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return
        pos = 0
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    key = json.loads(line).get("key")
                except (ValueError, AttributeError):
                    key = None
                if isinstance(key, str):
                    j, new = self._earlier.add(key)
                    if new:
                        self._at.append(pos)
                        self._len.append(len(line))
                    else:
                        self._at[j], self._len[j] = pos, len(line)
                pos += len(line)

    def reuse(self, item: Item) -> bool:
        """Fill ``item`` from an earlier run's result for the same key and source bytes."""
        j = self._earlier.find(item.key)
        if j < 0:
            return False
        e = json.loads(os.pread(self._index_in.fileno(), self._len[j], self._at[j]))
        if e.get("src") != item.src:
            return False
        item.take(e).file = self.path
        return True

    def put(self, item: Item, encoded: bytes | None) -> None:
        if encoded is not None:
            self._out.write(encoded)
            self._out.flush()
            item.file, item.offset, item.length = self.path, self._end, len(encoded)
            self._end += len(encoded)
        self._index.append({"key": item.key, "src": item.src, **item.result()})  # kept on disk only: a row of
        # this run is looked up by the next run, not by this one (each key is taken once)

    def keep_record(self, item: Item, record: dict) -> None:
        data = json_bytes(record, sort_keys=True)
        self._records.write(data)
        item.rfile, item.roffset, item.rlen = self.records_path, self._rend, len(data)
        self._rend += len(data)

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._index.close()
        self._index_in.close()
        self._out.close()
        self._records.close()


def map_local(srcs: list[Input], spool: Spool, popts: dict, workers: int, prog: Progress, rejected: Rejected,
              label_field: str | None, near: bool, sigs: Signatures,
              budget: MemoryBudget | None = None) -> tuple[Items, int]:
    """Process every input sample into the spool in this process's threads. Returns (the items, how many were
    reused from an earlier run)."""
    items = Items()
    reused = 0

    def jobs() -> Iterator[tuple[Item, Callable[[], bytes | None] | Done]]:
        nonlocal reused
        for src in srcs:
            for s in src:
                data, why = (None, None) if s.sha256 else s.read_or_why()
                if why is not None:
                    rejected.add(CORRUPT, s.key, s.origin, why)
                    prog.advance(1, bad=1)
                    continue
                item = Item(s.key, s.origin, s.sha256 or hashlib.sha256(data).hexdigest())
                if not admit(items, item, rejected):
                    prog.advance(1, duplicate=1)
                    continue
                spool.keep_record(item, s.record)
                _describe(item, s.record, label_field, near, sigs)
                if spool.reuse(item):
                    items.fill(item)
                    reused += 1
                    prog.advance(1, reused=1)
                    continue
                if data is None:
                    data, why = s.read_or_why()
                    if data is None:
                        yield item, Done(_unusable(item, why))
                        continue
                    if hashlib.sha256(data).hexdigest() != item.src:  # the manifest's record of it no longer holds
                        yield item, Done(_unusable(item, CHANGED))
                        continue
                known = cache.get(item.src) if cache is not None else None
                yield item, partial(process_image, item, data, popts, known[0] if known else None, budget)
            for p in src.problems:  # a damaged tar, a missing file: removed; a repeated member: listed only
                rejected.add(CORRUPT if p.lost else PROBLEM, None, p.origin, p.reason)

    # the shared hash cache holds hashes of images composited on white (gandata-phash-v2's definition)
    cache = HashCache() if popts["background"] == [255, 255, 255] else None
    try:
        for item, encoded in ordered(jobs(), workers, max(4, 8 * workers), name="shard"):
            spool.put(item, encoded)
            items.fill(item)
            if cache is not None and item.ok:
                cache.put(item.src, from_hex(item.phash), item.ow, item.oh)
            prog.advance(1, bad=0 if item.ok else 1)
    finally:
        if cache is not None:
            cache.close()
    return items, reused


# -------------------------------------------------------------------------------------------- the Ray engine

# (callable, per-task argument makers, task names) -> {name: result}: how the write step runs its tasks on an engine
Runner = Callable[[Callable[..., dict], list[Callable[[], tuple]], list[str]], dict[str, dict]]


def map_part(task_id: str, part: Part, popts: dict, work: str, label_field: str | None = None,
             near: bool = False) -> dict:
    """A map task: process the part's samples as the local engine does (:func:`process_image`), write their bytes
    as one file (``WORK/<id>.bin``: each image, then its record as JSON), and return the items (:meth:`Item.row`,
    their signatures as indexes into ``sigs``) in input order, the keys that could not be read, and the part's
    problems. The records themselves stay in the part: the write tasks read them back."""
    sigs = Signatures()
    rows: list[dict] = []
    unread: list[list[str]] = []
    parts: list[bytes] = []
    end = 0
    samples, problems = part_samples(part)
    for s in samples:
        data, why = s.read_or_why()
        if data is None:
            if s.sha256 is None:  # not a sample yet: the local engine lists it without taking its key
                unread.append([s.key, s.origin, why])
                continue
            item = Item(s.key, s.origin, s.sha256)
            _unusable(item, why)
            rows.append(item.row())
            continue
        sha = hashlib.sha256(data).hexdigest()
        item = Item(s.key, s.origin, s.sha256 or sha)
        if sha != item.src:  # the manifest's record of the file no longer holds
            _unusable(item, CHANGED)
        else:
            encoded = process_image(item, data, popts)
            if encoded is not None:
                record = json_bytes(s.record, sort_keys=True)
                item.offset, item.length, item.roffset, item.rlen = end, len(encoded), end + len(encoded), len(record)
                parts += [encoded, record]
                end += len(encoded) + len(record)
                _describe(item, s.record, label_field, near, sigs)
        rows.append(item.row())
    storage.put(storage.join(work, f"{task_id}.bin"), b"".join(parts))
    return {"items": rows, "unread": unread, "sigs": sigs.all(),
            "problems": [[p.origin, p.reason, p.lost] for p in problems]}


def map_on_ray(srcs: list[Input], out: str | Path, work_name: str, popts: dict, prog: Progress,
               rejected: Rejected, address: str | None, workers: int, task_size: int, label_field: str | None,
               near: bool, sigs: Signatures) -> tuple[Items, int, Runner, dict]:
    """Run the map tasks on Ray and gather their answers into the local engine's ``items`` (in input order, with
    the same key rules). Returns ``(items, how many were reused from an earlier run, the write step's runner, the
    map tasks' counts)``."""
    from . import engine
    from .engine import Task

    work = storage.join(out, work_name, "ray")
    markers = storage.join(work, "markers")
    listed: list[Problem] = []
    what = [popts, label_field, near, MAP_FORMAT]  # everything a map task's output depends on, besides its input
    opts_digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    tasks = []
    for part in partitions(srcs, task_size, listed):
        task_id = f"map-{hashlib.sha256((opts_digest + part.ident).encode()).hexdigest()[:24]}"
        tasks.append(Task(task_id, (task_id, part, popts, work, label_field, near)))
    for p in listed:  # rows without a file: found while listing
        rejected.add(CORRUPT if p.lost else PROBLEM, None, p.origin, p.reason)

    def advance(_task: Any, result: dict) -> None:
        prog.advance(len(result["items"]) + len(result["unread"]))

    present = set(storage.names(work))  # a part deleted since its task finished is made again
    report = engine.run(map_part, tasks, markers, address=address, workers=workers, label="shard map",
                        on_result=advance, intact=lambda t: f"{t.id}.bin" in present,
                        reads=[storage.absolute(s.path) for s in srcs], writes=[work, str(out)])
    items = Items()
    reused = 0
    reused_tasks = {t.id for t in tasks} - report.fresh
    for t in tasks:
        result = report.results.pop(t.id)  # dropped as it is taken in: the reduce keeps only the items
        file = storage.join(work, f"{t.id}.bin")
        local_sigs = [sigs.add(sg) for sg in result["sigs"]]
        for key, origin, reason in result["unread"]:
            rejected.add(CORRUPT, key, origin, reason)
        for row in result["items"]:
            item = Item.of(row)
            if admit(items, item, rejected):
                item.file = item.rfile = file
                if item.ok:
                    item.sig = local_sigs[item.sig]
                items.fill(item)
                reused += t.id in reused_tasks
        for origin, reason, lost in result["problems"]:
            rejected.add(CORRUPT if lost else PROBLEM, None, origin, reason)
    keep = {t.id for t in tasks}
    for name in storage.names(markers):  # parts of other options or other inputs: not read again
        if name.startswith("map-") and name[:-5] not in keep:
            storage.remove(storage.join(markers, name))
            storage.remove(storage.join(work, name[:-5] + ".bin"))

    def run(fn: Callable[..., dict], args: list[Callable[[], tuple]], names: list[str]) -> dict[str, dict]:
        import pickle

        # each shard's arguments are made when its task is submitted, then dropped: the driver never holds every
        # sample's description at once; the id is a digest of them (made once here, not kept)
        ids = [f"write-{hashlib.sha256(pickle.dumps(a())).hexdigest()[:24]}" for a in args]
        rep = engine.run(fn, [Task(i, a) for i, a in zip(ids, args)], markers, address=address, workers=workers,
                         label="shard write")
        for i in ids:  # a write marker only bridges a killed write step; the next run writes again
            storage.remove(engine.marker(markers, i))
        return {n: rep.results[i] for n, i in zip(names, ids)}

    return items, reused, run, {"map": report.to_json()}
