"""Streaming WebDataset shards into uint8 batches, one stream per rank, never unpacked to disk.

* Shard specs: a folder with ``dataset.json`` (its train split, or ``split=``), a folder of ``.tar`` files, a tar,
  a brace pattern (``shards/x-train-{000000..000019}.tar``), or anything WebDataset opens (``https://…``,
  ``pipe:aws s3 cp s3://… -``). Several specs may be joined with ``::``.
* The stream is endless and every reader (rank × loader worker) has one: a seeded permutation of the shards per
  epoch, epochs one after another, the sequence dealt round-robin to the readers — so every rank runs the same
  number of steps (the loop counts steps, not epochs), and every shard is read once per epoch across the readers.
  (WebDataset's ``ResampledShards`` draws with replacement: with 6 shards a third of them are missing from a
  typical epoch-long window.)
* The order is seeded: the shard sequence and each reader's shuffle buffer take their seed from the run's seed, so
  two runs with the same seed see the same batches (WebDataset's own defaults mix in the pid and the clock).
* Workers decode only the image (and ``cls``) to uint8 and build whole batches (``partial=False``) as one array;
  normalisation to [-1, 1] happens on the device (``to_device``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path

import braceexpand
import cv2
import numpy as np
import torch
import webdataset as wds

IMAGE_KEYS = "png;jpg;jpeg;webp"


def resolve(spec: str, split: str = "train") -> tuple[list[str], dict | None]:
    """The shard URLs of ``spec`` and, for a folder made by ``gandata shard``, its dataset.json."""
    urls: list[str] = []
    info = None
    for part in spec.split("::"):
        path = Path(part)
        if path.is_dir():
            try:
                info = json.loads((path / "dataset.json").read_text("utf-8"))
            except (FileNotFoundError, ValueError):
                info = None
            if info and "splits" in info:
                shards = info["splits"].get(split, {}).get("shards", [])
                urls += [str(path / s["name"]) for s in shards]
            else:
                urls += sorted(str(p) for p in path.glob("*.tar"))
        elif re.match(r"^[a-z][a-z0-9+.-]*:", part) and not path.exists():
            urls += list(braceexpand.braceexpand(part))  # https://…, pipe:…, gs://…
        else:
            urls += list(braceexpand.braceexpand(part))
            missing = [u for u in urls if not Path(u).exists() and not re.match(r"^[a-z][a-z0-9+.-]*:", u)]
            if missing:
                raise FileNotFoundError(f"{missing[0]} does not exist")
    if not urls:
        raise FileNotFoundError(f"{spec} names no shards (for a folder: its dataset.json has no {split!r} split, "
                                "or it holds no .tar files)")
    return urls, info


def _decode(conditional: bool):
    """Sample → (uint8 H×W×3 BGR array, label). Only the image (and ``cls``) is decoded; one OpenCV call each."""

    def decode(sample: dict) -> tuple[np.ndarray, int]:
        data = next((sample[k] for k in IMAGE_KEYS.split(";") if k in sample), None)
        if data is None:
            raise KeyError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no png, jpg or webp image")
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if arr is None:
            raise ValueError(f"sample {sample.get('__key__')} in {sample.get('__url__')}: the image does not decode")
        label = int(sample["cls"]) if conditional else -1
        return arr, label

    return decode


def _collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([s[0] for s in samples])  # B×H×W×3, BGR
    chw = np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2))  # → B×3×H×W, RGB
    return torch.from_numpy(chw), torch.tensor([s[1] for s in samples], dtype=torch.int64)


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            raise EOFError("tar ends in the middle of a member")
        data += more
    return data


def tar_members(f, url: str):
    """(name, bytes) of every regular file in a tar stream. A lean reader for USTAR, GNU long names and pax paths,
    several times faster than ``tarfile`` per member (which dominated the input pipeline); header checksums are
    verified."""
    long_name = None
    while True:
        header = f.read(512)
        if len(header) < 512 or header == b"\0" * 512:
            return
        try:
            stored = int(header[148:156].strip(b"\0 "), 8)
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            stored = size = -1
        if stored < 0 or size < 0 or sum(header[:148]) + 256 + sum(header[156:]) != stored:
            raise ValueError(f"{url}: not a tar file, or damaged (bad header)")
        kind = header[156:157]
        data = _read_exact(f, size) if size else b""
        if size % 512:
            _read_exact(f, 512 - size % 512)
        if kind == b"L":  # GNU long name for the next member
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":  # pax header: a "path" record names the next member
            for record in data.decode("utf-8", "replace").split("\n"):
                if " path=" in record:
                    long_name = record.split(" path=", 1)[1]
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue
        name = long_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
            if prefix:
                name = prefix.decode("utf-8") + "/" + name
        long_name = None
        yield name, data


def tar_samples(src):
    """Shard URLs → samples: members grouped by key (the name up to the first dot of its basename)."""
    for shard in src:
        url = shard["url"]
        stream = wds.gopen(url)
        try:
            key, sample = None, {}
            for name, data in tar_members(stream, url):
                split = _SPLIT.match(name)
                if not split:
                    continue
                k, ext = split.group(1), split.group(2).lower()
                if k != key:
                    if sample:
                        yield sample
                    key, sample = k, {"__key__": k, "__url__": url}
                sample[ext] = data
            if sample:
                yield sample
        finally:
            stream.close()


_SPLIT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def reader_seed(seed: int, purpose: str) -> int:
    """A seed for this (run seed, rank, loader worker, purpose): every reader draws its own, reproducible stream."""
    info = torch.utils.data.get_worker_info()
    key = f"{seed}:{os.environ.get('RANK', '0')}:{info.id if info else -1}:{purpose}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


class ShardCycle(torch.utils.data.IterableDataset):
    """Endless ``{"url": …}`` for this reader: epoch after epoch a permutation of ``urls`` seeded by (seed, epoch),
    the whole sequence dealt round-robin over every rank's loader workers. Picklable (a class, not a closure)."""

    def __init__(self, urls: list[str], seed: int):
        super().__init__()
        self.urls, self.seed = list(urls), seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        reader, readers = rank * workers + worker, world * workers
        i, epoch = 0, 0
        while True:
            digest = hashlib.sha256(f"{self.seed}:epoch:{epoch}".encode()).digest()
            for url in random.Random(int.from_bytes(digest[:8], "little")).sample(self.urls, len(self.urls)):
                if i % readers == reader:
                    yield {"url": url}
                i += 1
            epoch += 1


