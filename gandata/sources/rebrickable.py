"""Rebrickable minifigures from the bulk CSV (``minifigs.csv.gz``: fig_num, name, num_parts, img_url).

The CSV is fetched from its real address and cached, or given with ``--csv`` (gzip or plain). It has no
categories or years (those need joins over other Rebrickable tables), so the records carry the name and the
number of parts.
"""

from __future__ import annotations

import csv
import gzip
import os

from .. import assets
from ..datasets import Dataset, make_key
from ..fetch import FetchSummary, Job, describe_run, fetch, rebase
from ..textfiles import text_lines
from . import Source

COLUMNS = ("fig_num", "name", "num_parts", "img_url")


def parse_minifigs_csv(data: bytes) -> list[dict]:
    """Rows of ``minifigs.csv`` (gzip or plain): ``[{fig_num, name, num_parts, img_url}]``."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"a damaged gzip file ({e})") from None
    reader = csv.DictReader(text_lines((data,)), strict=True)  # strict: a quote left open is refused
    rows = []
    line = 1
    try:
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"no {', '.join(missing)} column(s); the header is {reader.fieldnames}")
        line = reader.line_num + 1
        for row in reader:
            fewer = any(row[c] is None for c in COLUMNS)
            if fewer or any(row.get(None) or ()):
                raise ValueError(f"line {line} has {'fewer' if fewer else 'more'} fields than the header's "
                                 f"{len(reader.fieldnames)}")
            parts = row["num_parts"].strip()
            rows.append({"fig_num": row["fig_num"].strip(), "name": row["name"].strip(),
                         "num_parts": int(parts) if parts.isdigit() else None, "img_url": row["img_url"].strip()})
            line = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"line {line} is not CSV ({e})") from None
    if not rows:
        raise ValueError("no rows")
    return rows


def fetch_rebrickable(
    out: str | os.PathLike,
    csv: str | os.PathLike | None = None,
    limit: int | None = None,
    manifest: str | os.PathLike | None = None,
    base_url: str | None = None,
    overrides: dict | None = None,
    progress: bool = False,
) -> FetchSummary:
    """Fetch the minifigure images of Rebrickable's CSV into the dataset folder ``out``."""
    src = Source.open("rebrickable", manifest, base_url, overrides, limit=limit)
    manifest, manifest_path, opts = src.manifest, src.manifest_path, src.engine
    rows, origin = assets.asset("Rebrickable minifigs CSV", rebase(manifest["catalogues"]["minifigs"], base_url),
                                "csv", csv, parse=parse_minifigs_csv)
    no_image = [r["fig_num"] for r in rows if not r["img_url"]]
    jobs = [
        Job(
            make_key("rebrickable", r["fig_num"]),
            rebase(r["img_url"], base_url),
            {
                "fig_num": r["fig_num"],
                "name": r["name"],
                **({"num_parts": r["num_parts"]} if r["num_parts"] is not None else {}),
            },
        )
        for r in rows
        if r["img_url"]
    ]
    with Dataset.create(out, opts.durability) as ds:
        stats = fetch(ds, "rebrickable", jobs, target=limit, options=opts, progress=progress, total_hint=len(jobs))
        summary = describe_run(stats, "fetch rebrickable", out, {"manifest": manifest_path, "csv": origin},
                     {"csv": str(csv) if csv else None, "limit": limit, "base_url": base_url})
        summary.extra["without_image"] = len(no_image)
        ds.write_stats(summary.to_json())
    return summary
