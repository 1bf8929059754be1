"""Streaming WebDataset shards into uint8 batches, one stream per rank, never unpacked to disk.

* Shard specs: a folder with ``dataset.json`` (its train split, or ``split=``), the same in object storage
  (``s3://bucket/shards``), a folder of ``.tar`` files, a tar, a brace pattern (``shards/x-train-{000000..000019}.tar``,
  ``s3://…/x-train-{000000..000019}.tar``), or anything WebDataset opens (``https://…``, ``pipe:…``). Several specs
  may be joined with ``::``.
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

import functools
import hashlib
import os
import random
import sys
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch
import webdataset as wds

from .. import images, shardset, storage
from ..errors import FormatError, UserError, hint, named

IMAGE_KEYS = "png;jpg;jpeg;webp"


class DataError(FormatError):
    """Shards the trainer cannot use — unreadable, damaged, empty, an image that does not decode, a label out of
    range, sizes that differ — said in one line that names the shard and the sample."""


class Decode:
    """Sample → (uint8 H×W×3 RGB array, label). Only the image (and ``cls``) is decoded. ``n_classes`` (cdcgan):
    the label must be a whole number in 0…n_classes−1; ``resolution``: the image must be that square size. A class,
    not a closure, so that loader workers started by spawn can receive it."""

    def __init__(self, conditional: bool, n_classes: int = 0, resolution: int | None = None):
        self.conditional, self.n_classes, self.resolution = conditional, n_classes, resolution

    def __call__(self, sample: dict) -> tuple[np.ndarray, int]:
        where = f"sample {sample.get('__key__')} in {sample.get('__url__')}"
        data = next((sample[k] for k in IMAGE_KEYS.split(";") if k in sample), None)
        if data is None:
            raise DataError(f"{where}: its image is over the {shardset.MAX_MEMBER_BYTES >> 20} MiB limit")
        try:
            arr = images.decode_array(data)
        except images.ImageError:
            raise DataError(f"{where}: the image does not decode (not an image, or damaged)") from None
        if self.resolution and arr.shape[:2] != (self.resolution, self.resolution):
            raise DataError(f"{where} is {arr.shape[1]}×{arr.shape[0]} px, the run trains at {self.resolution} px; "
                            f"make the shards at that size ({_remade_at(sample.get('__url__'), self.resolution)}), "
                            f"or leave {named('resolution')} out")
        return arr, self._label(sample, where) if self.conditional else -1

    def _label(self, sample: dict, where: str) -> int:
        raw = sample.get("cls")
        if raw is None:
            raise DataError(f"{where} has no .cls label; cdcgan needs every sample labelled "
                            f"({hint('label_field', 'FIELD', command='shard')})")
        try:
            label = int(raw.strip() if isinstance(raw, bytes) else raw)
        except (ValueError, TypeError):
            raise DataError(f"{where}: its .cls label {raw[:20]!r} is not a whole number") from None
        if not 0 <= label < self.n_classes:
            raise DataError(f"{where}: its .cls label {label} is outside 0-{self.n_classes - 1} (the run has "
                            f"{self.n_classes} classes); give {named('n_classes')} more than the largest label")
        return label


def _remade_at(url: str | None, size: int) -> str:
    """The shard command that makes the set of the tar ``url`` again at ``size`` px: its sources, folder, name and
    options, as its description records them — a bare ``gandata shard --size 64`` would shard every dataset under
    ./data instead. For a tar of no described set: the command with SRC and OUT for the reader to fill."""
    ss = shardset.set_of(url) if url else None
    sources, given = ss.how_made() if ss else ([], {"out": "OUT"})
    return hint("size", size, command="shard SRC", args=sources, given=given)


def _collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {s[0].shape for s in samples}
    if len(shapes) > 1:
        got = " and ".join(sorted(f"{w}×{h}" for h, w, _ in shapes))
        raise DataError(f"the shards hold images of different sizes ({got} px); make them at one size with "
                        f"{hint('size', command='shard')}")
    chw = np.ascontiguousarray(np.stack([s[0] for s in samples]).transpose(0, 3, 1, 2))  # B×H×W×3 → B×3×H×W
    return torch.from_numpy(chw), torch.tensor([s[1] for s in samples], dtype=torch.int64)


def tar_samples(src, commands: bool = False):
    """Shard URLs → WebDataset samples (``{"__key__", "__url__", ext: bytes}``) that hold an image, read with the
    shard set's own tar reader (:func:`gandata.shardset.samples`), each opened by
    :func:`gandata.shardset.open_shard` (object stores through fsspec, ``https://`` with a timeout, ``pipe:`` only
    with ``commands``). A shard that cannot be opened or read is a :class:`DataError`. When the source says how
    many shards there are (``n_urls``, as :class:`ShardCycle` does), a reader that has met every one of them
    without finding one image since the last it found raises :class:`DataError`: an endless stream of empty shards
    would otherwise spin for ever."""
    empty: set[str] = set()
    for shard in src:
        url, found = shard["url"], 0
        for attempt in range(SHARD_TRIES):
            try:
                found = yield from _read_shard(url, commands, skip=found)
                break
            except _Transient as e:  # a store or server that failed mid-read: the shard again, past what was read
                if attempt + 1 == SHARD_TRIES:
                    raise DataError(f"{url} could not be read after {SHARD_TRIES} tries ({e.args[0]}); check the "
                                    "store or server, then run the same command again") from None
                time.sleep(2 ** attempt)
        if found:
            empty.clear()
        elif "n_urls" in shard:
            empty.add(url)
            if len(empty) >= shard["n_urls"]:
                raise DataError(f"the shards hold no samples with an image ({len(empty)} shard(s) read, e.g. "
                                f"{url}); check them with gandata inspect")


SHARD_TRIES = 3  # reads of one shard before the run stops (a transient error: a timeout, a reset, a 5xx)


class _Transient(Exception):
    pass


def _read_shard(url: str, commands: bool, skip: int):
    """The samples with an image of one shard, past the first ``skip``; returns how many it yielded. A store or
    server that does not answer raises :class:`_Transient`; damaged content is a :class:`DataError`."""
    n = 0
    try:
        stream = shardset.open_shard(url, commands)
    except (storage.StoreError, shardset.Unreachable) as e:
        raise _Transient(str(e).removeprefix(f"{url}: ")) from None
    except UserError as e:
        raise DataError(str(e)) from None
    try:
        for key, fields in shardset.samples(stream, url):
            if any(k in fields for k in IMAGE_KEYS.split(";")):
                n += 1
                if n > skip:
                    yield {"__key__": key, "__url__": url, **fields}
    except (ValueError, EOFError) as e:
        raise DataError(f"{url} cannot be read ({e}); check it with gandata inspect") from None
    except shardset.Unreachable as e:  # a shard's server that stalled, trickled or cut the connection
        raise _Transient(str(e).removeprefix(f"{url}: ")) from None
    except Exception as e:  # a timeout, a reset connection, a store that went away (OSError, urllib3's, botocore's)
        if isinstance(e, (OSError, storage.StoreError)) or type(e).__module__.split(".")[0] in ("urllib3", "botocore",
                                                                                                 "aiohttp"):
            raise _Transient(f"{type(e).__name__}: {str(e)[:160]}") from None
        raise
    finally:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 (closing a broken connection may fail again; the error that matters is above)
            pass
    return n


def batches(loader):
    """The loader's batches in the main process. A :class:`DataError` raised in a loader worker arrives wrapped in
    the worker's traceback; it is raised again as the one line it was."""
    it, shape = iter(loader), None
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DataError as e:
            raise DataError(_first_words(str(e))) from None
        if shape is not None and batch[0].shape[1:] != shape:
            raise DataError(f"the shards hold images of different sizes ({shape[-1]} and {batch[0].shape[-1]} px); "
                            f"make them at one size with {hint('size', command='shard')}")
        shape = batch[0].shape[1:]
        yield batch


