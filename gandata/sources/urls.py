"""A user's own list of image URLs (txt, csv/tsv, jsonl), e.g. lists of anime illustrations.

The list is read as a stream (never held whole in memory), and once through before the first download, so that a line
it cannot read exactly (its text decoded by :mod:`gandata.textfiles`) is refused before anything is fetched; every
column other than the URL is kept in the sample's record. A sample's key is a hash of its URL, so a URL listed twice
is fetched once and a re-run skips what is already stored.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from .. import storage
from ..datasets import Dataset, hash_key
from ..declarations import FETCH_URLS
from ..declarations import URL_LIST_FORMATS as FORMATS
from ..errors import UserError, hint, named
from ..fetch import (
    RESERVED,
    FetchOptions,
    FetchSummary,
    Job,
    describe_run,
    fetch,
    host_key,
    rebase,
)
from ..fileio import atomic_write, read_jsonl
from ..inputs import MissingInput
from ..textfiles import stream_lines
from . import Source

_DEFAULT = FETCH_URLS.defaults()


def list_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise UserError(f"{named('format')} must be one of {', '.join(FORMATS)} (got {fmt!r})")
        return fmt
    suffixes = [s.lower().lstrip(".") for s in path.suffixes]
    for s in reversed(suffixes):
        if s in FORMATS:
            return s
        if s in ("json", "ndjson"):
            return "jsonl"
    return "txt"


def read_url_list(path: str | os.PathLike, url_col: str = "url", fmt: str | None = None) -> Iterator[tuple[str, dict]]:
    """Yield (url, other columns) for every row, streaming. Raises UserError for a list it cannot read at all, and for
    a row it cannot read exactly (naming the line), after the rows before it. ``path`` may be in object storage
    (``s3://bucket/lists/anime.csv``). The text is decoded by :mod:`gandata.textfiles` (UTF-8 with or without a
    byte-order mark, UTF-16 with one; any line ends)."""
    remote = storage.is_url(path)
    path = str(path) if remote else Path(path)
    kind = list_format(Path(str(path).rsplit("/", 1)[-1]), fmt)
    try:
        f = storage.open_stream(path) if remote else open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read the URL list {path} ({e.strerror or e})") from None
    with f:
        yield from _rows(stream_lines(f, str(path)), kind, path, url_col)


def _rows(lines: Iterator[str], kind: str, path, url_col: str) -> Iterator[tuple[str, dict]]:
    """(url, other columns) of each row of a list's lines."""
    if kind == "txt":
        for line in lines:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line, {}
    elif kind in ("csv", "tsv"):
        # strict: a quote left open is refused, not a field that swallows every row after it
        sep = "\t" if kind == "tsv" else ","
        reader = csv.DictReader(lines, delimiter=sep, strict=True)
        row_line = 1
        try:
            if reader.fieldnames is None or url_col not in reader.fieldnames:
                cols = ", ".join(reader.fieldnames or [])
                raise UserError(f"{path} has no {url_col!r} column (columns: {cols}); name it with "
                                f"{hint('url_col', 'COLUMN')}")
            row_line = reader.line_num + 1
            for row in reader:
                if any(row.get(None) or ()):  # more fields than the header names: a separator left unquoted
                    raise UserError(f"{path}, line {row_line}: more fields than the header's {len(reader.fieldnames)}"
                                    f"; write a field that holds {'a tab' if kind == 'tsv' else 'a comma'} in double "
                                    'quotes ("a, b")')
                url = (row.pop(url_col) or "").strip()
                if url:
                    yield url, {k: v for k, v in row.items() if k is not None}
                row_line = reader.line_num + 1
        except csv.Error as e:
            raise UserError(f"{path}, line {row_line}: not {kind.upper()} ({e}); a field that holds {sep!r}, a "
                            'quote or a line end is written in double quotes, each quote in it doubled ("")') from None
    else:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise UserError(f"{path}, line {n}: not a JSON object; each line of a .jsonl list is one") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(url_col), str):
                raise UserError(f"{path}, line {n}: no {url_col!r} string field; name the field with "
                                f"{hint('url_col', 'FIELD')}")
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
    url_col: str = _DEFAULT["url_col"],
    format: str | None = None,  # noqa: A002 (the declared name: --format)
    limit: int | None = None,
    base_url: str | None = None,
    overrides: dict | None = None,
    progress: bool = False,
    engine: str = _DEFAULT["engine"],
    ray_address: str | None = None,
    retry_failed: bool = _DEFAULT["retry_failed"],
    host_groups: int = _DEFAULT["host_groups"],
    workers: int = _DEFAULT["workers"],
) -> FetchSummary:
    """Fetch every URL of a list into the dataset folder ``out`` (at most ``limit`` images in the dataset).

    ``retry_failed``: only the URLs whose last attempt failed for a reason worth another try (a timeout, a 5xx, a
    429 past --max-wait; not a 404) — the failures recorded in ``out/failures.jsonl``. ``engine="ray"``: the hosts
    are dealt to ``host_groups`` tasks by a hash of the host name, so every host is fetched by one task at a time and
    its politeness (requests in flight, rate) holds for the whole cluster as on one machine."""
    src = Source.open("urls", None, base_url, overrides, has_manifest=False, name=name, url_col=url_col,
                      format=format, limit=limit, engine=engine, host_groups=host_groups, workers=workers)
    opts = src.engine
    path = str(list_file) if storage.is_url(list_file) else Path(list_file)
    if not (storage.exists(path) if isinstance(path, str) else path.is_file()):
        raise UserError(f"the URL list {path} does not exist; give a .txt, .csv, .tsv or .jsonl file")
    if engine == "ray":  # every path a task sees is resolved here: a worker's current folder is its node's
        out = storage.absolute(out)
    # the whole list is read once before anything is created: a line it cannot read, anywhere, is refused before
    # the first download (a stream: a list of millions of lines costs seconds, never its size in memory)
    if not sum(1 for _ in read_url_list(path, url_col, format)):
        raise UserError(f"the URL list {path} holds no URLs")
    settings = {"list": str(path), "url_col": url_col, "limit": limit, "base_url": base_url,
                "retry_failed": retry_failed}
    with Dataset.create(out, opts.durability) as ds:
        jobs: Iterator[Job] = url_jobs(name, read_url_list(path, url_col, format), base_url)
        retry = None
        if retry_failed:
            retry = {k for k, f in ds.open_failures().items() if not f.get("permanent")}
            jobs = (j for j in jobs if j.key in retry)
        if engine == "ray":
            stats = _fetch_on_ray(ds, name, jobs, opts, host_groups, ray_address, workers, progress)
        else:
            stats = fetch(ds, name, jobs, target=limit, options=opts, progress=progress,
                          total_hint=len(retry) if retry is not None else None)
        summary = describe_run(stats, "fetch urls", out, {"list": str(path)}, settings)
        ds.write_stats(summary.to_json())
    return summary