class Shuffled:
    """A pipeline stage: a shuffle buffer of ``bufsize`` samples, seeded per reader (see :func:`reader_seed`).
    A class, not a closure, so that loader workers started by spawn or forkserver can receive it."""

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed = max(bufsize, 1), seed

    def __call__(self, samples):
        rng = random.Random(reader_seed(self.seed, "shuffle"))
        buf: list = []
        for sample in samples:
            if len(buf) < self.bufsize:
                buf.append(sample)
                continue
            i = rng.randrange(self.bufsize)
            buf[i], sample = sample, buf[i]
            yield sample
        rng.shuffle(buf)
        yield from buf


def stream(urls: list[str], batch: int, conditional: bool = False, workers: int = 2, shuffle: int = 2000,
           seed: int = 0, pin_memory: bool = False) -> wds.WebLoader:
    """An endless loader of ``(images uint8 B×3×H×W, labels int64 B)`` for this rank (labels −1 when
    unconditional), in an order fixed by ``seed``."""
    cv2.setNumThreads(1)
    ds = wds.DataPipeline(
        ShardCycle(urls, seed),  # this reader's share of an endless, seeded sequence of shard permutations
        tar_samples,
        Shuffled(shuffle, seed),
        wds.map(_decode(conditional)),
        wds.batched(batch, partial=False, collation_fn=_collate),
    )
    return wds.WebLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                         persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                         worker_init_fn=_ignore_ctrl_c if workers > 0 else None)


def _ignore_ctrl_c(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C (the terminal sends it to the whole process group): the trainer finishes its
    step and writes a checkpoint, which needs the workers' batches; they end with the trainer."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def to_device(batch: tuple, device: torch.device, conditional: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images → float in [-1, 1] on the device; labels (conditional only) as int64."""
    images, labels = batch
    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x, labels.to(device, non_blocking=True) if conditional else None


def load_arrays(spec: str, split: str = "train", conditional: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample of one split of a (small) shard set, in shard order, as ``(uint8 N×3×H×W RGB, int64 N labels)``
    — for benchmarks and checks that need the whole set in memory (labels −1 when unconditional)."""
    urls, _ = resolve(spec, split)
    decode = _decode(conditional)
    return _collate([decode(s) for s in tar_samples({"url": u} for u in urls)])
