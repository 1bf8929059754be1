"""Benchmark: the headline path at full size on one machine — ``fetch bitmoji`` → ``shard`` → one training
epoch's loader pass — at 20 000, 200 000 and 1 000 000 images, with wall time and peak RSS per stage and the
log-log slope of each against the number of images.

    python benchmarks/scale_local.py                            # 20k, 200k, 1M (about an hour on 2 cores)
    python benchmarks/scale_local.py --sizes 2000 20000 --root /tmp/gd-scale

The stand-in: a render server in its own process on 127.0.0.1 with Bitmoji's URL shapes (the trait catalogue and
the avatar preview URL of gandata's manifest), answering every avatar with a distinct 128² PNG: one of 32 drawn
avatars (gandata's demo drawing) with an 8×8 block of 4-px cells in a corner spelling 64 bits of a hash of the
query, so that no two avatars are the same image at 64 px either (exact dedupe keeps them all). No pacing
(``--rate 0``), 64 requests in flight.

Each stage is the installed command, run on its own under GNU time (``%M``: peak RSS of that process; ``%e``:
wall seconds), from scratch for each size (a fresh data folder, output folder and hash cache):

* fetch:  ``gandata fetch bitmoji --count N --base-url URL --traits FILE --rate 0 --concurrency 64``
* shard:  ``gandata shard DATA/bitmoji/raw --out SHARDS --size 64`` (exact dedupe, PNG, the defaults)
* loader: one epoch of the trainers' loader (``gandata.trainers.data.stream``: 2 worker processes, a 2 000-sample
  shuffle buffer, batches of 64) over the train shards: ⌈train / 64⌉ batches, each made a float tensor as a
  training step would. Its RSS is the main process's own peak (``getrusage(RUSAGE_SELF)``), and in brackets the
  largest peak of its two workers (``RUSAGE_CHILDREN`` once they are shut down and reaped): GNU time's figure for
  the command is the larger of the two, whichever process it was.

The slope is d log(wall) / d log(N) between consecutive sizes (1: linear) and for RSS the growth per added
image. A size's folders are removed after it is measured unless ``--keep``. Writes a Markdown table and a JSON
file of the rows to ``--report`` (default ROOT/scale_local.{md,json}).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("fetch", "shard", "loader")


# ---------------------------------------------------------------------------------------------- the stand-in


def serve(port_file: str) -> None:
    """The render server (this script run with ``--serve``): writes its URL to ``port_file``, then serves until
    killed."""
    import io

    import numpy as np
    from aiohttp import web
    from PIL import Image

    from gandata.demo import catalogue, draw_avatar
    from gandata.localserver import LocalServer

    bases: dict[int, np.ndarray] = {}

    async def assets(request):
        return web.json_response(catalogue())

    async def avatar(request):
        query = request.query_string.encode()
        digest = hashlib.sha256(request.match_info["view"].encode() + b"?" + query).digest()
        slot = digest[0] % 32
        if slot not in bases:
            q = dict(request.query)
            q["view"] = request.match_info["view"]
            bases[slot] = np.asarray(draw_avatar(q).convert("RGB"))
        im = bases[slot].copy()
        bits = np.unpackbits(np.frombuffer(digest[1:9], dtype=np.uint8)).reshape(8, 8)
        im[:32, :32] = np.kron(bits, np.ones((4, 4), dtype=np.uint8))[..., None] * 255
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "PNG", compress_level=1)
        return web.Response(body=buf.getvalue(), content_type="image/png")

    server = LocalServer([("GET", "/avatar-builder-v3/assets", assets),
                          ("GET", "/bm-preview/v3/avatar/{view}", avatar)], name="scale-server")
    Path(port_file + ".tmp").write_text(server.url)
    os.replace(port_file + ".tmp", port_file)
    while True:
        time.sleep(3600)


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port_file = root / "server-url"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
    for _ in range(300):
        if port_file.exists():
            return proc, port_file.read_text()
        if proc.poll() is not None:
            raise SystemExit("the stand-in server did not start")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the stand-in server did not start in 30 s")


# --------------------------------------------------------------------------------------------------- stages

LOADER = """
import gc, json, math, resource, sys, time
from gandata import shardset
from gandata.trainers.data import stream, to_device
import torch
ss = shardset.read(sys.argv[1])
urls = [str(t) for t in ss.tars("train")]
n = ss.info["counts"]["train"]
steps = math.ceil(n / 64)
t0 = time.monotonic()
seen = 0
loader = iter(stream(urls, 64, workers=2, shuffle=2000, seed=0))
for _ in range(steps):
    x, _y = to_device(next(loader), torch.device("cpu"))
    seen += x.shape[0]
seconds = round(time.monotonic() - t0, 2)
main_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
del loader  # shuts the workers down and reaps them: their peak is then the children's
gc.collect()
workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"samples": seen, "steps": steps, "seconds": seconds, "main_kb": main_kb, "workers_kb": workers_kb}))
"""


def timed(cmd: list[str], env: dict, log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of ``cmd`` under GNU time; its output to ``log``."""
    with open(log, "w") as f:
        proc = subprocess.run(["/usr/bin/time", "-f", "GNUTIME %e %M", *cmd], env=env, stdout=subprocess.PIPE,
                              stderr=f, text=True)
    tail = log.read_text().strip().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed (exit {proc.returncode}); see {log}:\n" + "\n".join(tail[-8:]))
    wall, rss_kb = next(line for line in reversed(tail) if line.startswith("GNUTIME")).split()[1:]
    return float(wall), int(rss_kb) / 1024, proc.stdout