def host_group(url: str, groups: int) -> int:
    """The task a URL's host belongs to: a hash of its :func:`~gandata.fetch.host_key` (lower case, no trailing dot,
    the port unless it is the default)."""
    host = host_key(url)
    return int.from_bytes(hashlib.sha256(host.encode()).digest()[:8], "little") % groups


def fetch_part(name: str, part: str, job_file: str, options: FetchOptions) -> dict:
    """A Ray task of ``fetch urls --engine ray``: the jobs of one host group (``job_file``, JSONL) fetched into the
    dataset folder ``part`` by the same engine as a local run; a task started again resumes from that folder."""
    if not os.path.isfile(job_file):  # a machine that cannot see the driver's folder: the task fails, never "done"
        raise MissingInput(errno.ENOENT, f"{job_file} is not there on {socket.gethostname()}; every machine of the "
                           f"cluster must see {named('out')} at the same path (a shared file system)")
    jobs = (Job(j["key"], j["url"], j["record"]) for j in read_jsonl(job_file))
    with Dataset.create(part, options.durability) as ds:
        stats = fetch(ds, name, jobs, options=options)
    stats.pop("options", None)
    return stats


def _fetch_on_ray(ds: Dataset, name: str, jobs: Iterator[Job], opts: FetchOptions, groups: int,
                  address: str | None, workers: int, progress: bool) -> dict:
    """Deal the jobs to host groups (one task each), run the tasks, and move each finished part into ``ds`` as it
    comes back. Returns the run's stats, summed over the tasks."""
    from .. import engine

    t0 = time.monotonic()
    work = ds.work_folder("ray")
    skip = ds.keys() | {k for k, f in ds.open_failures().items() if f.get("permanent")}
    lines: dict[int, list[str]] = {}
    skipped = 0
    for job in jobs:
        if job.key in skip:
            skipped += 1
            continue
        skip.add(job.key)  # a URL listed twice is one job
        lines.setdefault(host_group(job.url, groups), []).append(
            json.dumps({"key": job.key, "url": job.url, "record": job.record}, sort_keys=True) + "\n")
    tasks = []
    for group in sorted(lines):
        body = "".join(lines[group]).encode()
        task_id = f"fetch-{hashlib.sha256(body).hexdigest()[:24]}"  # named by its jobs: a re-run resumes it
        job_file = work / f"{task_id}.jsonl"
        if not job_file.exists():
            atomic_write(job_file, body)
        tasks.append(engine.Task(task_id, (name, str(work / task_id), str(job_file), opts)))
    total: Counter = Counter()
    failures: Counter = Counter()
    adopted = 0
    start_total = len(ds)

    def take(task: engine.Task, stats: dict) -> None:
        nonlocal adopted
        part = work / task.id
        if part.is_dir():
            counts = ds.adopt(Dataset(part))
            adopted += counts["adopted"]
            total["duplicate_bodies"] += counts["duplicate_bodies"]
            if counts["duplicate_bodies"]:
                failures["duplicate body"] += counts["duplicate_bodies"]
            shutil.rmtree(part)
        (work / f"{task.id}.jsonl").unlink(missing_ok=True)
        for k in ("retries", "duplicate_bodies", "deferred", "bytes"):
            total[k] += stats.get(k) or 0
        total["memory_peak"] = max(total["memory_peak"], stats.get("memory_peak") or 0)
        failures.update(stats.get("failures") or {})
        if stats.get("stopped"):
            total["stopped"] += 1

    # a finished task whose part is gone before it was moved in (deleted by hand) runs again
    report = engine.run(fetch_part, tasks, str(work / "markers"), address=address, workers=workers,
                        label=f"fetch {name}", progress=progress, on_result=take,
                        intact=lambda t: (work / t.id).is_dir(), writes=[str(work)])
    seconds = time.monotonic() - t0
    return {
        "source": name, "accepted": adopted, "total": len(ds), "target": None, "complete": True,
        "failures": dict(failures.most_common()), "retries": total["retries"], "pages": 0,
        "duplicate_bodies": total["duplicate_bodies"], "skipped_known": skipped, "deferred": total["deferred"],
        "bytes": total["bytes"], "memory_peak": total["memory_peak"], "seconds": round(seconds, 3),
        "rate": round((len(ds) - start_total) / seconds, 1) if seconds > 0 else None,
        "stopped": (f"{total['stopped']} of {len(tasks)} host groups stopped early (their circuit breaker or a "
                    "site's refusal; see failures.jsonl); run the same command again to continue")
        if total["stopped"] else None,
        "interrupted": False,
        "options": {**{k: v for k, v in asdict(opts).items() if k != "headers"}, "engine": "ray",
                    "host_groups": groups, "tasks": report.to_json()},
    }