def _first_words(message: str) -> str:
    """The original message of an error that a loader worker raised (torch puts its traceback in front)."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last and "." in last.split(": ", 1)[0] else last


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
                    yield {"url": url, "n_urls": len(self.urls)}
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
           seed: int = 0, pin_memory: bool = False, commands: bool = False, n_classes: int = 0,
           resolution: int | None = None) -> wds.WebLoader:
    """An endless loader of ``(images uint8 B×3×H×W, labels int64 B)`` for this rank (labels −1 when
    unconditional), in an order fixed by ``seed``."""
    cv2.setNumThreads(1)
    ds = wds.DataPipeline(
        ShardCycle(urls, seed),  # this reader's share of an endless, seeded sequence of shard permutations
        functools.partial(tar_samples, commands=commands),
        Shuffled(shuffle, seed),
        wds.map(Decode(conditional, n_classes, resolution)),
        wds.batched(batch, partial=False, collation_fn=_collate),
    )
    if workers > 0:
        _end_workers_at_exit()
    return wds.WebLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                         persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                         worker_init_fn=_ignore_stop_signals if workers > 0 else None)


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C and SIGTERM (a terminal, or a stop of the whole process group, sends them to
    every process): the trainer finishes its step and writes a checkpoint, which needs the workers' batches; they
    end with the trainer (torch's workers watch their parent, and :func:`_end_workers_at_exit` ends them)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_handover(sys.excepthook)


def _quiet_handover(excepthook):
    """A loader worker hands each batch's shared memory to the trainer through multiprocessing's resource sharer,
    whose thread prints a traceback when the trainer hangs up mid-handover — as it does when it stops (Ctrl-C,
    SIGTERM, an error) while a batch is on its way. That hang-up is the trainer's own end, said by the trainer in
    its one line; the worker, killed moments later, stays quiet about it. Any other exception is printed as
    before."""

    def hook(kind, value, tb):
        frames = traceback.extract_tb(tb)
        if (issubclass(kind, (OSError, EOFError)) and frames
                and Path(frames[0].filename).parts[-2:] == ("multiprocessing", "resource_sharer.py")):
            return
        excepthook(kind, value, tb)

    return hook


@functools.cache
def _end_workers_at_exit() -> None:
    """At the trainer's exit its loader workers are killed: they ignore SIGTERM, which is all Python's own exit
    sends its daemonic children before it waits for them — for ever, when the run ended with the workers still
    there (an error, say). Registered after multiprocessing's exit handler, so it runs first."""
    import atexit
    import multiprocessing
    import signal

    def end() -> None:
        workers = [p for p in multiprocessing.active_children() if p.daemon]  # torch's loader workers
        if not workers:
            return
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would call their end a failure
        for p in workers:
            p.kill()
        for p in workers:
            p.join(timeout=5)

    atexit.register(end)


