"""Benchmark: peak memory (RSS) of each command on inputs built to push it, at its defaults and at a tighter budget.

    python benchmarks/memory.py              # all: fetch, crop, shard, inspect, dedupe
    python benchmarks/memory.py --only fetch

* fetch: 80 distinct PNG bodies of ~48 MB (4000² noise) from 2 local hosts (two servers on 127.0.0.1), 80 requests
  in flight (``--concurrency 80``): without a budget, 80 bodies would be held at once.
* crop / shard / inspect --grid / dedupe: 6 images of 7900² (62 Mpx; 3 JPEG, 3 PNG), 2 workers.
* the baseline: the same command on one 512² JPEG (interpreter, libraries, models).

Each command runs as its own process under GNU time (``/usr/bin/time -f %M``): its peak RSS, not counting the
benchmark's own (a child forked from a large parent starts with the parent's RSS as its high-water mark).
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
CASCADE = HERE.parent.parent / "shared" / "fixtures" / "cascades" / "lbpcascade_animeface.xml"
GANDATA = [sys.executable, "-m", "gandata"]


def peak_mb(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Peak RSS in MB of ``cmd`` run with an empty hash cache (a cached hash would skip the decode)."""
    with tempfile.TemporaryDirectory() as cache:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "GANDATA_CACHE": cache})
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 0:
        print(f"  ! {' '.join(cmd[2:])} exited {proc.returncode}: {lines[-2:]}")
    return int(lines[-1]) / 1024, proc.returncode


def with_chunk(png: bytes, i: int) -> bytes:
    """The same picture, distinct bytes: a tEXt chunk before IEND (``png`` may be just its IEND)."""
    data = b"n\0" + str(i).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


def bench_fetch(work: Path) -> list[tuple]:
    from aiohttp import web

    from gandata.localserver import LocalServer

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4000, 4000, 3), np.uint8)).save(buf, "PNG",
                                                                                              compress_level=0)
    png = buf.getvalue()

    async def image(request):  # streamed from the one picture: the servers stay small
        body = memoryview(with_chunk(png[-12:], int(request.match_info["n"])))
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(png) - 12 + len(body)
        await resp.prepare(request)
        for i in range(0, len(png) - 12, 1 << 20):
            await resp.write(png[i:min(i + (1 << 20), len(png) - 12)])
        await resp.write(body)
        return resp

    rows = []
    with LocalServer([("GET", "/{n}.png", image)]) as a, LocalServer([("GET", "/{n}.png", image)]) as b:
        urls = work / "urls.txt"
        urls.write_text("".join(f"{(a if i % 2 else b).url}/{i}.png\n" for i in range(80)))
        (work / "one.txt").write_text(f"{a.url}/0.png\n")
        # the baseline: one body
        base, _ = peak_mb([*GANDATA, "fetch", "urls", "one.txt", "--name", "one", "--out", "one"], work)
        for memory in (None, 256):
            flags = ["--memory", str(memory)] if memory else []
            out = f"raw{memory or ''}"
            mb, _ = peak_mb([*GANDATA, "fetch", "urls", "urls.txt", "--name", "big", "--out", out, "--concurrency",
                             "80", *flags], work)
            stored = len(list((work / out / "images").rglob("*.png"))) if (work / out / "images").exists() else "?"
            rows.append(("fetch urls", f"80 × {len(png) / 1e6:.0f} MB PNG, 2 hosts, 80 in flight",
                         f"--memory {memory or '512 (default)'}", base, mb, f"{stored} stored"))
    return rows


def big_images(folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).resize((7900, 7900), Image.BILINEAR)
    for i in range(6):
        im = small.rotate(90 * i)
        if i % 2:
            im.save(folder / f"b{i}.png", compress_level=1)
        else:
            im.save(folder / f"b{i}.jpg", quality=90)


def bench_images(work: Path, only: set[str]) -> list[tuple]:
    big, one = work / "big", work / "one"
    big_images(big)
    one.mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (512, 512, 3), np.uint8)).save(one / "a.jpg")
    cascade = ["--cascade", str(CASCADE)]
    commands = {
        "crop": lambda src, out, extra: ["crop", "anime-faces", "--src", src, "--out", out, *cascade, *extra],
        "shard": lambda src, out, extra: ["shard", src, "--out", out, "--name", "m", *extra],
        "inspect": lambda src, out, extra: ["inspect", src, "--grid", f"{out}.png"],
        "dedupe": lambda src, out, extra: ["dedupe", src],
    }
    rows = []
    for name, make in commands.items():
        if name not in only:
            continue
        base, _ = peak_mb([*GANDATA, *make("one", f"{name}-one", [])], work)
        budgets = (None, 256) if name in ("crop", "shard") else (None,)
        for memory in budgets:
            extra = ["--memory", str(memory)] if memory else []
            mb, _ = peak_mb([*GANDATA, *make("big", f"{name}-big{memory or ''}", extra)], work)
            setting = f"--memory {memory or '1024 (default)'}" if name in ("crop", "shard") else "(defaults)"
            rows.append((name, "6 images of 7900² (3 JPEG, 3 PNG), 2 workers", setting, base, mb, ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="fetch,crop,shard,inspect,dedupe")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "fetch" in only:
            rows += bench_fetch(work)
        if only - {"fetch"}:
            rows += bench_images(work, only)
    print("| command | input | setting | baseline MB | peak MB | note |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for cmd, what, setting, base, mb, note in rows:
        print(f"| {cmd} | {what} | {setting} | {base:.0f} | {mb:.0f} | {note} |")


if __name__ == "__main__":
    main()
