"""Benchmark: images/s of `gandata fetch urls` vs img2dataset on the same local server, URL list and cores.

    python benchmarks/fetch.py                     # 3000 PNGs of 256×256 (≈100 KB), 3 rounds each, idle and load 8
    python benchmarks/fetch.py --n 30000 --rounds 1 --loads 8
    python benchmarks/fetch.py --all-configs       # also img2dataset without decoding, and resizing to JPEG

``--loads`` runs that many busy-looping processes meanwhile (a loaded machine: the reason a per-file fsync that
blocks a worker thread costs more than its own time). gandata runs with ``--durability batch`` (the default: files
fsynced in groups off the worker threads, before their manifest rows) and ``file`` (each file fsynced as it is
written, the previous behaviour). Wall time, CPU seconds and peak RSS come from GNU time.

A server process (aiohttp.web on 127.0.0.1) serves the PNGs from memory. gandata fetches every URL, decodes every
body fully to validate it and stores the original bytes. img2dataset runs three ways: doing the same work
(--resize_mode no --skip_reencode True: decode with cv2, keep the original bytes) — the comparison the goal is about
—, doing less (--disable_all_reencoding True: no decode at all), and as usually run (resize to 256, re-encode to
JPEG). Each round times the whole command (start-up included) on a fresh output folder; the median is reported.

img2dataset pins an old webdataset, so it lives in its own virtual environment (made here on first use in
benchmarks/.i2d-venv, or given with --i2d-venv).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_images(folder: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.png" for i in range(n)]
    rng = np.random.default_rng(0)
    for p in paths:
        if p.exists():
            continue
        arr = np.empty((256, 256, 3), dtype=np.uint8)
        arr[:] = rng.integers(0, 256, 3, dtype=np.uint8)  # a flat colour …
        arr[:128] = rng.integers(0, 256, (128, 256, 3), dtype=np.uint8)  # … under a noisy half: ≈100 KB PNGs
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        p.write_bytes(buf.getvalue())
    return paths


def serve(folder: str, port: int) -> None:
    from aiohttp import web

    bodies = {p.name: p.read_bytes() for p in Path(folder).glob("*.png")}

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["name"]], content_type="image/png")

    app = web.Application()
    app.router.add_get("/img/{name}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the benchmark server did not start")


def ensure_i2d(venv: Path) -> Path:
    exe = venv / "bin" / "img2dataset"
    if not exe.exists():
        print(f"installing img2dataset into {venv} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    return exe


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds, peak RSS in MB, and the run."""
    t0 = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{run.stderr[-2000:]}")
    user, sys_, rss = run.stderr.strip().splitlines()[-1].split()
    return dt, float(user) + float(sys_), int(rss) / 1024, run


def busy() -> None:
    while True:
        pass


def count_files(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.rglob(f"*{suffix}"))


def one_load(args: argparse.Namespace, load: int, gandata: list[str], i2d_common: list[str], i2d_env: dict,
             configs: dict) -> dict:
    runs: dict[str, list[tuple]] = {"gandata": [], "gandata (--durability file)": [], **{c: [] for c in configs}}
    stored: dict[str, int] = {}
    for r in range(args.rounds):
        for name in runs:
            out = args.work / "out"
            shutil.rmtree(out, ignore_errors=True)
            if name.startswith("gandata"):
                extra = ["--durability", "file"] if "file" in name else []
                dt, cpu, rss, run = timed(gandata + ["--out", str(out), *extra])
                stored[name] = json.loads(run.stdout)["total"]
            else:
                dt, cpu, rss, _ = timed(i2d_common + [f"--output_folder={out}", *configs[name]], i2d_env)
                stored[name] = count_files(out, ".png") + count_files(out, ".jpg")
            runs[name].append((dt, cpu, rss))
            print(f"load {load} round {r + 1} {name}: {dt:.2f} s, {cpu:.1f} CPU s, {rss:.0f} MB, "
                  f"{stored[name]} stored, {stored[name] / dt:.0f} img/s", flush=True)
    result = {
        name: {
            "median_s": round(statistics.median(t[0] for t in ts), 3),
            "img_per_s": round(args.n / statistics.median(t[0] for t in ts), 1),
            "cpu_s": round(statistics.median(t[1] for t in ts), 2),
            "peak_rss_mb": round(max(t[2] for t in ts)),
            "stored": stored[name],
        }
        for name, ts in runs.items()
    }
    g = result["gandata"]["img_per_s"]
    for name in runs:
        if name != "gandata":
            result[name]["gandata_speedup"] = round(g / result[name]["img_per_s"], 2)
    return {"load": load, "results": result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loads", default="0,8", help="busy processes running meanwhile, one setting per pass")
    ap.add_argument("--all-configs", action="store_true", help="also img2dataset without decoding and resizing")
    ap.add_argument("--work", type=Path, default=HERE / ".work-fetch")
    ap.add_argument("--i2d-venv", type=Path, default=HERE / ".i2d-venv")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    imgs = args.work / "imgs"
    make_images(imgs, args.n)
    i2d = ensure_i2d(args.i2d_venv)
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(imgs), "--port", str(port)])
    try:
        wait_for(port)
        urls = args.work / "urls.txt"
        urls.write_text("".join(f"http://127.0.0.1:{port}/img/{i:06d}.png\n" for i in range(args.n)))
        gandata = [sys.executable, "-m", "gandata.cli", "fetch", "urls", str(urls), "--name", "bench", "--json"]
        i2d_common = [str(i2d), f"--url_list={urls}", "--input_format=txt", "--output_format=files",
                      "--processes_count=2", "--thread_count=32", "--enable_wandb=False"]
        i2d_env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        configs = {
            # the same work as gandata: decode every image (cv2), keep the original bytes
            "img2dataset (decode, keep bytes)": ["--resize_mode=no", "--skip_reencode=True", "--encode_format=png",
                                                 "--encode_quality=6"],
        }
        if args.all_configs:
            # less work than gandata: stores whatever arrived, no decode, no validation
            configs["img2dataset (no decode)"] = ["--resize_mode=no", "--disable_all_reencoding=True",
                                                  "--encode_format=png", "--encode_quality=6"]
            # its usual use: decode, resize to 256, re-encode as JPEG
            configs["img2dataset (resize 256, jpg)"] = ["--image_size=256"]
        report = []
        for load in (int(x) for x in args.loads.split(",")):
            loaders = [multiprocessing.Process(target=busy, daemon=True) for _ in range(load)]
            for p in loaders:
                p.start()
            try:
                report.append(one_load(args, load, gandata, i2d_common, i2d_env, configs))
            finally:
                for p in loaders:
                    p.kill()
        print(json.dumps({"n": args.n, "cores": os.cpu_count(), "rounds": args.rounds, "by_load": report}, indent=2))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