def to_device(
    batch: tuple, device: torch.device, conditional: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images → float in [-1, 1] on the device; labels (conditional only) as int64."""
    images, labels = batch
    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x, labels.to(device, non_blocking=True) if conditional else None


def in_order(urls: list[str], batch: int, limit: int | None = None, conditional: bool = False,
             commands: bool = False, n_classes: int = 0):
    """``(uint8 B×3×H×W RGB, int64 B labels)`` batches of every sample of ``urls`` in shard order, each read once
    (the last batch may be short; at most ``limit`` samples) — for evaluation and in-memory checks."""
    decode = Decode(conditional, n_classes)
    pending: list[tuple[np.ndarray, int]] = []
    seen = 0
    for sample in tar_samples(({"url": u} for u in urls), commands):
        if limit is not None and seen >= limit:
            break
        pending.append(decode(sample))
        seen += 1
        if len(pending) == batch:
            yield _collate(pending)
            pending = []
    if pending:
        yield _collate(pending)


def label_sampler(labels: dict | None, n_classes: int):
    """``draw(k, generator)``: ``k`` class ids for a conditional generator, drawn like the real set's labels (the
    counts in its description, :attr:`gandata.shardset.ShardSet.labels`), else uniformly. Training and evaluation
    both draw with it."""
    counts = (labels or {}).get("counts") or {}
    names = (labels or {}).get("names") or []
    freq = torch.tensor([float(counts.get(n, 0)) for n in names]) if names and counts else None
    if freq is not None and (len(freq) != n_classes or freq.sum() <= 0):
        freq = None

    def draw(k: int, g: torch.Generator) -> torch.Tensor:
        if freq is not None:
            return torch.multinomial(freq, k, replacement=True, generator=g)
        return torch.randint(0, n_classes, (k,), generator=g)

    return draw
