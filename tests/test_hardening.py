"""The third hardening pass: what an attacker or a careless user sends to the commands that came last (pipeline
files, export, train, sample, eval) and to the fetch engine's bodies. Each case ends in one line, a recorded
failure, or a run that does what it says — never a command run, a file written outside its place, or unbounded
memory."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from conftest import drawn_image, png_bytes, tar_of, wait_for
from conftest import labelled_set as make_labelled_set

from gandata import shardset
from gandata.errors import UserError
from gandata.export import export
from gandata.pipeline import load, plan


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with one error line holding ``words``, the last on stderr (progress lines may come before
    it); no traceback."""
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("gandata:") or "Error" in line or "Traceback" in line]
    assert r.returncode in (1, 2) and errors == lines[-1:], r.stderr[-3000:]
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


class Server:
    """A 127.0.0.1 HTTP server whose answers the test sets: ``routes[path] = (status, headers, body)``."""

    def __init__(self):
        routes: dict = {}
        self.routes, self.hits = routes, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(h):  # noqa: N802
                self.hits.append(h.path)
                status, headers, body = routes.get(h.path.split("?")[0], (404, {}, b"not here"))
                h.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    h.send_header(k, v)
                h.end_headers()
                h.wfile.write(body)

            def log_message(h, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module", name="labelled_set")
def _labelled_set(tmp_path_factory) -> Path:
    """A small labelled shard set (32 px, 3 classes, train and val)."""
    return make_labelled_set(tmp_path_factory.mktemp("set"), 24, maxcount=8)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


# ------------------------------------------------------------------------------ security: commands in specs


@pytest.mark.parametrize("spec", [
    "{pipe:touch CANARY; cat a,a}.tar",
    "pipe:touch CANARY",
    " pipe:touch CANARY",
    "PIPE:touch CANARY",
    "a.tar::{x,pipe:touch CANARY}",
])
@pytest.mark.slow
def test_a_pipeline_file_never_runs_a_command_hidden_in_a_shard_spec(spec, tmp_path):
    canary = tmp_path / "canary"
    spec = spec.replace("CANARY", str(canary))
    tar_of(tmp_path / "a.tar", [("k.png", png_bytes(drawn_image(0, (16, 16))))])
    for table in (f"[train]\nkind = 'dcgan'\nshards = {json.dumps(spec)}\nkimg = 0.01\ndevice = 'cpu'\n",
                  f"[eval]\ntarget = 'runs/x'\nreal = {json.dumps(spec)}\nextractor = 'tiny-random'\n"):
        path = tmp_path / "p.toml"
        path.write_text(table)
        one_line(_cli("run", str(path), "--data-dir", str(tmp_path / "data"), cwd=tmp_path), "runs a shell command",
                 "allow_commands")
    assert not canary.exists()


def test_no_library_path_opens_a_command_it_was_not_allowed(tmp_path):
    canary = tmp_path / "canary"
    url = f"pipe:touch {canary}; cat {tmp_path}/a.tar"
    tar_of(tmp_path / "a.tar", [("k.png", png_bytes(drawn_image(0, (16, 16))))])
    with pytest.raises(shardset.CommandRefused):
        shardset.open_shard(url)
    from gandata.trainers import data as tdata

    with pytest.raises(UserError, match="runs a shell command"):
        list(tdata.in_order([url], 4))
    with pytest.raises(UserError, match="shell command"):
        export(f"{{{url},b}}", tmp_path / "x.zip")
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    with pytest.raises(UserError, match="shell command"):
        train(TrainOptions(kind="dcgan", shards=f"{{{url},{tmp_path}/a}}.tar", out=str(tmp_path / "run"),
                           device="cpu", kimg=0.01))
    assert not canary.exists()
    assert shardset.expand("{pipe:x,a}.tar::b.tar") == ["pipe:x.tar", "a.tar", "b.tar"]


@pytest.mark.slow
def test_the_command_line_may_still_read_a_pipe_it_was_given(tmp_path, labelled_set):
    src = sorted(labelled_set.rglob("*-train-*.tar"))[0]
    r = _cli("export", f"pipe:cat {src}", "--out", str(tmp_path / "x.zip"))
    assert r.returncode == 0, r.stderr


def test_shards_over_http_open_without_curl_and_fail_in_one_line(tmp_path, server, labelled_set, monkeypatch):
    src = sorted(labelled_set.rglob("*-train-*.tar"))[0]
    server.routes["/a.tar"] = (200, {}, src.read_bytes())
    server.routes["/page.tar"] = (200, {"Content-Type": "text/html"}, b"<html>" + b"x" * 2000 + b"</html>")
    s = export(f"{server.url}/a.tar", tmp_path / "a.zip")
    assert s.images > 0
    monkeypatch.setattr(shardset, "HTTP_TRIES", 1)
    for path, words in (("/missing.tar", "HTTP 404"), ("/page.tar", "damaged")):
        with pytest.raises(UserError, match=words):
            export(f"{server.url}{path}", tmp_path / "b.zip")
    with pytest.raises(UserError, match="cannot connect"):
        export("http://127.0.0.1:9/a.tar", tmp_path / "b.zip")
    with pytest.raises(UserError, match="cannot open ftp"):
        export("ftp://127.0.0.1/a.tar", tmp_path / "b.zip")


# ----------------------------------------------------------------------------- security: export keys as paths


HOSTILE_MEMBERS = ["../../escaped1", "/tmp/gandata-escaped2", "sub/../../../escaped3", "a b/../..//x", "./../y"]


@pytest.mark.parametrize("via", ["file", "http"])
def test_export_writes_only_inside_out_whatever_the_member_names(via, tmp_path, server):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    members = []
    for i, name in enumerate(HOSTILE_MEMBERS):
        members += [(f"{name}.png", png_bytes(drawn_image(i, (16, 16)))), (f"{name}.cls", b"0")]
    tar = tar_of(deep / "evil.tar", members)
    spec = str(tar)
    if via == "http":
        server.routes["/evil.tar"] = (200, {}, tar.read_bytes())
        spec = f"{server.url}/evil.tar"
    before = {p for p in tmp_path.rglob("*")}
    out = deep / "out"
    s = export(spec, out, format="imagefolder")
    after = {p for p in tmp_path.rglob("*")} - before
    assert after and all(out == p or out in p.parents for p in after), sorted(after)
    assert not Path("/tmp/gandata-escaped2.png").exists()
    files = [p for p in out.rglob("*.png")]
    assert s.images == len(HOSTILE_MEMBERS) == len(files)  # every sample counted is a file
    assert all(p.parent.parent == out for p in files)


def test_an_export_folder_is_exactly_what_the_export_says(tmp_path, labelled_set):
    out = tmp_path / "folder"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    with pytest.raises(UserError, match="did not write"):
        export(str(labelled_set), out, format="imagefolder")
    assert (out / "mine.txt").read_text() == "a user's file"
    (out / "mine.txt").unlink()
    first = export(str(labelled_set), out, format="imagefolder", split="all")
    (out / "0000_old-class").mkdir()
    (out / "0000_old-class" / "stale.png").write_bytes(b"x")
    victim = next(p for p in out.rglob("*.png") if p.parent.name != "0000_old-class")
    victim.write_bytes(b"another resolution")
    again = export(str(labelled_set), out, format="imagefolder", split="train")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix != ".json" and p.name != ".gandata-export")
    assert len(files) == again.images < first.images and not (out / "0000_old-class").exists()
    assert b"another" not in b"".join(p.read_bytes()[:16] for p in files)


