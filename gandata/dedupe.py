"""Exact and near-duplicate detection: a pinned 64-bit perceptual hash and a sub-quadratic search.

**The hash** (``gandata-phash-v2``, pinned here so that stored hashes stay comparable): the image decoded upright
— a JPEG at the smallest libjpeg DCT scale M/8 that keeps its short side at 128 px or more
(:func:`images.decode_scaled`; other formats whole) — made RGB (alpha on white), converted to grey (ITU-R 601 luma,
as PIL's ``L``), area-resized to 32×32 (OpenCV ``INTER_AREA``), 2-D DCT (``cv2.dct``, float32); of the top-left 8×8
coefficients (row-major), bit *i* is set when coefficient *i* is above the median of the 63 AC coefficients; bit 0
is the most significant. It is written as 16 hex digits. (v1 decoded every JPEG whole: on 120 JPEGs of 256–1200 px,
v2 gives the same 64 bits for 99 and differs by 2 bits for 21, at a fraction of the decode and of the memory.)

**The search** finds every pair within ``threshold`` bits without comparing all pairs (multi-index hashing): the 64
bits are cut into *m* blocks; two hashes within *t* bits agree within ⌊t/m⌋ bits on at least one block (pigeonhole),
so each block's value is looked up, with every variant within ⌊t/m⌋ flipped bits, in a dense bucket table, and only
those candidates are checked with a popcount. *m* is chosen by a cost model of measured per-probe and
per-candidate costs from the number of hashes and *t* (brute force when that is cheaper).
``brute_pairs`` compares all pairs and is the test oracle.

**Clusters** are the connected components of the near pairs; each keeps one representative (largest source
resolution, then smallest key); the others are near duplicates of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from . import images, storage
from .compact import KeySet
from .declarations import DEDUPE
from .errors import UserError, named
from .fileio import JsonlLog, json_bytes, read_jsonl
from .inputs import Part, Sample, open_input, part_samples, partitions
from .options import check_call
from .paths import refuse_overlap
from .progress import Progress
from .summary import Summary
from .workers import Done, MemoryBudget, cores, ordered

HASH_NAME = "gandata-phash-v2"
HASH_SIDE = 128  # a JPEG is hashed from its DCT-scaled decode with at least this short side
_DEFAULT = DEDUPE.defaults()
DEFAULT_THRESHOLD = _DEFAULT["threshold"]  # 8 (docs/commands.md): edits measured at 0–8 bits, distinct images at 18+
_WEIGHTS = 1 << np.arange(63, -1, -1, dtype=np.uint64)


def phash(im: Image.Image) -> int:
    """The 64-bit hash of an image (any mode; alpha is composited on white): gandata-phash-v2 when ``im`` is the
    image as :func:`phash_of` decodes it."""
    grey = np.asarray(images.to_rgb(im).convert("L"), dtype=np.float32)
    coeffs = cv2.dct(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int((bits.astype(np.uint64) * _WEIGHTS).sum())


def to_hex(h: int) -> str:
    return f"{h:016x}"


def from_hex(s: str) -> int:
    return int(s, 16)


# ------------------------------------------------------------------------------------------------ search


def brute_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Every pair (i < j) within ``threshold`` bits, by comparing all pairs (the oracle). Shape (k, 2), sorted."""
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for i in range(len(h) - 1):
        d = np.bitwise_count(h[i + 1 :] ^ h[i])
        j = np.nonzero(d <= threshold)[0] + i + 1
        if j.size:
            out.append(np.stack([np.full(j.size, i), j], axis=1))
    return _sorted_pairs(np.concatenate(out) if out else np.empty((0, 2), np.int64))


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    pairs = pairs.astype(np.int64)
    if not len(pairs):
        return pairs.reshape(0, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


# Costs measured on the 2-core development machine by timing each operation of the search on 1 000 000 hashes
# (benchmarks/dedupe.py prints the model's estimate beside the measured time): one probe (an XOR, a gather from the
# bucket-count table, a compress) and one candidate (its hashes gathered, XOR, popcount, compare) in nanoseconds;
# sorting one item into a block's buckets; one bucket of a table; one pair compared by brute force.
PROBE_NS, CANDIDATE_NS, ITEM_NS, BUCKET_NS, BRUTE_NS = 3.3, 10.0, 150.0, 4.0, 0.45
MAX_TABLE_BITS = 24  # a block's tables: 2^24 buckets × 25 bytes = 420 MB


def _widths(m: int) -> list[int]:
    """64 bits cut into ``m`` blocks as equal as possible, widest first."""
    return [64 // m + (i < 64 % m) for i in range(m)]


def _ball(bits: int, radius: int) -> int:
    return sum(math.comb(bits, k) for k in range(radius + 1))


def _plan(n: int, threshold: int) -> tuple[int, int] | None:
    """(blocks, radius per block) of the cheapest multi-index search by the measured costs above, or None when
    comparing all pairs is cheaper (few hashes, or a threshold so loose that no block is selective). With *m* blocks
    and radius ⌊t/m⌋, m·(⌊t/m⌋+1) > t, so two hashes within *t* bits are within the radius on some block. Each
    item probes half its radius ball (see :func:`_probe_groups`) and finds, per probe, the bucket's items."""
    best = (n * (n - 1) / 2 * BRUTE_NS, 0, 0)  # (cost, blocks, radius); 0 blocks: brute force
    for m in range(1, 65):
        widths = _widths(m)
        if widths[0] > MAX_TABLE_BITS:
            continue
        r = threshold // m
        cost = 0.0
        for w in widths:
            ball = _ball(w, r) - 1
            cost += n * ITEM_NS + (1 << w) * BUCKET_NS + n * ball / 2 * PROBE_NS
            cost += n * n * (ball + 1) / (1 << w) / 2 * CANDIDATE_NS
        if cost < best[0]:
            best = (cost, m, r)
    return None if best[1] == 0 else (best[1], best[2])


def _probe_groups(width: int, radius: int) -> list[tuple[int, np.ndarray]]:
    """The non-zero masks of at most ``radius`` bits, grouped by their highest set bit *p*. Two block values that
    differ by mask *x* are found once: from the one whose bit *p* = top(*x*) is 0 (only those items probe group *p*)."""
    out = []
    for p in range(width):
        masks = [1 << p]
        for k in range(1, radius):
            masks += [(1 << p) | sum(1 << b for b in combo) for combo in combinations(range(p), k)]
        out.append((p, np.array(masks, dtype=np.uint32)))
    return out


def near_pairs(hashes: np.ndarray, threshold: int, blocks: int | None = None) -> np.ndarray:
    """Every pair (i < j) of ``hashes`` within ``threshold`` bits (multi-index hashing). Shape (k, 2), sorted.
    ``blocks`` forces the number of blocks (tests; default: the planner's choice)."""
    h = np.asarray(hashes, dtype=np.uint64)
    if threshold < 0:
        raise ValueError("threshold must be 0 or more")
    if len(h) < 2:
        return np.empty((0, 2), np.int64)
    uniq, inverse = np.unique(h, return_inverse=True)
    up = _unique_pairs(uniq, threshold, blocks=blocks)
    if len(uniq) == len(h):  # no repeated hash: unique index → item index
        item = np.empty(len(h), np.int64)
        item[inverse] = np.arange(len(h))
        return _sorted_pairs(np.sort(item[up], axis=1))
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.cumsum(sizes) - sizes
    members = lambda u: order[starts[u] : starts[u] + sizes[u]]  # noqa: E731
    single = sizes[up[:, 0]] + sizes[up[:, 1]] == 2
    found = [np.stack([order[starts[up[single, 0]]], order[starts[up[single, 1]]]], axis=1)]
    found += [np.array(np.meshgrid(members(a), members(b))).reshape(2, -1).T for a, b in up[~single]]
    found += [np.array(list(combinations(members(u), 2))) for u in np.nonzero(sizes > 1)[0]]  # identical hashes
    pairs = np.sort(np.concatenate([f.reshape(-1, 2) for f in found]), axis=1)
    return _sorted_pairs(np.unique(pairs, axis=0))


class _Block:
    """One block of bits of every hash, in bucket order: ``order`` (item of each position), ``vs`` (block value of
    each position), ``hs`` (hash of each position), and per bucket its item count (``count``, capped at 255: only
    0, 1 and "more" matter), first position (``start``) and first item's hash (``head``)."""

    def __init__(self, h: np.ndarray, lo: int, width: int):
        self.width = width
        v = ((h >> np.uint64(64 - lo - width)) & np.uint64((1 << width) - 1)).astype(np.uint32)
        self.order = np.argsort(v, kind="stable")
        self.vs = v[self.order]
        self.hs = h[self.order]
        counts = np.bincount(v, minlength=1 << width)
        self.count = np.minimum(counts, 255).astype(np.uint8)
        self.counts = counts
        self.start = (np.cumsum(counts) - counts).astype(np.int64)
        self.head = np.zeros(1 << width, np.uint64)
        occupied = counts > 0
        self.head[occupied] = self.hs[self.start[occupied]]

    def same_bucket(self, threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Close pairs (as positions) within one bucket: neighbours k apart in bucket order, for growing k."""
        found, n, k = [], len(self.vs), 1
        while k < n:
            pa = np.flatnonzero(self.vs[k:] == self.vs[:-k])
            if not pa.size:
                break
            _close(found, self.hs, pa, pa + k, self.hs[pa + k], threshold)
            k += 1
        return found

    def probe(self, p: int, masks: np.ndarray, threshold: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Close pairs (as positions) between the items whose bit *p* is 0 and the buckets their masks lead to."""
        found: list[tuple[np.ndarray, np.ndarray]] = []
        sel = np.flatnonzero(((self.vs >> np.uint32(p)) & np.uint32(1)) == 0)
        k = len(masks)
        step = max(1, (1 << 18) // k)  # a few MB of probes at a time
        for c0 in range(0, len(sel), step):
            pos = sel[c0 : c0 + step]
            q = (self.vs[pos, None] ^ masks[None, :]).ravel()
            c = self.count[q]
            hit = np.flatnonzero(c != 0)  # (nonzero() on a bool array is several times faster than on bytes)
            if not hit.size:
                continue
            qh, pa = q[hit], pos[hit // k]
            close = np.bitwise_count(self.hs[pa] ^ self.head[qh]) <= threshold
            if close.any():
                found.append((pa[close], self.start[qh[close]]))
            more = np.flatnonzero(c[hit] > 1)  # buckets of several items: the others, one by one
            if more.size:
                qm = qh[more]
                reps = self.counts[qm] - 1
                offs = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps) + 1
                pb = np.repeat(self.start[qm], reps) + offs
                _close(found, self.hs, np.repeat(pa[more], reps), pb, self.hs[pb], threshold)
        return found


def _close(found: list, hs: np.ndarray, pa: np.ndarray, pb: np.ndarray, hb: np.ndarray, threshold: int) -> None:
    close = np.bitwise_count(hs[pa] ^ hb) <= threshold
    if close.any():
        found.append((pa[close], pb[close]))


def _unique_pairs(h: np.ndarray, threshold: int, workers: int = 0, blocks: int | None = None) -> np.ndarray:
    """Pairs of distinct hashes within ``threshold`` bits, by the plan of :func:`_plan`: for each block, the items
    are put in bucket order, and each probes half its radius ball (grouped by top bit, one task each, run on
    ``workers`` threads: numpy releases the GIL in these loops); a probe reads the bucket's item count (a byte
    table that stays in cache) and only a hit reads the bucket's first hash. Positions become item pairs only for
    the close ones."""
    n = len(h)
    plan = _plan(n, threshold) if blocks is None else (blocks, threshold // blocks)
    if plan is None:
        return brute_pairs(h, threshold)
    m, r = plan
    widths = _widths(m)
    workers = workers or cores()
    with ThreadPoolExecutor(workers, thread_name_prefix="near") as pool:
        los = np.cumsum([0] + widths[:-1])
        blocks = list(pool.map(lambda a: _Block(h, int(a[0]), a[1]), zip(los, widths)))
        tasks = [(b, None, None) for b in blocks]
        if r:
            tasks += [(b, p, masks) for b in blocks for p, masks in _probe_groups(b.width, r)]
        tasks.sort(key=lambda t: -(0 if t[2] is None else len(t[2])))  # the longest first
        results = pool.map(lambda t: (t[0], t[0].same_bucket(threshold) if t[1] is None
                                      else t[0].probe(t[1], t[2], threshold)), tasks)
        codes = []
        for b, found in results:
            for pa, pb in found:
                a, c = b.order[pa], b.order[pb]
                codes.append(np.minimum(a, c) * n + np.maximum(a, c))
    if not codes:
        return np.empty((0, 2), np.int64)
    codes = np.unique(np.concatenate(codes))
    return np.stack([codes // n, codes % n], axis=1)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label (the smallest member index) of each of ``n`` items."""
    labels = np.arange(n)
    if not len(pairs):
        return labels
    a, b = pairs[:, 0], pairs[:, 1]
    while True:
        before = labels.copy()
        low = np.minimum(labels[a], labels[b])
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]
        if np.array_equal(labels, before):
            return labels


def clusters(keys: Sequence[str], hashes: Sequence[int], areas: Sequence[int], threshold: int) -> dict[str, dict]:
    """For every key in a cluster of two or more: ``{"cluster", "representative", "distance"}`` (distance in bits
    to the representative). The representative has the largest ``area``, then the smallest key."""
    h = np.array(hashes, dtype=np.uint64)
    uniq, inverse = np.unique(h, return_inverse=True)  # identical hashes join without enumerating their pairs
    labels = components(len(uniq), _unique_pairs(uniq, threshold))[inverse]
    groups: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(int(lab), []).append(i)
    out = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        rep = min(members, key=lambda i: (-areas[i], keys[i]))
        for i in members:
            out[keys[i]] = {"cluster": keys[rep], "representative": keys[rep],
                            "distance": int(np.bitwise_count(h[i] ^ h[rep]))}
    return out


# ---------------------------------------------------------------------------------------- gandata dedupe


class HashCache:
    """The one cache of perceptual hashes: source file sha256 → (gandata-phash-v1, width, height), one JSONL line
    each in ``$GANDATA_CACHE/gandata-phash-v2.jsonl``, shared by ``dedupe`` (which reads it instead of decoding)
    and ``shard`` (which fills it, and skips computing a hash it finds there). Keyed by content, so it serves any
    input kind and never writes into an input folder; a torn last line is skipped on read."""

    def __init__(self, path: str | os.PathLike | None = None):
        from .assets import cache_dir

        self.path = Path(path) if path else cache_dir() / f"{HASH_NAME}.jsonl"
        # what the file holds, compactly (a cache of a million images is read by every run): the sha256s as bytes,
        # and by their id the hash and size; a later line of a sha256 wins
        self._known = KeySet(text=False)
        self._hash, self._size = array("Q"), array("i")
        for r in read_jsonl(self.path):
            try:
                if r.get("hash") != HASH_NAME:
                    continue
                sha, h, w, hh = bytes.fromhex(r["sha256"]), from_hex(r["phash"]), int(r["width"]), int(r["height"])
            except (KeyError, TypeError, ValueError):
                continue
            if not (0 <= h < 1 << 64 and 0 < w < 1 << 31 and 0 < hh < 1 << 31):
                continue
            j, new = self._known.add(sha)
            if new:
                self._hash.append(h)
                self._size.extend((w, hh))
            else:
                self._hash[j], self._size[2 * j], self._size[2 * j + 1] = h, w, hh
        self._log: JsonlLog | None = None

    def get(self, sha256: str) -> tuple[int, int, int] | None:
        try:
            j = self._known.find(bytes.fromhex(sha256))
        except ValueError:
            return None
        return (self._hash[j], self._size[2 * j], self._size[2 * j + 1]) if j >= 0 else None

    def put(self, sha256: str, h: int, width: int, height: int) -> None:
        """Add a hash to the file (not to ``known``: a run puts each of its samples once, and holding them all
        would cost a few hundred bytes a sample; a file met twice is written twice, and read back once)."""
        if self.get(sha256) is not None:
            return
        try:
            if self._log is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._log = JsonlLog(self.path)
            self._log.append({"sha256": sha256, "hash": HASH_NAME, "phash": to_hex(h), "width": width,
                              "height": height})
        except OSError:  # a read-only or full cache disk: the cache is only a speed-up
            pass

    def close(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):  # a full cache disk: the cache is only a speed-up
                self._log.close()
            self._log = None

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BYTES_PER_PIXEL = 10  # what a pixel holds while it is hashed: Pillow's RGB image, its grey copy, float32 grey


def _hash_sample_of(s: Sample, data: bytes | None, budget: MemoryBudget | None = None) -> tuple[int, int, int] | str:
    if data is None:
        data, why = s.read_or_why()
        if data is None:
            return why
    if budget is None:
        return _hash_sample(data)
    with budget.hold(images.pixel_count(data)[1] * BYTES_PER_PIXEL):
        return _hash_sample(data)


def phash_of(data: bytes, max_pixels: int = images.DEFAULT_MAX_PIXELS) -> tuple[int, int, int]:
    """gandata-phash-v2 of an image file, and its width and height. Raises :class:`images.ImageError`."""
    im, (w, h), _ = images.decode_scaled(data, HASH_SIDE, max_pixels)
    return phash(im), w, h


def _hash_sample(data: bytes) -> tuple[int, int, int] | str:
    try:
        return phash_of(data)
    except images.ImageError as e:
        return str(e)


def hash_part(part: Part) -> dict:
    """A Ray task of ``dedupe --engine ray``: the rows and the unreadable samples of one part of the inputs, as
    :func:`hash_inputs` finds them (hex hashes: the marker is JSON)."""
    rows, bad = [], []
    samples, problems = part_samples(part)
    for s in samples:
        res = _hash_sample_of(s, None)
        if isinstance(res, str):
            bad.append({"origin": s.origin, "reason": res})
        else:
            rows.append({"key": s.key, "origin": s.origin, "phash": to_hex(res[0]), "width": res[1],
                         "height": res[2]})
    bad.extend({"origin": p.origin, "reason": p.reason} for p in problems if p.lost)
    return {"rows": rows, "bad": bad}


def _hash_on_ray(inputs: list, progress: bool, address: str | None, workers: int, task_size: int,
                 work: str | None) -> tuple[list[dict], list[dict]]:
    from . import engine
    from .assets import cache_dir

    listed: list = []
    parts = partitions(inputs, task_size, listed)
    tasks = [engine.Task(f"hash-{p.ident}", (p,)) for p in parts]
    markers = work or str(cache_dir() / "dedupe-tasks")  # keyed by content: one folder serves every run
    total = sum(x.count_hint() or 0 for x in inputs) or None
    with Progress("hash", total, enabled=progress) as prog:
        report = engine.run(hash_part, tasks, markers, address=address, workers=workers, label="hash",
                            on_result=lambda _t, r: prog.advance(len(r["rows"]) + len(r["bad"])),
                            reads=[x.path for x in inputs])
    rows = [{**r, "phash": from_hex(r["phash"])} for t in tasks for r in report.results[t.id]["rows"]]
    bad = [b for t in tasks for b in report.results[t.id]["bad"]]
    return rows, bad + [{"origin": p.origin, "reason": p.reason} for p in listed if p.lost]


def hash_inputs(
    srcs: list[str | os.PathLike], progress: bool = False, workers: int = 0, memory: int = 1024,
    engine: str = "local", ray_address: str | None = None, task_size: int = 2000, work: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """``[{key, origin, phash, width, height}]`` for every readable sample, and the unreadable ones. Hashes come
    from the :class:`HashCache` when a file was hashed before (by dedupe or shard); inputs are only read. Decoded
    pixels share a budget of ``memory`` MiB. ``engine="ray"``: hashed by Ray tasks of ``task_size`` samples (a tar
    is one task), whose markers go to ``work`` (default: the cache; on a cluster, a shared folder or s3://…)."""
    if engine == "ray":  # every path a task sees is resolved here: a worker's current folder is its node's
        return _hash_on_ray([open_input(storage.absolute(s)) for s in srcs], progress, ray_address, workers,
                            task_size, storage.absolute(work) if work else None)
    rows, bad = [], []
    budget = MemoryBudget(memory << 20)
    inputs = [open_input(s) for s in srcs]
    total = sum(x.count_hint() or 0 for x in inputs) or None
    with Progress("hash", total, enabled=progress) as prog, HashCache() as cache:
        for src in inputs:

            def jobs(src=src) -> Iterator[tuple[tuple[Sample, str], Callable]]:
                for s in src:
                    data, why = (None, None) if s.sha256 else s.read_or_why()
                    if why is not None:
                        yield (s, None), Done(why)
                        continue
                    sha = s.sha256 or hashlib.sha256(data).hexdigest()
                    hit = cache.get(sha)
                    if hit is not None:
                        rows.append({"key": s.key, "origin": s.origin, "phash": hit[0], "width": hit[1],
                                     "height": hit[2]})
                        prog.advance(1, cached=1)
                        continue
                    yield (s, sha), partial(_hash_sample_of, s, data, budget)

            for (s, sha), res in ordered(jobs(), workers or cores(), 64, name="hash"):
                if isinstance(res, str):
                    bad.append({"origin": s.origin, "reason": res})
                    prog.advance(1, bad=1)
                    continue
                h, w, hh = res
                rows.append({"key": s.key, "origin": s.origin, "phash": h, "width": w, "height": hh})
                cache.put(sha, h, w, hh)
                prog.advance(1)
            bad.extend({"origin": p.origin, "reason": p.reason} for p in src.problems if p.lost)
    return rows, bad


@dataclass
class DedupeSummary(Summary):
    samples: int
    unreadable: int
    bad: list[dict]
    threshold: int
    hash: str
    clusters: int
    in_clusters: int  # samples in a cluster, representatives included
    near_duplicates: int  # what shard --dedupe near would remove
    largest: int
    report: str | None
    grid: str | None

    def lines(self) -> list[str]:
        out = [f"{self.samples} samples: {self.clusters} near-duplicate clusters at {self.threshold} bits, "
               f"{self.in_clusters} samples in them, {self.near_duplicates} would be removed (largest cluster: "
               f"{self.largest})"]
        if self.unreadable:
            out.append(f"  {self.unreadable} unreadable, e.g. {self.bad[0]['origin']}: {self.bad[0]['reason']}")
        if self.report:
            out.append(f"  report: {self.report}")
        if self.grid:
            out.append(f"  contact sheet: {self.grid}")
        return out


def dedupe(
    srcs: list[str | os.PathLike],
    threshold: int = _DEFAULT["threshold"],
    report: str | os.PathLike | None = None,
    grid: str | os.PathLike | None = None,
    grid_clusters: int = 12,
    progress: bool = False,
    memory: int = _DEFAULT["memory"],
    engine: str = _DEFAULT["engine"],
    ray_address: str | None = None,
    task_size: int = _DEFAULT["task_size"],
    work: str | None = None,
) -> DedupeSummary:
    """Find near-duplicate clusters across ``srcs`` (nothing is changed); write a JSONL report and a contact sheet.
    ``engine="ray"`` hashes on Ray (see :func:`hash_inputs`); the clusters are the same."""
    check_call(DEDUPE, threshold=threshold, memory=memory, engine=engine, task_size=task_size)
    if not srcs:
        raise UserError("name at least one dataset folder, folder of images, or shards")
    for output, name in ((report, named("report")), (grid, named("grid")), (work, named("work"))):
        refuse_overlap(output, name, [(src, "SRC") for src in srcs])
    rows, bad = hash_inputs(list(srcs), progress, memory=memory, engine=engine, ray_address=ray_address,
                            task_size=task_size, work=work)
    seen: dict[str, str] = {}
    for r in rows:
        if r["key"] in seen:
            raise UserError(f"two inputs give the key {r['key']!r} ({seen[r['key']]} and {r['origin']}); "
                            "check them separately")
        seen[r["key"]] = r["origin"]
    found = clusters([r["key"] for r in rows], [r["phash"] for r in rows], [r["width"] * r["height"] for r in rows],
                     threshold)
    by_cluster: dict[str, list[dict]] = {}
    for r in rows:
        if r["key"] in found:
            by_cluster.setdefault(found[r["key"]]["cluster"], []).append({**r, **found[r["key"]]})
    ordered = sorted(by_cluster.values(), key=lambda m: (-len(m), m[0]["cluster"]))
    if report:
        lines = []
        for members in ordered:
            for m in sorted(members, key=lambda m: (m["key"] != m["representative"], m["distance"], m["key"])):
                lines.append({"key": m["key"], "origin": m["origin"], "cluster": m["cluster"],
                              "representative": m["representative"], "distance": m["distance"],
                              "kept": m["key"] == m["representative"], "phash": to_hex(m["phash"]),
                              "width": m["width"], "height": m["height"],
                              "reason": None if m["key"] == m["representative"]
                              else f"near duplicate of {m['representative']} ({m['distance']} bits)"})
        storage.put(report, b"".join(json_bytes(x) + b"\n" for x in lines))
    if grid:
        _cluster_sheet(ordered[:grid_clusters], srcs, grid, threshold)
    sizes = Counter(len(m) for m in ordered)
    return DedupeSummary(
        samples=len(rows), unreadable=len(bad), bad=bad[:20], threshold=threshold, hash=HASH_NAME,
        clusters=len(ordered), in_clusters=sum(len(m) for m in ordered),
        near_duplicates=sum(len(m) - 1 for m in ordered), largest=max(sizes) if sizes else 0,
        report=str(report) if report else None, grid=str(grid) if grid else None,
    )


def _shown(members: list[dict]) -> list[dict]:
    """The row of a cluster on the contact sheet: the representative, then the nearest members."""
    return sorted(members, key=lambda m: (m["key"] != m["representative"], m["distance"], m["key"]))[:8]


def _cluster_sheet(ordered: list[list[dict]], srcs: list, path: str | os.PathLike, threshold: int) -> None:
    wanted = {m["key"] for members in ordered for m in _shown(members)}  # load exactly the images shown
    pictures: dict[str, Image.Image] = {}
    for s in srcs:
        for sample in open_input(s):
            if sample.key in wanted and sample.key not in pictures:
                try:  # one full-size image at a time, kept only as its thumbnail
                    pictures[sample.key] = thumbnail(sample.read())
                except (images.ImageError, OSError):
                    pass
    cluster_sheet(ordered, pictures, path, threshold)


def thumbnail(data: bytes, side: int = 112) -> Image.Image:
    """An encoded image as a cell of a cluster sheet."""
    thumb = images.to_rgb(images.decode(data))
    thumb.thumbnail((side, side), Image.Resampling.BOX)
    return thumb


def cluster_sheet(ordered: list[list[dict]], pictures: dict[str, Image.Image], path: str | os.PathLike,
                  threshold: int) -> None:
    """The contact sheet of clusters (``dedupe --grid``; shard's warning of a mass removal): a row each, its
    representative (``KEEP``) then its nearest members with their distance in bits. ``ordered``: the clusters'
    members as ``{"key", "representative", "distance"}``; ``pictures``: thumbnails by key (a missing one is a
    crossed cell)."""
    cells = []
    for members in ordered:
        row = _shown(members)
        for m in row:
            tag = "KEEP" if m["key"] == m["representative"] else f"{m['distance']}b"
            cells.append((pictures.get(m["key"]), f"{tag} {m['key']}"))
        cells.extend([(None, "")] * (8 - len(row)))
    title = f"largest near-duplicate clusters at {threshold} bits (one cluster a row; KEEP = representative)"
    storage.put(path, images.encode(images.contact_sheet(cells or [(None, "no clusters")], cell=112, cols=8,
                                                          title=title)))
