"""Benchmark: the data stages on one process (``--engine local``) and on Ray (``--engine ray``), Ray's cost per task,
and a simulated cluster fetching from rate-limited hosts.

    pip install -e '.[ray]'
    python benchmarks/scale.py                          # 800 JPEGs, all parts
    python benchmarks/scale.py --n 2000 --parts stages

Parts:

* ``stages``: images/s of ``shard`` (512² JPEGs → 64-px PNG shards) and ``crop anime-faces`` (the real cascade) with
  the local engine at 1 and 2 worker threads and the Ray engine at 1 and 2 tasks at once (a local Ray of 2 CPUs,
  tasks of ``--task-size`` images), each on a fresh output folder and an empty hash cache; the same inputs as
  benchmarks/shard.py (distinct 512² crops of the 12 real anime tiles of ../shared/fixtures). Every Ray output is
  checked byte for byte against the local one.
* ``overhead``: what one Ray task costs beyond its work — 400 tasks that do nothing, through the same
  ``gandata.engine.run`` (submission, marker write, result), seconds per task.
* ``fetch``: ``fetch urls --engine ray`` against H image hosts (H servers on 127.0.0.1, one port each: a host is
  a host:port) that answer after 40 ms, with politeness ``--rate R`` per host and 4 requests in flight per task;
  W tasks at once for W = 1, 2, 4, 8, 16 on a local Ray of 16 logical CPUs (fetching waits on the network, not the
  CPU). Each host is in one task (host groups = H), so images/s should grow with W until every host is busy, then
  stay at H × R: the politeness limit. The servers record every request's time per host; the table shows the
  busiest second any host saw.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shard import SHARED, make_inputs  # noqa: E402  (benchmarks/shard.py: the same inputs)


def files(folder: Path) -> dict[str, bytes]:
    """The tars, and dataset.json less its record of the options (it names --workers, which changes nothing)."""
    import json

    out = {p.name: p.read_bytes() for p in sorted(folder.rglob("*.tar"))}
    info = json.loads((folder / "dataset.json").read_text())
    info.pop("options")
    return {**out, "dataset.json": json.dumps(info).encode()}


def stages(n: int, task_size: int, tmp: Path) -> list[str]:
    import ray

    from gandata.crop import CropOptions, crop
    from gandata.shard import ShardOptions, shard

    src = HERE / ".work-shard"
    make_inputs(src, n)
    src = tmp / "inputs"
    src.mkdir()
    for p in sorted((HERE / ".work-shard").glob("*.jpg"))[:n]:
        (src / p.name).symlink_to(p)
    cascade = SHARED / "cascades" / "lbpcascade_animeface.xml"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = ["| stage | engine | workers | seconds | images/s | same output as local |",
            "| --- | --- | --- | --- | --- | --- |"]
    try:
        for stage in ("shard", "crop"):
            reference = None
            for engine in ("local", "ray"):
                for w in (1, 2):
                    out = tmp / f"{stage}-{engine}-{w}"
                    os.environ["GANDATA_CACHE"] = str(tmp / f"cache-{stage}-{engine}-{w}")  # no hashes from before
                    t0 = time.perf_counter()
                    if stage == "shard":
                        shard([src], out, "b", ShardOptions(workers=w), engine=engine, task_size=task_size)
                        got = files(out)
                    else:
                        crop(src, out, CropOptions(size=64, workers=w), cascade=cascade, engine=engine,
                             task_size=task_size)
                        got = {p.name: p.read_bytes() for p in sorted((out / "images").rglob("*.png"))}
                    dt = time.perf_counter() - t0
                    reference = reference or got
                    rows.append(f"| {stage} | {engine} | {w} | {dt:.2f} | {n / dt:.0f} | {got == reference} |")
                    print(rows[-1], flush=True)
                    shutil.rmtree(out)
    finally:
        ray.shutdown()
    return rows


def overhead(tmp: Path) -> list[str]:
    import ray

    from gandata import engine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        engine.run(lambda i: {"i": i}, [engine.Task(f"warm{i}", (i,)) for i in range(8)], str(tmp / "warm"))
        times = []
        for r in range(3):
            tasks = [engine.Task(f"t{i}", (i,)) for i in range(400)]
            t0 = time.perf_counter()
            engine.run(lambda i: {"i": i}, tasks, str(tmp / f"m{r}"))
            times.append((time.perf_counter() - t0) / len(tasks))
            t0 = time.perf_counter()
            report = engine.run(lambda i: {"i": i}, tasks, str(tmp / f"m{r}"))  # all done: read back from markers
            assert report.skipped == 400
            times_skip = (time.perf_counter() - t0) / len(tasks)
    finally:
        ray.shutdown()
    med = statistics.median(times)
    line = (f"Ray task overhead (2 CPUs, a task that does nothing, marker included): {med * 1000:.1f} ms per task "
            f"(runs: {', '.join(f'{t * 1000:.1f}' for t in times)}); a re-run reading 400 markers back: "
            f"{times_skip * 1000:.2f} ms per task")
    print(line, flush=True)
    return [line]


def fetch_sim(hosts: int, rate: float, per_host_urls: int, tmp: Path) -> list[str]:
    import ray
    from aiohttp import web
    from PIL import Image

    from gandata.localserver import LocalServer
    from gandata.sources.urls import fetch_urls

    seen: dict[int, list[float]] = defaultdict(list)

    def png(seed: str) -> bytes:
        import hashlib

        rgb = hashlib.sha256(seed.encode()).digest()[:3]
        buf = io.BytesIO()
        Image.new("RGB", (24, 24), tuple(rgb)).save(buf, "PNG")
        return buf.getvalue()

    def handler(port_box: list):
        async def image(request):
            seen[port_box[0]].append(time.monotonic())
            await asyncio.sleep(0.04)
            return web.Response(body=png(f"{port_box[0]}{request.path}"), content_type="image/png")

        return image

    servers = []
    for _ in range(hosts):
        box: list = [0]
        s = LocalServer([("GET", "/img/{name}", handler(box))])
        box[0] = s.port
        servers.append(s)
    ray.init(num_cpus=16, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = ["| tasks at once | images/s | per-host limit × hosts | busiest second of any host |",
            "| --- | --- | --- | --- |"]
    try:
        for w in (1, 2, 4, 8, 16):
            seen.clear()
            lst = tmp / f"list-{w}.txt"
            lst.write_text("".join(f"http://127.0.0.1:{s.port}/img/{w}-{i}.png\n" for i in range(per_host_urls)
                                   for s in servers))
            t0 = time.perf_counter()
            summary = fetch_urls(lst, "sim", tmp / f"sim-{w}", engine="ray", host_groups=hosts, workers=w,
                                 overrides={"rate": rate, "concurrency": 4, "per_host": 4})
            dt = time.perf_counter() - t0
            assert summary.accepted == hosts * per_host_urls, summary
            busiest = max(max(sum(1 for u in ts if t <= u < t + 1.0) for t in ts) for ts in seen.values())
            rows.append(f"| {w} | {summary.accepted / dt:.1f} | {hosts * rate:g} | {busiest} |")
            print(rows[-1], flush=True)
    finally:
        ray.shutdown()
        for s in servers:
            s.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=800, help="images for the stages part")
    ap.add_argument("--task-size", type=int, default=100, help="images per Ray task (stages part)")
    ap.add_argument("--parts", default="stages,overhead,fetch")
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second per host (fetch part)")
    ap.add_argument("--per-host", type=int, default=30, help="URLs per host (fetch part)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    with tempfile.TemporaryDirectory(prefix="gandata-scale-") as tmp:
        tmp = Path(tmp)
        out = []
        if "stages" in parts:
            out += stages(a.n, a.task_size, tmp) + [""]
        if "overhead" in parts:
            out += overhead(tmp) + [""]
        if "fetch" in parts:
            out += fetch_sim(a.hosts, a.rate, a.per_host, tmp)
    print("\n".join(out))


if __name__ == "__main__":
    main()