def run_size(n: int, root: Path, url: str, traits: Path) -> list[dict]:
    here = root / f"n{n}"
    shutil.rmtree(here, ignore_errors=True)
    here.mkdir(parents=True)
    env = {**os.environ, "GANDATA_CACHE": str(here / "cache"), "GANDATA_DATA": str(here / "data")}
    gd = [sys.executable, "-m", "gandata"]
    rows = []
    wall, rss, _ = timed(gd + ["fetch", "bitmoji", "--count", str(n), "--base-url", url, "--traits", str(traits),
                               "--rate", "0", "--concurrency", "64", "--json"], env, here / "fetch.log")
    rows.append({"n": n, "stage": "fetch", "seconds": wall, "peak_mb": round(rss, 1), "images": n})
    print(f"  fetch  {n:>9}: {wall:8.1f} s {rss:7.1f} MB", flush=True)
    shards = here / "shards"
    wall, rss, out = timed(gd + ["shard", str(here / "data" / "bitmoji" / "raw"), "--out", str(shards), "--size",
                                 "64", "--json"], env, here / "shard.log")
    counts = json.loads(out)["counts"]
    if counts["total"] != n:
        raise SystemExit(f"shard kept {counts['total']} of {n} images; see {here / 'shard.log'}")
    rows.append({"n": n, "stage": "shard", "seconds": wall, "peak_mb": round(rss, 1), "images": n})
    print(f"  shard  {n:>9}: {wall:8.1f} s {rss:7.1f} MB", flush=True)
    wall, rss, out = timed([sys.executable, "-c", LOADER, str(shards)], env, here / "loader.log")
    seen = json.loads(out.strip().splitlines()[-1])
    main_mb, workers_mb = seen["main_kb"] / 1024, seen["workers_kb"] / 1024
    rows.append({"n": n, "stage": "loader", "seconds": wall, "peak_mb": round(main_mb, 1), "images": seen["samples"],
                 "loop_seconds": seen["seconds"], "worker_peak_mb": round(workers_mb, 1)})
    print(f"  loader {n:>9}: {wall:8.1f} s {main_mb:7.1f} MB, a worker {workers_mb:.1f} MB ({seen['samples']} "
          "samples)", flush=True)
    return rows


def slopes(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for stage in STAGES:
        rs = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["n"])
        out[stage] = [{"from": a["n"], "to": b["n"],
                       "time_slope": round(math.log(b["seconds"] / a["seconds"]) / math.log(b["n"] / a["n"]), 2),
                       "bytes_per_added_image": round((b["peak_mb"] - a["peak_mb"]) * 2**20 / (b["n"] - a["n"]), 1)}
                      for a, b in zip(rs, rs[1:])]
    return out


def worker(row: dict) -> str:
    """The loader's workers' peak beside its main process's, in the RSS column."""
    return f" (a worker: {row['worker_peak_mb']:.0f})" if "worker_peak_mb" in row else ""


def report(rows: list[dict], path: Path, machine: str) -> None:
    sl = slopes(rows)
    lines = [f"`python benchmarks/scale_local.py` — {datetime.date.today()}, {machine}", "",
             "| images | stage | wall s | images/s | peak RSS MB | time slope (from the size before) | RSS growth per "
             "added image |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (STAGES.index(r["stage"]), r["n"])):
        prev = next((s for s in sl[r["stage"]] if s["to"] == r["n"]), None)
        lines.append(f"| {r['n']:,} | {r['stage']} | {r['seconds']:.1f} | {r['images'] / r['seconds']:,.0f} | "
                     f"{r['peak_mb']:.0f}{worker(r)} | {prev['time_slope'] if prev else ''} | "
                     f"{str(prev['bytes_per_added_image']) + ' B' if prev else ''} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows, "slopes": sl}, indent=2))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000, 1_000_000])
    ap.add_argument("--root", default="/tmp/gd-scale", help="Work folder (about 9 GB at 1 M images).")
    ap.add_argument("--report", help="Where to write the table (.md) and rows (.json); default ROOT/scale_local.")
    ap.add_argument("--keep", action="store_true", help="Keep each size's data and shards.")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    from gandata import __version__
    from gandata.demo import catalogue

    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    out = Path(a.report) if a.report else root / "scale_local"
    traits = root / "traits.json"
    traits.write_text(json.dumps(catalogue()))
    machine = (f"gandata {__version__}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}")
    server, url = start_server(root)
    rows: list[dict] = []
    try:
        for n in a.sizes:
            print(f"{n} images", flush=True)
            rows += run_size(n, root, url, traits)
            out.parent.mkdir(parents=True, exist_ok=True)
            report(rows, out, machine)
            if not a.keep:
                shutil.rmtree(root / f"n{n}", ignore_errors=True)
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