def test_duplicate_keys_across_tars_are_all_written(tmp_path):
    a = tar_of(tmp_path / "a.tar", [("k.png", png_bytes(drawn_image(1, (8, 8))))])
    tar_of(tmp_path / "b.tar", [("k.png", png_bytes(drawn_image(2, (8, 8))))])
    s = export(str(a.with_name("{a,b}.tar")), tmp_path / "out", format="imagefolder")
    assert s.images == 2 == len(list((tmp_path / "out").rglob("*.png")))


# --------------------------------------------------------------------------- security: pipeline output paths


@pytest.mark.parametrize("table", [
    "[pipeline]\ndata_dir = 'ELSEWHERE'\n[shard]\nsize = 8\n",
    "[shard]\nsrc = 'imgs'\nout = 'ELSEWHERE'\n",
    "[shard]\nsrc = 'imgs'\nout = '../../escaped'\n",
    "[shard]\nsrc = 'imgs'\nout = 'data/../../escaped'\n",
    "[shard]\nsrc = 'imgs'\nout = 's3://someone-elses/bucket'\n",
    "[fetch]\nsource = 'urls'\nurl_list = 'l.txt'\nout = 'ELSEWHERE'\n",
    "[train]\nkind = 'dcgan'\nshards = 'x'\nout = 'ELSEWHERE'\n",
    "[crop]\nkind = 'lego-faces'\nsrc = 'imgs'\ndebug_grid = 'ELSEWHERE/g.png'\n",
    "[eval]\ntarget = 'ELSEWHERE'\nreal = 'x'\n",
])
def test_a_pipeline_file_writes_only_inside_its_workspace(table, tmp_path, monkeypatch):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    path = work / "p.toml"
    path.write_text(table.replace("ELSEWHERE", str(elsewhere)))
    with pytest.raises(UserError, match=r"writes (outside the working directory|to object storage).*allow_outside"):
        plan(load(path), "p.toml", work / "data")
    r = _cli("run", str(path), "--data-dir", str(work / "data"), cwd=work)
    one_line(r, "allow_outside")
    assert not elsewhere.exists() and not (tmp_path / "escaped").exists()
    plan(load(path, ["pipeline.allow_outside=true"]), "p.toml", work / "data")  # the command line may say so
    path.write_text("[pipeline]\nallow_outside = true\n" + table.replace("[pipeline]\n", "")
                    .replace("ELSEWHERE", str(elsewhere)))
    plan(load(path), "p.toml", work / "data")  # and the file itself
    if "s3://" not in table and ".." not in table:
        path.write_text(table.replace("ELSEWHERE", str(elsewhere / "x")))
        plan(load(path), "p.toml", elsewhere)  # inside the data dir the command line gave


