"""Beyond one machine: the data stages on Ray (a local cluster of 2 CPUs, started and stopped here) and shard sets
in object storage (moto's S3 server on 127.0.0.1). Skipped only when the extras are not installed
(``pip install -e '.[test,ray,s3]'``, which CI does)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import drawn_image, fixture_path, kill_when, png_bytes, write_drawn_folder
from PIL import Image

from gandata import engine, shardset, storage
from gandata.crop import CropOptions, crop
from gandata.datasets import Dataset
from gandata.dedupe import dedupe
from gandata.errors import UserError
from gandata.shard import ShardOptions, shard

pytestmark = pytest.mark.slow  # trains, starts processes, or runs Ray

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install -e '.[ray]'")

OPTS = dict(size=32, maxcount=8, min_shards=2, val_fraction=0.2)


@pytest.fixture(scope="module")
def cluster(s3_server):
    """A local Ray of 2 CPUs for this module (no dashboard); the stages join it instead of starting their own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A dataset folder with labels, an exact duplicate and a damaged file; a plain image folder; tars."""
    base = tmp_path_factory.mktemp("inputs")
    with Dataset.create(base / "raw") as ds:
        for i in range(30):  # fields of mixed types (made one type in the shards), and fields shard writes over
            ds.add(f"k{i:03d}", png_bytes(drawn_image(i, (48, 40))), "png",
                   {"width": 48, "height": 40, "source": "t", "category": ["a", "b", "c"][i % 3],
                    "score": [i, i / 2, "n/a"][i % 3], "meta": {"n": i} if i % 2 else {"n": str(i)},
                    "split": "old", "label": i, "cluster": None if i % 4 else "x"})
        ds.add("copy", png_bytes(drawn_image(4, (48, 40))), "png", {"width": 48, "height": 40, "source": "t",
                                                                    "category": "a"})
        ds.add("broken", b"\x89PNG\r\n\x1a\n not really", "png", {"width": 1, "height": 1, "source": "t",
                                                                  "category": "b"})
    write_drawn_folder(base / "folder", 12, start=100)
    (base / "folder" / "junk.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    shard([base / "folder"], base / "set", "f", ShardOptions(size=40, maxcount=4, min_shards=1, val_fraction=0))
    (base / "tars").mkdir()  # another tool's tars (no dataset.json), one of them damaged
    for t in sorted((base / "set").rglob("*.tar")):
        (base / "tars" / t.name).write_bytes(t.read_bytes())
    (base / "tars" / "g-000000.tar").write_bytes(t.read_bytes()[:1500])
    return {"raw": base / "raw", "folder": base / "folder", "tars": base / "tars"}


def _files(folder: Path) -> dict[str, bytes]:
    """Every file a run left in its output folder, by its path there (but a kept work folder: --keep-work)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".work" not in p.relative_to(folder).parts}


def _objects(url: str) -> dict[str, bytes]:
    """Every object under a prefix, by its path below it."""
    fs, root = storage.filesystem(url)
    return {k[len(root) + 1:]: fs.cat_file(k) for k in sorted(fs.find(root))}


@pytest.mark.parametrize("src, extra", [
    ("raw", dict(label_field="category", dedupe="near")),
    ("folder", {}),
    ("tars", dict(format="jpg")),
])
def test_shard_on_ray_is_byte_identical_to_local(cluster, inputs, tmp_path, monkeypatch, src, extra):
    """Every output file the same, with the input and the output named relative to the current folder as a user
    names them (the Ray tasks are given absolute paths; dataset.json and rejected.jsonl name them as written)."""
    monkeypatch.chdir(tmp_path)
    given = os.path.relpath(inputs[src], tmp_path)
    opts = ShardOptions(**OPTS, **extra)
    local = shard([given], "local", "x", opts)
    on_ray = shard([given], "ray", "x", opts, engine="ray", task_size=5)
    assert on_ray.tasks["map"]["ran"] == on_ray.tasks["map"]["tasks"] >= 2
    made = _files(tmp_path / "local")
    assert _files(tmp_path / "ray") == made and {"dataset.json", "rejected.jsonl", ".lock"} < set(made)
    described = json.loads(made["dataset.json"])
    assert [s["path"] for s in described["sources"]] == [given]
    assert all(not Path(r["origin"]).is_absolute() for r in map(json.loads, made["rejected.jsonl"].splitlines()))
    assert (on_ray.counts, on_ray.removed) == (local.counts, local.removed)
    assert on_ray.patterns["train"] == "ray" + local.patterns["train"][len("local"):]  # as written: ray/gen-…
    assert sum(local.removed.values()) >= 1  # the damaged or duplicate inputs were met on both engines
    if src == "raw":  # the JSON was harmonised the same way, though the ray engine never held the records
        js = json.loads(next(m for m in _tar_members(tmp_path / "ray") if m[0].endswith(".json"))[1])
        assert isinstance(js["score"], str) and isinstance(js["meta"]["n"], str) and js["split"] in ("train", "val")


