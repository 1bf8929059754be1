"""Streaming WebDataset shards into uint8 batches, one stream per rank, never unpacked to disk.

* Shard specs: a folder with ``dataset.json`` (its train split, or ``split=``), a folder of ``.tar`` files, a tar,
  a brace pattern (``shards/x-train-{000000..000019}.tar``), or anything WebDataset opens (``https://…``,
  ``pipe:aws s3 cp s3://… -``). Several specs may be joined with ``::``.
* The stream is resampled (shards drawn with replacement, forever) with an explicit node splitter, so every rank
  runs the same number of steps and multi-node runs never hit WebDataset's single-node check; the training loop
  counts steps, not epochs.
* Workers decode to uint8 CHW and build whole batches (``partial=False``); normalisation to [-1, 1] happens on the
  device (``to_device``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import braceexpand
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


def _pick(sample: dict) -> dict:
    for k in IMAGE_KEYS.split(";"):
        if k in sample:
            return sample
    raise KeyError(f"sample {sample.get('__key__')} has no image (png, jpg, jpeg or webp)")


def stream(urls: list[str], batch: int, conditional: bool = False, workers: int = 2, shuffle: int = 2000,
           seed: int | None = None, pin_memory: bool = False) -> wds.WebLoader:
    """An endless loader of ``(images uint8 B×C×H×W, labels int64 B or None)`` for this rank."""
    keys = (IMAGE_KEYS, "cls") if conditional else (IMAGE_KEYS,)
    ds = (
        wds.WebDataset(urls, resampled=True, nodesplitter=wds.split_by_node, shardshuffle=False,
                       handler=wds.reraise_exception, seed=seed)
        .map(_pick)
        .shuffle(shuffle)
        .decode("torchrgb8")
        .to_tuple(*keys)
        .batched(batch, partial=False)
    )
    return wds.WebLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                         persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def to_device(batch: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images → float in [-1, 1] on the device; labels as int64 (or None)."""
    images = batch[0]
    if isinstance(images, list):
        images = torch.stack(images)
    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    y = None
    if len(batch) > 1:
        labels = batch[1]
        y = (labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)).to(device).long()
    return x, y
