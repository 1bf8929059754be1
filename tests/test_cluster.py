"""``--engine ray`` as it is deployed: a head and a second node, each started by ``ray start`` from its own folder
with its own ``--temp-dir`` (the second in its own mount namespace, where a tmpfs hides a folder the driver has),
and the driver run as a user runs it, from a third folder. Both nodes are stopped by the test, by the PIDs it
started and their children. Skipped where Ray is not installed or ``unshare`` is not allowed (it needs root)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import write_drawn_folder

pytestmark = pytest.mark.slow  # trains, starts processes, or runs Ray

ray = pytest.importorskip("ray", reason="needs Ray: pip install -e '.[ray]'")
psutil = pytest.importorskip("psutil", reason="Ray's psutil stops the nodes")

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return r.returncode == 0


class Node:
    """One ``ray start --block`` process, its folder and its temp dir; stopped with every process under it."""

    def __init__(self, args: list[str], folder: Path, env: dict, private: Path | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [RAY, "start", *args, "--block", "--disable-usage-stats"]
        if private is not None:  # its own mount namespace: a tmpfs over `private`, which the driver sees whole
            inner = " ".join(f"'{a}'" for a in cmd)
            cmd = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none '{private}' && exec {inner}"]
        self.log = open(folder.parent / f"{folder.name}.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.folder = folder

    def tree(self) -> list:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        procs = self.tree()  # taken before any dies: children re-parented to init are still in it
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=20)


@pytest.fixture(scope="module")
def cluster():
    if not _unshare_works():
        pytest.skip("needs `unshare -m` (root) to give the second node its own view of one folder")
    base = Path(tempfile.mkdtemp(prefix="gdc-"))  # short: Ray's socket paths must fit AF_UNIX's 107 bytes
    private = base / "driver-only"
    private.mkdir()
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = Node(["--head", f"--port={port}", "--num-cpus=1", f"--temp-dir={base / 'head-tmp'}",
                 "--include-dashboard=false"], base / "head-folder", env)
    address = f"127.0.0.1:{port}"
    nodes = [head]
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or head.proc.poll() is not None:
                    pytest.fail("the Ray head did not start")
                time.sleep(0.5)
        second = Node([f"--address={address}", "--num-cpus=1", f"--temp-dir={base / 'node-tmp'}"],
                      base / "node-folder", env, private=private)
        nodes.append(second)
        probe = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        while True:
            r = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, env=env,
                               timeout=120)
            if r.stdout.strip() == "2":
                break
            if time.monotonic() > deadline or second.proc.poll() is not None:
                pytest.fail(f"the second node did not join: {r.stdout} {r.stderr[-500:]}")
            time.sleep(1)
        yield {"address": address, "base": base, "private": private, "env": env, "nodes": nodes}
    finally:
        for n in reversed(nodes):
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


def gandata(cluster, *args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={**cluster["env"], "GANDATA_CACHE": str(cwd / "cache")}, timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("gandata:") or "Traceback" in line]
    assert r.returncode in (1, 2) and errors == lines[-1:], r.stderr[-3000:]
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


def _strays(cluster) -> list[Path]:
    """What a run left in the nodes' own folders (a relative path resolved on a worker lands there)."""
    return [p for n in cluster["nodes"] for p in n.folder.rglob("*")]