def _tar_members(folder: Path) -> list[tuple[str, bytes]]:
    import tarfile

    out = []
    for tar in sorted(folder.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            out += [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    return out


def _rows(folder: Path) -> list[str]:
    """A dataset's manifest rows, sorted (the same manifest modulo row order), without the time they were written."""
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return sorted(json.dumps({k: v for k, v in r.items() if k not in ("added", "time")}, sort_keys=True) for r in rows)


def test_crop_on_ray_writes_the_same_dataset(cluster, tmp_path):
    cascade = fixture_path("cascades/lbpcascade_animeface.xml")
    src = tmp_path / "anime"
    src.mkdir()
    for f in sorted(fixture_path("anime").iterdir()):
        (src / f.name).write_bytes(f.read_bytes())
    (src / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    opts = dict(size=48, min_face=24)
    local = crop(src, tmp_path / "local", CropOptions(**opts), cascade=cascade)
    on_ray = crop(src, tmp_path / "ray", CropOptions(**opts), cascade=cascade, engine="ray", task_size=3,
                  debug_grid=tmp_path / "grid.png")
    assert local.crops >= 3 and local.unreadable == on_ray.unreadable == 1
    assert (on_ray.images, on_ray.crops, on_ray.with_faces, on_ray.methods) == \
        (local.images, local.crops, local.with_faces, local.methods)
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    for row in json.loads(json.dumps(_rows(tmp_path / "local"))):
        path = json.loads(row)["path"]
        assert (tmp_path / "ray" / path).read_bytes() == (tmp_path / "local" / path).read_bytes()
    assert (tmp_path / "grid.png").stat().st_size > 1000
    again = crop(src, tmp_path / "ray", CropOptions(**opts), cascade=cascade, engine="ray", task_size=3)
    assert again.crops == 0 and again.skipped_done == local.images - 1 and again.unreadable == 1  # read again


def test_dedupe_on_ray_finds_the_same_clusters(cluster, inputs, tmp_path):
    srcs = [inputs["raw"], inputs["tars"]]
    local = dedupe(srcs, report=tmp_path / "local.jsonl")
    on_ray = dedupe(srcs, report=tmp_path / "ray.jsonl", engine="ray", task_size=4, work=str(tmp_path / "w"))
    assert local.clusters >= 1 and local.unreadable >= 2
    assert (on_ray.samples, on_ray.clusters, on_ray.unreadable, on_ray.near_duplicates) == \
        (local.samples, local.clusters, local.unreadable, local.near_duplicates)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


class HostServer:
    """Images on two host names (127.0.0.1 and localhost, one server; each host draws its own): each request waits
    a little, and the most requests in flight at once per Host header is kept. ``/img/e*`` answers 503 while
    ``failing`` is set, ``/img/m*`` 404, ``/img/same*`` the bytes of 127.0.0.1's ``/img/0.png`` (a duplicate
    body)."""

    def __init__(self) -> None:
        from aiohttp import web
        from renderserver import draw_png

        from gandata.localserver import LocalServer

        self.failing = True
        self.inflight: Counter = Counter()
        self.most: Counter = Counter()
        self.paths: list[str] = []

        async def image(request):
            host, name = request.headers["Host"].split(":")[0], request.match_info["name"]
            self.paths.append(request.path)
            self.inflight[host] += 1
            self.most[host] = max(self.most[host], self.inflight[host])
            try:
                await asyncio.sleep(0.03)
            finally:
                self.inflight[host] -= 1
            if name.startswith("e") and self.failing:
                return web.Response(status=503, text="busy")
            if name.startswith("m"):
                return web.Response(status=404, text="gone")
            seed = "127.0.0.1/img/0.png" if name.startswith("same") else host + request.path
            return web.Response(body=draw_png(seed), content_type="image/png")

        self._server = LocalServer([("GET", "/img/{name}", image)])
        self.port = self._server.port

    def close(self) -> None:
        self._server.close()


def _url_list(path: Path, port: int) -> Path:
    names = [f"{i}.png" for i in range(24)] + ["e1.png", "e2.png", "m1.png"]
    urls = [f"http://{host}:{port}/img/{n}" for n in names for host in ("127.0.0.1", "localhost")]
    urls.append(f"http://127.0.0.1:{port}/img/same1.png")  # the body of 127.0.0.1's 0.png again
    path.write_text("\n".join(urls + urls[:3]) + "\n")  # three listed twice
    return path


def _manifest(root: Path) -> list[dict]:
    return sorted((json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()),
                  key=lambda r: r["key"])


def _failures(root: Path) -> set:
    return {(f["key"], f["error"], f.get("permanent")) for f in Dataset(root).open_failures().values()}


def test_fetch_on_ray_matches_local_and_keeps_each_hosts_limit(cluster, tmp_path):
    from gandata.sources.urls import fetch_urls

    server = HostServer()
    try:
        lst = _url_list(tmp_path / "list.txt", server.port)
        polite = {"concurrency": 3, "per_host": 2, "retries": 0, "backoff": 0.01}
        local = fetch_urls(lst, "u", tmp_path / "local", overrides=polite)
        server.most.clear()
        on_ray = fetch_urls(lst, "u", tmp_path / "ray", overrides=polite, engine="ray", host_groups=2)
        assert max(server.most.values()) <= 2 and set(server.most) == {"127.0.0.1", "localhost"}
        assert (on_ray.accepted, on_ray.skipped_known) == (local.accepted, local.skipped_known) == (48, 3)
        assert on_ray.failures == local.failures == {"HTTP 503": 4, "HTTP 404": 2, "duplicate body": 1}
        assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")  # the same rows, in another order
        for r in _manifest(tmp_path / "ray"):
            assert (tmp_path / "ray" / r["path"]).read_bytes() == (tmp_path / "local" / r["path"]).read_bytes()
        assert _failures(tmp_path / "ray") == _failures(tmp_path / "local")
        assert not list((tmp_path / "ray" / ".work" / "ray").glob("fetch-*/"))  # every part moved in, then removed

        server.failing = False  # the busy host is back: only the transient failures are asked again
        for eng in ("local", "ray"):
            server.paths.clear()
            again = fetch_urls(lst, "u", tmp_path / eng, overrides=polite, engine=eng, retry_failed=True)
            assert again.accepted == 4 and sorted(server.paths) == sorted(["/img/e1.png", "/img/e2.png"] * 2)
            assert {f[1] for f in _failures(tmp_path / eng)} == {"HTTP 404", "duplicate body"}
    finally:
        server.close()


def test_a_url_list_in_object_storage(s3, tmp_path):
    from gandata.sources.urls import fetch_urls

    server = HostServer()
    try:
        lst = _url_list(tmp_path / "list.txt", server.port)
        storage.put(f"{s3}/lists/anime.txt", lst.read_bytes())
        got = fetch_urls(f"{s3}/lists/anime.txt", "u", tmp_path / "raw", overrides={"retries": 0})
        assert got.accepted == 48 and got.skipped_known == 3
    finally:
        server.close()


def test_fetch_and_crop_write_their_datasets_to_object_storage(s3, tmp_path):
    """`--out s3://…` for the stages that write dataset folders: staged locally, published (images, then the
    manifest), resumed from the staging folder, and on a machine without it from the store's manifest."""
    server = HostServer()
    env = {**os.environ, "GANDATA_CACHE": str(tmp_path / "cache")}

    def gandata(*args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "gandata", *args, "--json"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    try:
        lst = _url_list(tmp_path / "list.txt", server.port)
        raw, faces = f"{s3}/data/u/raw", f"{s3}/data/u/faces"
        got = gandata("fetch", "urls", str(lst), "--name", "u", "--out", raw, "--retries", "0")
        assert got["accepted"] == 48 and got["out"] == raw
        rows = [json.loads(line) for line in storage.read_bytes(f"{raw}/manifest.jsonl").splitlines()]
        assert len(rows) == 48 and all(storage.exists(f"{raw}/{r['path']}") for r in rows)
        assert b"HTTP 404" in storage.read_bytes(f"{raw}/failures.jsonl")
        staged = list((tmp_path / "cache" / "staged-datasets").iterdir())
        assert len(staged) == 1 and not list(staged[0].rglob("*.png"))  # published images leave the staging folder
        assert gandata("fetch", "urls", str(lst), "--name", "u", "--out", raw)["accepted"] == 0  # resumed
        shutil.rmtree(tmp_path / "cache" / "staged-datasets")  # another machine: only the store remains
        again = gandata("fetch", "urls", str(lst), "--name", "u", "--out", raw)
        assert again["accepted"] == 0 and again["skipped_known"] >= 48
        crops = gandata("crop", "lego-faces", "--locator", "layout", "--src", raw, "--out", faces, "--size", "32")
        assert crops["images"] == 48 and crops["out"] == faces and storage.exists(f"{faces}/manifest.jsonl")
        sharded = shard([raw], tmp_path / "shards", "u", ShardOptions(size=16, min_shards=1))
        assert sharded.counts["total"] == 48
    finally:
        server.close()


def test_a_rerun_submits_only_the_tasks_without_a_marker(cluster, inputs, tmp_path):
    opts = ShardOptions(**OPTS, label_field="category")
    first = shard([inputs["raw"]], tmp_path / "s", "x", opts, engine="ray", task_size=4, keep_work=True)
    total = first.tasks["map"]["tasks"]
    markers = tmp_path / "s" / ".work" / "ray" / "markers"
    marked = sorted(markers.glob("map-*.json"))
    for m in marked[:3]:  # as if the run had been killed before these finished
        m.unlink()
    (markers.parent / f"{marked[3].stem}.bin").unlink()  # a finished task's part deleted by hand: made again
    (tmp_path / "s" / "dataset.json").unlink()
    again = shard([inputs["raw"]], tmp_path / "s", "x", opts, engine="ray", task_size=4, keep_work=True)
    assert again.tasks["map"] == {"tasks": total, "ran": 4, "skipped": total - 4}
    assert again.processed < first.processed and again.reused > 0
    local = shard([inputs["raw"]], tmp_path / "local", "x", opts)
    assert _files(tmp_path / "s") == _files(tmp_path / "local") and local.counts == again.counts
    assert not list(markers.glob("write-*.json"))  # write markers only bridge a killed write step


def test_a_killed_ray_run_run_again_does_only_the_missing_tasks(cluster, tmp_path):
    """SIGKILL the driver of ``gandata shard --engine ray`` once a few map tasks have left their markers; the same
    command again submits only the others, and the set is the local engine's."""
    src = tmp_path / "big"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(36):  # noise PNGs of 400² take a moment each to decode: the run is still going at the kill
        Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(src / f"n{i:02d}.png",
                                                                               compress_level=1)
    out, markers = tmp_path / "out", tmp_path / "out" / ".work" / "ray" / "markers"
    cmd = [sys.executable, "-m", "gandata", "shard", str(src), "--out", str(out), "--name", "n", "--size", "32",
           "--engine", "ray", "--task-size", "2", "--ray-address", ray.get_runtime_context().gcs_address]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: len(list(markers.glob("map-*.json"))) >= 3, timeout=120)
    finished = len(list(markers.glob("map-*.json")))
    assert finished < 18 and not (out / "dataset.json").exists()
    again = shard([src], out, "n", ShardOptions(size=32), engine="ray", task_size=2)
    assert again.tasks["map"]["tasks"] == 18 and again.tasks["map"]["skipped"] >= finished
    assert again.tasks["map"]["ran"] == 18 - again.tasks["map"]["skipped"] >= 1
    shard([src], tmp_path / "local", "n", ShardOptions(size=32))
    assert _files(out) == _files(tmp_path / "local")


def test_a_task_that_fails_once_is_retried_and_the_run_completes(cluster, tmp_path):
    tries = tmp_path / "tries"
    tries.mkdir()

    def flaky(n: int) -> dict:  # a local function: Ray ships it by value to its workers
        seen = len(list(tries.glob(f"{n}-*")))
        (tries / f"{n}-{seen}").touch()
        if n == 2 and seen == 0:
            raise ConnectionResetError("the object store hung up")
        return {"n": n, "square": n * n}

    tasks = [engine.Task(f"t{n}", (n,)) for n in range(4)]
    report = engine.run(flaky, tasks, str(tmp_path / "markers"))
    assert {k: v["square"] for k, v in report.results.items()} == {"t0": 0, "t1": 1, "t2": 4, "t3": 9}
    assert len(list(tries.glob("2-*"))) == 2 and len(list(tries.glob("0-*"))) == 1
    assert sorted(p.name for p in (tmp_path / "markers").iterdir()) == [f"t{n}.json" for n in range(4)]


def test_a_task_that_keeps_failing_stops_the_run_and_keeps_the_others(cluster, tmp_path):
    def broken(n: int) -> dict:
        if n == 1:
            raise ValueError("this input is bad")
        return {"n": n}

    tasks = [engine.Task(f"t{n}", (n,)) for n in range(3)]
    with pytest.raises(UserError, match="this input is bad"):
        engine.run(broken, tasks, str(tmp_path / "m"), retries=1)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["t0.json", "t2.json"]
    again = engine.run(lambda n: {"n": n, "fixed": True}, tasks, str(tmp_path / "m"))
    assert (again.ran, again.skipped) == (1, 2) and again.results["t1"]["fixed"]


def test_shards_written_to_s3_match_local_and_train_streams_them(cluster, s3, inputs, tmp_path):
    from gandata.trainers.metrics import evaluate
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    from gandata.shardset import resolve

    opts = ShardOptions(**OPTS, label_field="category")
    local = shard([inputs["raw"]], tmp_path / "local", "x", opts)
    for eng in ("local", "ray"):
        url = f"{s3}/sets/{eng}"
        remote = shard([inputs["raw"]], url, "x", opts, engine=eng, task_size=6)
        assert remote.counts == local.counts and remote.patterns["train"].startswith(url + "/gen-")
        assert _objects(url) == {k: v for k, v in _files(tmp_path / "local").items() if k != ".lock"}
    # and read back as an input: the set in the bucket sharded again, on both engines, the same
    for eng in ("local", "ray"):
        shard([f"{s3}/sets/ray"], tmp_path / f"again-{eng}", "y", ShardOptions(size=16, min_shards=1), engine=eng)
    assert _files(tmp_path / "again-ray") == _files(tmp_path / "again-local")
    assert json.loads((tmp_path / "again-local" / "dataset.json").read_text())["counts"]["total"] == \
        local.counts["total"]
    # a dataset folder copied to the bucket is an input too: the same tars as from the disk
    for f in sorted(inputs["raw"].rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            storage.put(f"{s3}/raw/{f.relative_to(inputs['raw']).as_posix()}", f.read_bytes())
    for eng in ("local", "ray"):
        shard([f"{s3}/raw"], tmp_path / f"from-s3-{eng}", "x", opts, engine=eng, task_size=6)
        tars = {k: v for k, v in _files(tmp_path / f"from-s3-{eng}").items() if k.endswith(".tar")}
        assert tars == {k: v for k, v in _files(tmp_path / "local").items() if k.endswith(".tar")}
    assert _files(tmp_path / "from-s3-ray") == _files(tmp_path / "from-s3-local")
    gen = shardset.read(f"{s3}/sets/ray").shards()[0]["name"].split("/")[0]
    found = dedupe([f"{s3}/sets/ray/{gen}/x-train-{{000000..000001}}.tar"], engine="ray", work=f"{s3}/dedupe-work")
    assert found.samples > 0 and storage.names(f"{s3}/dedupe-work")
    from gandata.inspection import inspect_path

    seen = inspect_path(f"{s3}/sets/ray", grid=f"{s3}/sheets/ray.png", grid_n=9)
    assert seen.samples == local.counts["total"] and seen.labels and storage.exists(f"{s3}/sheets/ray.png")
    urls, sset = resolve(f"{s3}/sets/ray")
    assert urls == [f"{s3}/sets/ray/{gen}/x-train-{i:06d}.tar" for i in range(len(urls))] and sset.labels
    out = tmp_path / "run"
    summary = train(TrainOptions(kind="cdcgan", shards=f"{s3}/sets/ray", out=str(out), kimg=0.05, batch=8,
                                 snap_kimg=0.05, ngf=8, ndf=8, nz=16, workers=0, shuffle=16, device="cpu", grid=9),
                    progress=False)
    assert summary.kimg >= 0.05 and sorted(out.glob("checkpoint-*.pt"))
    result = evaluate(out, f"{s3}/sets/ray", n=16, metrics=("kid",), extractor="tiny-random", progress=False)
    assert result.results and result.results[-1]["real"] == f"{s3}/sets/ray"
    assert result.results[-1]["n_real"] == local.counts["train"]


def test_an_object_store_path_without_its_extra_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fsspec(name, *a, **k):
        if name.startswith("fsspec"):
            raise ImportError("No module named 'fsspec'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_fsspec)
    with pytest.raises(UserError, match=r"pip install 'gandata\[s3\]'"):
        storage.exists("s3://bucket/x")


def test_an_unreachable_cluster_is_one_line_at_once(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        engine.connect(f"127.0.0.1:{port}")
    with pytest.raises(UserError, match="give HOST:PORT"):
        engine.connect("headnode")


def test_engine_results_are_read_back_from_markers_without_a_cluster(tmp_path):
    markers = tmp_path / "m"
    markers.mkdir()
    (markers / "a.json").write_text(json.dumps({"ok": 1}) + "\n")
    (markers / "b.json").write_text('{"torn')  # a marker cut short counts as not done
    report = engine.run(lambda: {"never": True}, [engine.Task("a")], str(markers))
    assert (report.ran, report.skipped, report.results) == (0, 1, {"a": {"ok": 1}})
    assert set(engine.done(str(markers))) == {"a"}