# ------------------------------------------------------------------------ security: compressed HTTP bodies


def _bomb(mib: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(z.compress(block) for _ in range(mib)) + z.flush()


@pytest.mark.slow
def test_a_gzip_bomb_stops_at_the_size_cap_as_it_inflates(tmp_path, server):
    bomb = _bomb(512)
    assert len(bomb) < 1 << 20
    good = png_bytes(drawn_image(5, (64, 64)))
    server.routes.update({f"/bomb{i}.png": (200, {"Content-Encoding": "gzip", "Content-Type": "image/png"}, bomb)
                          for i in range(2)})
    server.routes["/deflate.png"] = (200, {"Content-Encoding": "deflate"}, zlib.compress(good))
    server.routes["/gzip.png"] = (200, {"Content-Encoding": "gzip"}, gzip.compress(good))
    server.routes["/br.png"] = (200, {"Content-Encoding": "br"}, b"??")
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{server.url}{p}\n" for p in ("/bomb0.png", "/bomb1.png", "/deflate.png", "/gzip.png",
                                                         "/br.png")))
    proc = subprocess.Popen([sys.executable, "-m", "gandata.cli", "fetch", "urls", str(lst), "--name", "b", "--out",
                             str(tmp_path / "raw"), "--memory", "16", "--retries", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(timeout=120)
    stats = json.loads(out)
    assert stats["accepted"] == 1  # gzip and deflate of one image: the same body, stored once
    fails = [json.loads(line) for line in (tmp_path / "raw" / "failures.jsonl").read_text().splitlines()]
    errors = sorted(f["error"] for f in fails)
    assert errors[:2] == ["body too large (over 50000000 bytes decoded)"] * 2, errors
    assert any("unsupported Content-Encoding" in e for e in errors)
    rows = [json.loads(line) for line in (tmp_path / "raw" / "manifest.jsonl").read_text().splitlines()]
    stored = (tmp_path / "raw" / rows[0]["path"]).read_bytes()
    assert stored == good


@pytest.mark.slow
def test_a_gzip_bomb_does_not_grow_the_process(tmp_path, server):
    server.routes["/bomb.png"] = (200, {"Content-Encoding": "gzip"}, _bomb(1024))
    lst = tmp_path / "list.txt"
    lst.write_text(f"{server.url}/bomb.png\n")
    peak = tmp_path / "peak"
    # the child's own high-water mark (VmHWM: its address space's, not the rusage peak a forked child inherits)
    code = ("import sys\nfrom gandata.cli import main\n"
            f"sys.argv = ['gandata', 'fetch', 'urls', {str(lst)!r}, '--name', 'b', '--out', {str(tmp_path / 'raw')!r},"
            " '--retries', '0']\n"
            "try:\n    main()\nfinally:\n"
            f"    open({str(peak)!r}, 'w').write(next(line for line in open('/proc/self/status')\n"
            "                                        if line.startswith('VmHWM')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    kib = int(peak.read_text().split()[1])
    assert kib < 600 * 1024, f"peak RSS {kib >> 10} MiB for one 1 GiB gzip bomb"


# ------------------------------------------------------------------------------- hangs and silent losses


def gd(capsys, *args: str) -> tuple[int | str, str, str]:
    """``gandata ARGS`` in this process: (exit status, or "traceback"; stdout; stderr)."""
    from gandata.cli import main

    old = sys.argv
    sys.argv = ["gandata", *args]
    try:
        main()
        code: int | str = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 (what the test looks for)
        code = f"traceback: {type(e).__name__}: {e}"
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def fails_in_one_line(capsys, *args: str, words: tuple[str, ...] = ()) -> str:
    """The command failed with one error line, the last on stderr (progress lines may come before it)."""
    code, _, err = gd(capsys, *args)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("gandata:") or "Error" in line or "Traceback" in line]
    assert code in (1, 2) and errors == lines[-1:], (code, err[-3000:])
    assert all(w in lines[-1] for w in words), lines[-1]
    return lines[-1]


TRAIN = ("--kimg", "0.02", "--batch", "4", "--ngf", "8", "--ndf", "8", "--nz", "8", "--workers", "0", "--device", "cpu",
         "--shuffle", "8")


@pytest.mark.parametrize("members, with_info", [
    ([], False), ([], True), ([("README", b"not a sample")], False), ([("x.json", b"{}")], True),
    ([("x.txt", b"text only")], False),
])
def test_training_on_shards_without_samples_is_one_line_not_a_spin(members, with_info, tmp_path, capsys):
    folder = tmp_path / "shards"
    folder.mkdir()
    tar_of(folder / "s-train-000000.tar", members)
    tar_of(folder / "s-train-000001.tar", members)
    if with_info:
        shardset.write_info(folder, {"name": "s", "resolution": 32, "counts": {"train": 0, "total": 0},
                                     "splits": {"train": {"samples": 0, "shards": [
                                         {"name": "s-train-000000.tar", "samples": 0},
                                         {"name": "s-train-000001.tar", "samples": 0}]}}})
    fails_in_one_line(capsys, "train", "dcgan", "--shards", str(folder), "--out", str(tmp_path / "run"), *TRAIN,
                      words=("no samples",))


@pytest.mark.slow
def test_an_empty_stream_in_loader_workers_is_one_line_too(tmp_path):
    tar_of(tmp_path / "a.tar", [("x.txt", b"no image")])
    r = _cli("train", "dcgan", "--shards", str(tmp_path / "a.tar"), "--out", str(tmp_path / "run"), "--kimg", "0.02",
             "--batch", "4", "--workers", "2", "--device", "cpu", timeout=120)
    one_line(r, "no samples with an image")


@pytest.mark.slow
def test_two_trainings_on_one_folder_never_both_run(tmp_path, labelled_set):
    args = ["train", "dcgan", "--shards", str(labelled_set), "--out", str(tmp_path / "run"), "--kimg", "0.3", "--batch",
            "4", "--ngf", "8", "--ndf", "8", "--workers", "0", "--device", "cpu"]
    procs = [subprocess.Popen([sys.executable, "-m", "gandata.cli", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    # the second waits for the folder's lock: refused while the first trains, "already trained" once it finished
    assert codes in ([0, 0], [0, 1]), results
    if codes == [0, 1]:
        assert "another training run" in next(err for code, _, err in results if code == 1)
    else:
        assert sum(out.startswith("already trained") for _, out, _ in results) == 1, results
    assert len(json.loads((tmp_path / "run" / "options.json").read_text())) > 0


@pytest.mark.slow
def test_a_training_started_while_another_trains_in_the_folder_is_refused(tmp_path, labelled_set):
    """Not only two started together (above, where either may win): the second is started while the first is seen
    training, and must exit 1 while the first still runs — the two were at once in the folder."""
    run = tmp_path / "run"
    args = ["train", "dcgan", "--shards", str(labelled_set), "--out", str(run), "--kimg", "1000", "--batch", "4",
            "--ngf", "8", "--ndf", "8", "--workers", "0", "--device", "cpu", "--log-kimg", "0.004"]
    first = subprocess.Popen([sys.executable, "-m", "gandata.cli", *args], stderr=subprocess.DEVNULL)
    try:
        wait_for(first, lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size > 0,
                 timeout=120)
        second = subprocess.run([sys.executable, "-m", "gandata.cli", *args, "--resume", "auto"], capture_output=True,
                                text=True, timeout=120)
        assert first.poll() is None, "the first training ended: the two did not overlap"
        assert second.returncode == 1 and "another training run is writing to" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGINT)  # it saves a checkpoint and stops
        first.wait(timeout=120)
    assert sorted(run.glob("checkpoint-*.pt")), "the first run's checkpoint on Ctrl-C"


@pytest.mark.slow
def test_a_diverging_run_stops_at_the_first_check_and_keeps_its_good_checkpoint(tmp_path, labelled_set, capsys,
                                                                                 monkeypatch):
    import torch
    from gandata.trainers import train as ttrain
    from gandata.trainers.checkpoints import load_checkpoint
    from gandata.trainers.options import TrainError, TrainOptions

    run = tmp_path / "run"
    assert gd(capsys, "train", "dcgan", "--shards", str(labelled_set), "--out", str(run), *TRAIN)[0] == 0
    good = sorted(run.glob("checkpoint-*.pt"))
    fails_in_one_line(capsys, "train", "dcgan", "--shards", str(labelled_set), "--out", str(run), "--lr", "1e30",
                      words=("--lr must be a number above 0 and at most 10",))
    small = dict(kind="dcgan", shards=str(labelled_set), out=str(run), kimg=0.2, resume="auto", batch=4, ngf=8,
                 ndf=8, nz=8, workers=0, device="cpu", shuffle=8, snap_kimg=0.004, log_kimg=0.004)
    with pytest.raises(TrainError, match="--lr must be a number above 0 and at most 10"):  # the library: the same
        TrainOptions(**small, lr=1e30)  # checked when the options are made, before anything runs
    o = TrainOptions(**small)
    # a run whose loss becomes NaN stops before it writes NaN weights
    from gandata.trainers.losses import NonSaturating

    real_loss = NonSaturating.d_loss

    def d_loss_going_nan(*args, **kwargs):
        return real_loss(*args, **kwargs) * float("nan")

    monkeypatch.setattr(NonSaturating, "d_loss", d_loss_going_nan)
    with pytest.raises(TrainError, match="diverged: a loss became NaN or infinite") as e:
        ttrain.train(o, progress=False)
    assert str(good[-1]) in str(e.value)
    assert sorted(run.glob("checkpoint-*.pt")) == good  # no checkpoint of NaN weights
    ck = load_checkpoint(good[-1])
    assert all(torch.isfinite(t).all() for t in ck["G"].values() if t.is_floating_point())


def test_a_zero_byte_newest_checkpoint_is_passed_over_everywhere(tmp_path, labelled_set, capsys):
    run = tmp_path / "run"
    assert gd(capsys, "train", "dcgan", "--shards", str(labelled_set), "--out", str(run), *TRAIN)[0] == 0
    (run / "checkpoint-999999999.pt").write_bytes(b"")
    code, _, err = gd(capsys, "sample", str(run), "--out", str(tmp_path / "s.png"), "--n", "4")
    assert code == 0 and "skipping" in err and (tmp_path / "s.png").exists()
    code, out, err = gd(capsys, "eval", str(run), "--real", str(labelled_set), "--extractor", "tiny-random", "--n", "8",
                        "--json")
    assert code == 0, err
    assert json.loads(out)["results"][0]["checkpoint"].endswith("checkpoint-000000020.pt")
    code, _, err = gd(capsys, "train", "dcgan", "--shards", str(labelled_set), "--out", str(run), *TRAIN[2:],
                      "--kimg", "0.03", "--resume", "auto")
    assert code == 0 and "skipping" in err, err
    fails_in_one_line(capsys, "sample", str(run / "checkpoint-999999999.pt"), "--out", str(tmp_path / "t.png"),
                      words=("not a plain gandata checkpoint",))


@pytest.mark.slow
def test_a_pipeline_re_run_with_changed_options_is_never_silently_skipped(tmp_path, labelled_set):
    path = tmp_path / "p.toml"
    base = (f"[pipeline]\nname = 'p'\n[train]\nkind = 'dcgan'\nshards = '{labelled_set}'\nkimg = 0.02\nbatch = 4\n"
            "ngf = 8\nndf = 8\nworkers = 0\ndevice = 'cpu'\n")
    path.write_text(base)
    r = _cli("run", str(path), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = _cli("run", str(path), "--json", cwd=tmp_path)
    assert again.returncode == 0 and "already trained" in again.stdout
    one_line(_cli("run", str(path), "--set", "train.lr=0.1", cwd=tmp_path), "lr 0.0002 (now 0.1)",
             "--set train.out=DIR")
    other = tmp_path / "other"
    import shutil

    shutil.copytree(labelled_set, other)
    info = json.loads((other / "dataset.json").read_text())
    info["name"] = "changed"
    (other / "dataset.json").write_text(json.dumps(info))
    one_line(_cli("run", str(path), "--set", f"train.shards='{other}'", cwd=tmp_path), "other shards")
    assert _cli("run", str(path), "--set", "train.kimg=0.03", "--set", "train.workers=1", cwd=tmp_path).returncode == 0


# ------------------------------------------------------------------ tracebacks where one line was due


def _png(seed: int, side: int) -> bytes:
    return png_bytes(drawn_image(seed, (side, side)))


def _shards(folder: Path, samples: list[list[tuple[str, bytes]]], info: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, members in enumerate(samples):
        tar_of(folder / f"s-train-{i:06d}.tar", members)
    if info is not None:
        shardset.write_info(folder, info)
    return folder


def _info(n: int, resolution: int | None = 32, labels: object = None, **extra) -> dict:
    info = {"name": "s", "resolution": resolution, "counts": {"train": n, "total": n},
            "splits": {"train": {"samples": n, "shards": [{"name": "s-train-000000.tar", "samples": n}]}}}
    if labels is not None:
        info["labels"] = labels
    info.update(extra)
    return info


LABELS = {"field": "kind", "names": ["a", "b"], "counts": {"a": 4, "b": 4}}
SHARD_CASES = {  # name: (members of one tar, dataset.json or None, kind, extra options, words of the line)
    "16 px": ([(f"k{i}.png", _png(i, 16)) for i in range(8)], _info(8, 16), "dcgan", [], "16 px is not a size"),
    "256 px": ([(f"k{i}.png", _png(i, 256)) for i in range(8)], None, "dcgan", [], "256 px is not a size"),
    "--resolution 64 on 32 px": ([(f"k{i}.png", _png(i, 32)) for i in range(8)], _info(8), "dcgan",
                                 ["--resolution", "64"], "the run trains at 64 px"),
    "mixed 32/64 px": ([(f"k{i}.png", _png(i, 32 if i % 2 else 64)) for i in range(16)], None, "dcgan", [],
                       "different sizes"),
    "HTML as .png": ([(f"k{i}.png", b"<html><body>Not found</body></html>") for i in range(8)], _info(8), "dcgan",
                     [], "does not decode"),
    "only .json": ([(f"k{i}.json", b"{}") for i in range(8)], None, "dcgan", [], "no samples"),
    "truncated": ([(f"k{i}.png", _png(i, 32)) for i in range(8)], _info(8), "dcgan", ["TRUNCATE"], "cannot be read"),
    "label out of range": ([m for i in range(8) for m in ((f"k{i}.png", _png(i, 32)), (f"k{i}.cls", b"7"))],
                           _info(8, labels=LABELS), "cdcgan", [], "outside 0-1"),
    "label negative": ([m for i in range(8) for m in ((f"k{i}.png", _png(i, 32)), (f"k{i}.cls", b"-1"))],
                       _info(8, labels=LABELS), "cdcgan", [], "outside 0-1"),
    "label missing": ([(f"k{i}.png", _png(i, 32)) for i in range(8)], _info(8, labels=LABELS), "cdcgan", [],
                      "no .cls label"),
    "label not a number": ([m for i in range(8) for m in ((f"k{i}.png", _png(i, 32)), (f"k{i}.cls", b"hat"))],
                           _info(8, labels=LABELS), "cdcgan", [], "not a whole number"),
    "labels a list": ([(f"k{i}.png", _png(i, 32)) for i in range(8)], _info(8, labels=["a", "b"]), "dcgan", [],
                      "'labels' must be"),
    "samples = lots": ([(f"k{i}.png", _png(i, 32)) for i in range(8)], _info(8, counts={"train": "lots"}), "dcgan",
                       [], "'counts' must map"),
}


@pytest.mark.parametrize("case", list(SHARD_CASES))
def test_bad_shards_are_one_line_for_the_trainer(case, tmp_path, capsys):
    members, info, kind, extra, words = SHARD_CASES[case]
    folder = _shards(tmp_path / "set", [members], info)
    if "TRUNCATE" in extra:
        tar = folder / "s-train-000000.tar"
        tar.write_bytes(tar.read_bytes()[:3000])
        extra = []
    fails_in_one_line(capsys, "train", kind, "--shards", str(folder), "--out", str(tmp_path / "run"), *TRAIN, *extra,
                      words=(words,))


def test_a_dataset_json_with_1e999_is_one_line(tmp_path, capsys):
    folder = _shards(tmp_path / "set", [[("k.png", _png(0, 32))]])
    (folder / "dataset.json").write_text(json.dumps(_info(1)).replace('"samples": 1,', '"samples": 1e999,', 1))
    for args in (["train", "dcgan", "--shards", str(folder), "--out", str(tmp_path / "run"), *TRAIN],
                 ["inspect", str(folder)], ["export", str(folder), "--out", str(tmp_path / "x.zip")]):
        fails_in_one_line(capsys, *args, words=("dataset.json",))


@pytest.mark.parametrize("text, words", [
    ("[train]\nkind = 'dcgan'\nshards = 'x'\nkimg = inf\n", "[train] kimg must be"),
    ("[shard]\nsize = 100000000000000000000000\n", "[shard] size must be"),
    ("[train]\nkind = 'dcgan'\nshards = " + "[" * 2000 + "]" * 2000 + "\n", "nests tables or lists too deeply"),
    ("pipeline = 5\n[shard]\nsize = 8\n", "[pipeline] must be a table"),
])
def test_hostile_pipeline_files_are_one_line(text, words, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(text)
    one_line(_cli("run", str(path), cwd=tmp_path), words)


@pytest.mark.slow
def test_a_foreign_summary_in_the_run_folder_is_one_line(tmp_path, labelled_set):
    run = tmp_path / "runs" / "p"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"kind": ["not", "ours"], "kimg": "lots"}')
    path = tmp_path / "p.toml"
    path.write_text(f"[pipeline]\nname = 'p'\n[train]\nkind = 'dcgan'\nshards = '{labelled_set}'\nkimg = 0.01\n"
                    "device = 'cpu'\nworkers = 0\n")
    one_line(_cli("run", str(path), cwd=tmp_path), "summary.json is not a gandata run's summary")


def test_inspect_shows_a_class_id_its_names_do_not_cover_as_the_number(tmp_path, capsys):
    folder = _shards(tmp_path / "set", [[m for i, c in enumerate((b"-5", b"-1", b"0")) for m in
                                         ((f"k{i}.png", _png(i, 32)), (f"k{i}.cls", c))]],
                     _info(3, labels={"field": "kind", "names": ["a", "b"], "counts": {"a": 1, "b": 0}}))
    code, out, err = gd(capsys, "inspect", str(folder), "--json")
    assert code == 0, err
    labels = json.loads(out)["labels"]
    assert labels == {"-5": 1, "-1": 1, "a": 1}, labels  # -1 is not "the last class"


def test_a_url_list_with_latin1_bytes_is_refused_naming_the_line(tmp_path, server):
    """Issue 37 changed this on purpose: a latin-1 byte was percent-encoded (``caf%E9``) and the other columns of its
    row turned into U+FFFD — a record mangled in silence. Bytes that are not UTF-8 do not say which 8-bit code page
    wrote them, so the list is refused, naming the line and the byte, before anything is fetched or created."""
    server.routes["/b.png"] = (200, {"Content-Type": "image/png"}, _png(2, 32))
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"# an anime list\n" * 2903 + f"{server.url}/b.png\n".encode() + f"{server.url}/caf".encode()
                    + b"\xe9.png\n")
    r = _cli("fetch", "urls", str(lst), "--name", "l", "--out", str(tmp_path / "raw"), "--json", "--rate", "0")
    one_line(r, f"{lst}, line 2905, column", "byte 0xE9 is not UTF-8", "iconv -f cp1252 -t utf-8")
    assert not (tmp_path / "raw").exists()  # the line before it was not fetched either: nothing was started


def test_a_cascade_that_is_not_a_file_is_refused_before_it_is_read(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    drawn_image(0, (64, 64)).save(tmp_path / "imgs" / "a.png")
    for cascade in ("/dev/zero", str(tmp_path)):
        fails_in_one_line(capsys, "crop", "anime-faces", "--src", str(tmp_path / "imgs"), "--out",
                          str(tmp_path / "faces"), "--cascade", cascade, words=("not a regular file",))
    big = tmp_path / "big.xml"
    with open(big, "wb") as f:
        f.truncate(100 << 20)
    fails_in_one_line(capsys, "crop", "anime-faces", "--src", str(tmp_path / "imgs"), "--out",
                      str(tmp_path / "faces"), "--cascade", str(big), words=("MiB at most",))


@pytest.mark.parametrize("args", [
    ["train", "dcgan", "--shards", "SET", "--out", "FILE", *TRAIN],
    ["export", "SET", "--out", "FILE/x.zip"],
    ["export", "SET", "--out", "FILE", "--format", "imagefolder"],
    ["inspect", "FILE"],
    ["dedupe", "FILE"],
    ["demo", "--small", "--out", "FILE"],
    ["sample", "FILE"],
    ["shard", "SET", "--out", "FILE", "--name", "n", "--size", "8"],
    ["fetch", "urls", "FILE", "--name", "n" * 300],
])
def test_a_file_where_a_folder_goes_is_one_line(args, tmp_path, labelled_set, capsys):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    args = [a.replace("FILE", str(f)).replace("SET", str(labelled_set)) for a in args]
    fails_in_one_line(capsys, *args)
    assert f.read_text() == "not a folder"


@pytest.fixture(scope="module")
def bucket():
    """moto's S3 server on 127.0.0.1 with one bucket, and the environment pointing s3fs at it."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip("needs the s3 extra and moto's server: pip install -e '.[s3]' 'moto[server]'")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}, key="testing",
                      secret="testing").mkdir("hardening")
    yield env
    server.stop()


@pytest.mark.slow
def test_object_store_failures_are_one_line(tmp_path, bucket, labelled_set):
    import shutil

    env = {**os.environ, **bucket, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        drawn_image(i, (20, 20)).save(imgs / f"{i}.png")

    def run(*args, **change):
        e = {k: v for k, v in {**env, **change}.items() if v is not None}
        return subprocess.run([sys.executable, "-m", "gandata.cli", *args], capture_output=True, text=True, env=e,
                              timeout=300)

    shard = ("shard", str(imgs), "--name", "n", "--size", "8", "--out")
    one_line(run(*shard, "s3://no-such-bucket/x"), "the bucket does not exist")
    one_line(run(*shard, "s3://hardening/x", AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None),
             "no credentials")
    one_line(run(*shard, "s3://hardening/x", AWS_ENDPOINT_URL="http://127.0.0.1:9"), "cannot reach")
    assert run(*shard, "s3://hardening/set").returncode == 0
    r = run("export", "s3://hardening/set", "--out", str(tmp_path / "x.zip"))
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "imgs")


@pytest.mark.parametrize("content, words", [
    ([1, 2], "does not hold a dictionary"),
    ({"G": {}, "x": 1}, "'D' is missing"),
    ("GOOD-but-step", "'step' must be a whole number"),
    ("GOOD-but-kind", "'options' must name the kind"),
])
def test_a_checkpoint_is_checked_whole_and_named_with_its_field(content, words, tmp_path, labelled_set, capsys):
    import torch
    from gandata.trainers.checkpoints import load_checkpoint
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    from gandata.errors import FormatError

    if isinstance(content, str):
        run = tmp_path / "good"
        train(TrainOptions(kind="dcgan", shards=str(labelled_set), out=str(run), kimg=0.008, batch=4, ngf=4, ndf=4,
                           nz=4, workers=0, device="cpu", grid=4), progress=False)
        content = load_checkpoint(next(run.glob("checkpoint-*.pt")))
        if content.__class__ is dict and "step" in content and words.startswith("'step'"):
            content["step"] = "many"
        else:
            content["options"]["kind"] = "stylegan9"
    path = tmp_path / "checkpoint-000000100.pt"
    torch.save(content, path)
    with pytest.raises(FormatError, match=words):
        load_checkpoint(path)
    fails_in_one_line(capsys, "sample", str(path), "--out", str(tmp_path / "s.png"), words=(words,))
    fails_in_one_line(capsys, "eval", str(path), "--real", str(labelled_set), "--extractor", "tiny-random",
                      words=(words,))


def test_eval_refuses_to_score_a_generator_against_shards_of_another_size(tmp_path, labelled_set, capsys):
    from gandata.trainers.options import TrainOptions
    from gandata.trainers.train import train

    run = tmp_path / "run"
    train(TrainOptions(kind="dcgan", shards=str(labelled_set), out=str(run), kimg=0.008, batch=4, ngf=4, ndf=4, nz=4,
                       workers=0, device="cpu", grid=4), progress=False)
    big = _shards(tmp_path / "big", [[(f"k{i}.png", _png(i, 64)) for i in range(8)]], _info(8, 64))
    fails_in_one_line(capsys, "eval", str(run), "--real", str(big), "--extractor", "tiny-random", "--n", "8",
                      words=("makes 32 px images", "64 px"))


def test_export_of_all_splits_when_the_val_split_is_empty(tmp_path):
    from gandata.datasets import Dataset
    from gandata.shard import ShardOptions, shard

    with Dataset.create(tmp_path / "raw") as ds:
        for i in range(6):
            ds.add(f"k{i}", png_bytes(drawn_image(i, (32, 32))), "png", {"width": 32, "height": 32, "source": "t"})
    shard([tmp_path / "raw"], tmp_path / "set", "s", ShardOptions(size=32, val_fraction=0.0, min_shards=1))
    s = export(str(tmp_path / "set"), tmp_path / "all", format="imagefolder", split="all")
    assert s.images == 6 == len(list((tmp_path / "all").rglob("*.png")))


def test_training_refuses_an_eval_set_of_another_size_before_it_starts(tmp_path, labelled_set, capsys):
    big = _shards(tmp_path / "big", [[(f"k{i}.png", _png(i, 64)) for i in range(8)]], _info(8, 64))
    run = tmp_path / "run"
    fails_in_one_line(capsys, "train", "dcgan", "--shards", str(labelled_set), "--out", str(run), *TRAIN, "--eval",
                      "fid", "--eval-extractor", "tiny-random", "--eval-real", str(big),
                      words=("holds 64 px images and the run trains at 32 px",))
    assert not list(run.glob("checkpoint-*.pt"))