def test_relative_inputs_and_outputs_give_the_whole_set_on_two_nodes(cluster, tmp_path):
    """The driver in its own folder, the nodes in theirs: every output file is the local engine's, byte for byte
    (dataset.json names the input as written, not as the driver's machine lays it out)."""
    work = tmp_path / "work"
    write_drawn_folder(work / "imgs", 60, size=(40, 40))
    local = gandata(cluster, "shard", "imgs", "--out", "local", "--name", "r", "--size", "16", "--json", cwd=work)
    assert local.returncode == 0, local.stderr
    r = gandata(cluster, "shard", "imgs", "--out", "out", "--name", "r", "--size", "16", "--engine", "ray",
                "--ray-address", cluster["address"], "--task-size", "10", "--json", cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # exactly one JSON object on stdout
    assert summary["counts"]["total"] == 60 and summary["tasks"]["map"]["tasks"] == 6
    made = {p.relative_to(work / "local"): p.read_bytes() for p in (work / "local").rglob("*") if p.is_file()}
    assert {p.relative_to(work / "out"): p.read_bytes() for p in (work / "out").rglob("*") if p.is_file()} == made
    assert len([p for p in made if p.suffix == ".tar"]) == summary["shards"]["train"] + summary["shards"]["val"]
    assert json.loads(made[Path("dataset.json")])["sources"][0]["path"] == "imgs"
    assert not _strays(cluster)


def test_fetch_urls_with_the_default_data_dir_fetches_everything(cluster, tmp_path):
    from aiohttp import web
    from conftest import drawn_image, png_bytes

    from gandata.localserver import LocalServer

    async def image(request):
        return web.Response(body=png_bytes(drawn_image(int(request.match_info["n"]), (24, 24))),
                            content_type="image/png")

    with LocalServer([("GET", "/{n}.png", image)]) as server:
        work = tmp_path / "work"
        work.mkdir()
        hosts = [server.url, server.url.replace("127.0.0.1", "localhost")]
        (work / "list.txt").write_text("".join(f"{hosts[i % 2]}/{i}.png\n" for i in range(40)))
        r = gandata(cluster, "fetch", "urls", "list.txt", "--name", "h", "--engine", "ray", "--ray-address",
                    cluster["address"], "--json", cwd=work)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["accepted"] == 40
        assert len((work / "data" / "h" / "raw" / "manifest.jsonl").read_text().splitlines()) == 40
    assert not _strays(cluster)


def test_a_path_only_the_driver_sees_is_one_line_naming_the_node(cluster, tmp_path):
    imgs = cluster["private"] / "imgs"
    write_drawn_folder(imgs, 12, size=(32, 32))
    out = tmp_path / "out"
    r = gandata(cluster, "shard", str(imgs), "--out", str(out), "--name", "p", "--size", "16", "--engine", "ray",
                "--ray-address", cluster["address"], cwd=tmp_path)
    line = one_line(r, "cannot see", str(imgs), "shared file system")
    assert "node " in line
    assert not list(out.rglob("*.tar")) and not (out / "dataset.json").exists()
    private_out = cluster["private"] / "out"
    r = gandata(cluster, "shard", str(tmp_path / "nowhere"), cwd=tmp_path)  # sanity: a plain bad input is one line
    assert r.returncode == 1
    write_drawn_folder(tmp_path / "imgs", 12, size=(32, 32))
    r = gandata(cluster, "shard", str(tmp_path / "imgs"), "--out", str(private_out), "--name", "p", "--size", "16",
                "--engine", "ray", "--ray-address", cluster["address"], cwd=tmp_path)
    one_line(r, "cannot write", str(private_out))
    assert not list(private_out.rglob("*.tar"))


def test_an_address_that_is_not_ray_is_one_line_at_once(cluster, tmp_path):
    import http.server
    import threading

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    write_drawn_folder(tmp_path / "imgs", 4, size=(32, 32))
    t = time.monotonic()
    r = gandata(cluster, "shard", "imgs", "--engine", "ray", "--ray-address", f"127.0.0.1:{httpd.server_address[1]}",
                cwd=tmp_path, timeout=60)
    one_line(r, "is not a Ray cluster")
    assert time.monotonic() - t < 30
    httpd.shutdown()


def _noise(folder: Path, n: int, side: int) -> Path:
    """PNGs of noise: each takes a moment to decode, so a run is still going when the test steps in."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(folder / f"n{i:02d}.png",
                                                                                 compress_level=0)
    return folder


def _wait_for_markers(proc: subprocess.Popen, out: Path, n: int) -> Path:
    """Wait until ``n`` map tasks of the run writing ``out`` have left their markers (the run still going)."""
    markers = out / ".work" / "ray" / "markers"
    deadline = time.monotonic() + 120
    while len(list(markers.glob("map-*.json"))) < n:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return markers


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_the_driver_ends_within_seconds_on_a_signal_and_a_rerun_finishes(sig, cluster, tmp_path):
    src = _noise(tmp_path / "noise", 24, 1200)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gandata.cli", "shard", str(src), "--out", str(out), "--name", "n", "--size", "16",
           "--engine", "ray", "--task-size", "1", "--ray-address", cluster["address"], "--json"]
    env = {**cluster["env"], "GANDATA_CACHE": str(tmp_path / "c")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    markers = _wait_for_markers(proc, out, 2)
    proc.send_signal(getattr(signal, sig))
    t = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - t < 15 and proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("gandata: interrupted") and stdout == ""
    done = len(list(markers.glob("map-*.json")))
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["counts"]["total"] == 24 and summary["tasks"]["map"]["skipped"] >= done > 0


@pytest.mark.parametrize("when", ["while Ray starts", "after the summary"])
def test_sigterm_at_any_point_of_a_ray_command_is_the_interrupted_line(when, tmp_path):
    """A command that starts its own local Ray, signalled while ``ray.init`` runs (once: "cannot reach the Ray
    cluster at None (15)") and just after its summary, while Python and Ray shut down (once: "Exception ignored in
    atexit callback", exit 139): the interrupted line, exit 130, nothing else on stderr but Ray's own log lines."""
    write_drawn_folder(tmp_path / "imgs", 4, size=(32, 32))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "GANDATA_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "gandata.cli", "shard", "imgs", "--out", "out", "--name", "s",
                             "--size", "16", "--engine", "ray", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    driver = psutil.Process(proc.pid)
    summary = ""
    if when == "while Ray starts":  # its GCS is up, the driver not yet connected
        deadline = time.monotonic() + 120
        while not any("gcs_server" in p.name() for p in _alive(driver.children(recursive=True))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.01)
    else:
        summary = proc.stdout.readline()
    ray_processes = driver.children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        for p in _alive(ray_processes):  # a local Ray's helpers end a while after their driver: not left behind here
            p.kill()
    lines = stderr.strip().splitlines()
    assert proc.returncode == 130 and lines[-1].startswith("gandata: interrupted"), stderr[-3000:]
    assert not [line for line in lines[:-1] if "Traceback" in line or "Exception" in line or "gandata:" in line], \
        stderr[-3000:]
    if summary:
        assert json.loads(summary + stdout)["counts"]["total"] == 4  # stdout: the one JSON object, whole


def _alive(procs: list) -> list:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_json_stays_one_object_when_a_node_dies_mid_run(cluster, tmp_path):
    """Kill the second node while its tasks run: Ray retries them on the head, its own messages about the lost node
    go to stderr, and stdout is exactly the one JSON object. (Last of the cluster tests: the node stays dead.)"""
    src = _noise(tmp_path / "noise", 48, 400)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gandata.cli", "shard", str(src), "--out", str(out), "--name", "n",
                             "--size", "16", "--engine", "ray", "--task-size", "2", "--ray-address",
                             cluster["address"], "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**cluster["env"], "GANDATA_CACHE": str(tmp_path / "c")})
    _wait_for_markers(proc, out, 3)
    cluster["nodes"][1].stop()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout)  # the whole of stdout is one object
    assert summary["counts"]["total"] == 48


def test_a_file_missing_where_a_task_runs_fails_the_task_and_is_never_a_marker(tmp_path):
    """What a node that cannot see a listed file does, without a cluster: the task raises (Ray retries it, then the
    run fails), so no marker records the file as unreadable and a re-run on a node that sees it completes."""
    from gandata import engine
    from gandata.crop import CropOptions, crop_part
    from gandata.dedupe import hash_part
    from gandata.fetch import FetchOptions
    from gandata.inputs import MissingInput, open_input, partitions
    from gandata.shard import ShardOptions
    from gandata.shard_map import map_part
    from gandata.sources.urls import fetch_part

    imgs = tmp_path / "imgs"
    write_drawn_folder(imgs, 4, size=(32, 32))
    (part,) = partitions([open_input(str(imgs))], 10, [])
    (imgs / "img00002.png").unlink()  # listed by the driver, gone where the task runs
    with pytest.raises(MissingInput, match="img00002.png is not there on"):
        map_part("t", part, ShardOptions(size=16).pixel_options(), str(tmp_path / "work"))
    with pytest.raises(MissingInput):
        crop_part(part, [], CropOptions(lego=True, locator="layout"), None, (255, 255, 255), (255, 255, 255), 0,
                  str(tmp_path / "crop.bin"))
    with pytest.raises(MissingInput):
        hash_part(part)
    with pytest.raises(MissingInput, match="must see --out"):
        fetch_part("n", str(tmp_path / "part"), str(tmp_path / "jobs.jsonl"), FetchOptions())
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").rglob("*.json"))
    assert issubclass(MissingInput, engine.TRANSIENT)  # retried by Ray before the run fails


# ------------------------------------------------------------------------------ a store that fails or freezes


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of a server: ``freeze()`` keeps accepting and holding connections but
    forwards nothing (a store that hangs), ``stop()`` refuses every connection (a store that went away)."""

    def __init__(self, upstream: tuple[str, int]):
        import threading

        self.upstream, self.frozen, self.stopped = upstream, False, False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(client)
            if self.frozen:
                continue  # held open, never answered
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self.conns.append(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket):
        try:
            while True:
                data = a.recv(65536)
                while self.frozen and not self.stopped:
                    time.sleep(0.1)
                if not data or self.stopped:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def freeze(self):
        self.frozen = True

    def stop(self):
        self.stopped = True
        for s in [self.sock, *self.conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def store(tmp_path):
    """moto's S3 server behind a :class:`Proxy`, with a shard set in it; the environment that reaches it."""
    pytest.importorskip("s3fs", reason="needs the s3 extra: pip install -e '.[s3]'")
    moto = pytest.importorskip("moto.server", reason="needs moto's server: pip install 'moto[server]'")
    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proxy = Proxy(server.get_host_and_port())
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "GANDATA_STORE_TIMEOUT": "1",
           "GANDATA_CACHE": str(tmp_path / "cache")}
    import s3fs

    try:  # moto's buckets live in this process: an earlier test's is still there
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, key="testing",
                          secret="testing", skip_instance_cache=True).mkdir("flaky")
    except FileExistsError:
        pass
    write_drawn_folder(tmp_path / "imgs", 24, size=(40, 40))
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "shard", str(tmp_path / "imgs"), "--out", "s3://flaky/set",
                        "--name", "f", "--size", "32", "--min-shards", "2", "--val-fraction", "0"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    yield proxy, env
    proxy.stop()
    server.stop()


