"""A user's own list of image URLs (txt, csv/tsv, jsonl), e.g. lists of anime illustrations.

The list is read as a stream (never held whole in memory); every column other than the URL is kept in the
sample's record. A sample's key is a hash of its URL, so a URL listed twice is fetched once and a re-run skips
what is already stored.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..datasets import Dataset, hash_key
from ..errors import UserError
from ..fetch import (
    RESERVED,
    FetchOptions,
    FetchSummary,
    Job,
    check_base_url,
    describe_run,
    fetch,
    rebase,
    with_overrides,
)

FORMATS = ("txt", "csv", "tsv", "jsonl")


def list_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
        return fmt
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    for s in reversed(suffixes):
        if s in FORMATS:
            return s
        if s in ("json", "ndjson"):
            return "jsonl"
    return "txt"


def read_url_list(path: str | os.PathLike, url_col: str = "url", fmt: str | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (url, other columns) for every row, streaming. Raises UserError for a list it cannot read at all."""
    path = Path(path)
    kind = list_format(path, fmt)
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as e:
        raise UserError(f"cannot read the URL list {path} ({e.strerror})") from None
    with f:
        if kind == "txt":
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield line, {}
        elif kind in ("csv", "tsv"):
            reader = csv.DictReader(f, delimiter="\t" if kind == "tsv" else ",")
            if reader.fieldnames is None or url_col not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames or [])
                raise UserError(f"{path} has no {url_col!r} column (columns: {cols}); name it with --url-col")
            for row in reader:
                url = (row.pop(url_col) or "").strip()
                if url:
                    yield url, {k: v for k, v in row.items() if k is not None}
        else:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise UserError(f"{path}, line {n}: not a JSON object; each line of a .jsonl list is one") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(url_col), str):
                    raise UserError(f"{path}, line {n}: no {url_col!r} string field; name the field with --url-col")
                url = obj.pop(url_col).strip()
                yield url, obj


def url_jobs(name: str, rows: Iterator[tuple[str, dict]], base_url: str | None) -> Iterator[Job]:
    for url, extra in rows:
        record = {(f"list_{k}" if k in RESERVED else k): v for k, v in extra.items()}
        yield Job(hash_key(name, url), rebase(url, base_url), {"list_url": url, **record} if base_url else record)


def fetch_urls(
    list_file: str | os.PathLike,
    name: str,
    out: str | os.PathLike,
    url_col: str = "url",
    fmt: str | None = None,
    limit: int | None = None,
    base_url: str | None = None,
    overrides: dict | None = None,
    progress: bool = False,
) -> FetchSummary:
    """Fetch every URL of a list into the dataset folder ``out`` (at most ``limit`` images in the dataset)."""
    check_base_url(base_url, limit)
    path = Path(list_file)
    if not path.is_file():
        raise UserError(f"the URL list {path} does not exist; give a .txt, .csv, .tsv or .jsonl file")
    opts = with_overrides(FetchOptions(), overrides)
    first = next(read_url_list(path, url_col, fmt), None)  # fail on a bad list before creating anything
    if first is None:
        raise UserError(f"the URL list {path} holds no URLs")
    with Dataset.create(out, opts.durability) as ds:
        jobs = url_jobs(name, read_url_list(path, url_col, fmt), base_url)
        stats = fetch(ds, name, jobs, target=limit, options=opts, progress=progress)
        summary = describe_run(stats, "fetch urls", out, {"list": str(path)},
                     {"list": str(path), "url_col": url_col, "limit": limit, "base_url": base_url})
        ds.write_stats(summary.to_json())
    return summary