@pytest.mark.parametrize("failure", ["stop", "freeze"])
def test_the_trainer_stops_in_one_line_with_a_checkpoint_when_the_store_fails(failure, store, tmp_path):
    proxy, env = store
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gandata.cli", "train", "dcgan", "--shards", "s3://flaky/set",
                             "--out", str(run), "--kimg", "100", "--snap-kimg", "0.024", "--batch", "4", "--ngf", "4",
                             "--ndf", "4", "--nz", "4", "--workers", "0", "--device", "cpu", "--shuffle", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(run.glob("checkpoint-*.pt")):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint in 120 s"
        time.sleep(0.2)
    getattr(proxy, failure)()
    t = time.monotonic()
    try:
        _, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the trainer hung on a store that was made to {failure}")
    waited = time.monotonic() - t
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and lines[-1].startswith("gandata: error:") and "Traceback" not in err, err[-3000:]
    assert "could not be read after 3 tries" in lines[-1] and "saved" in lines[-1], lines[-1]
    saved = lines[-1].rsplit("saved ", 1)[1].split(" first")[0]
    assert Path(saved).is_file() and waited < 150


def test_a_finished_set_in_object_storage_is_neither_read_nor_written_again(store, tmp_path, caplog):
    """The same ``gandata shard`` again over a finished set in a bucket: a GET of dataset.json and of each tar it
    names (their sha256s checked); no PUT, no DELETE, nothing else read (counted on the S3 stand-in's own request
    log)."""
    import logging
    import re

    _, env = store
    caplog.set_level(logging.INFO, logger="werkzeug")
    caplog.clear()
    r = subprocess.run([sys.executable, "-m", "gandata.cli", "shard", str(tmp_path / "imgs"), "--out",
                        "s3://flaky/set", "--name", "f", "--size", "32", "--min-shards", "2", "--val-fraction", "0",
                        "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["finished_before"]
    calls = [m.groups() for m in (re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/\S*)', line) for line in caplog.messages)
             if m]  # (a 206 answer's line is coloured)
    assert calls, "the stand-in logged no request"
    assert not [c for c in calls if c[0] in ("PUT", "POST", "DELETE")], calls
    tars = [p for m, p in calls if m == "GET" and p.endswith(".tar")]
    assert tars and all(p.startswith("/flaky/set/gen-") for p in tars), calls
    assert not [p for m, p in calls if m == "GET" and not p.endswith(("dataset.json", ".tar")) and "list-type" not in p
                and "prefix=" not in p], calls


def test_one_host_is_paced_as_one_whatever_its_spelling(tmp_path):
    """localhost, LOCALHOST, localhost. and localhost:PORT are one host: never more requests in flight than its
    limit, and one Ray host group."""
    import asyncio

    from aiohttp import web
    from conftest import drawn_image, png_bytes

    from gandata.datasets import Dataset
    from gandata.fetch import FetchOptions, Job, fetch, host_key
    from gandata.localserver import LocalServer
    from gandata.sources.urls import host_group

    state = {"now": 0, "most": 0}

    async def image(request):
        state["now"] += 1
        state["most"] = max(state["most"], state["now"])
        await asyncio.sleep(0.05)
        state["now"] -= 1
        return web.Response(body=png_bytes(drawn_image(int(request.match_info["n"]), (16, 16))),
                            content_type="image/png")

    with LocalServer([("GET", "/{n}.png", image)]) as server:
        port = server.port
        spellings = [f"http://localhost:{port}", f"http://LOCALHOST:{port}", f"http://LocalHost:{port}",
                     f"HTTP://localHOST:{port}"]  # a trailing dot is one more spelling (below; no DNS for it here)
        jobs = [Job(f"k{i}", f"{spellings[i % 4]}/{i}.png", {}) for i in range(24)]
        with Dataset.create(tmp_path / "ds") as ds:
            stats = fetch(ds, "t", jobs, options=FetchOptions(concurrency=16, per_host=1, rate=0, retries=0))
    assert stats["accepted"] == 24 and state["most"] == 1, stats["failures"]
    assert len({host_key(j.url) for j in jobs}) == 1 and len({host_group(j.url, 64) for j in jobs}) == 1
    assert host_key("https://Example.COM:443/x") == host_key("https://example.com./y") == "example.com"
    assert host_key(f"http://localhost.:{port}/") == host_key(f"http://localhost:{port}/")
    assert host_key("http://example.com:8080/") == "example.com:8080"
