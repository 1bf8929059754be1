"""Hostile inputs, table-driven and generated here (no committed binaries): each ends in a clear line or a recorded
rejection, nothing half-written, no traceback."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from conftest import drawn_image, png_bytes
from PIL import Image

from gandata import images, shardset
from gandata.datasets import MAX_KEY_LEN, child_key, hash_key, is_key, make_key
from gandata.errors import UserError
from gandata.inputs import open_input
from gandata.shard import ShardOptions, shard

# ------------------------------------------------------------------------------------------ long names and keys


@pytest.mark.parametrize("parent, suffix", [("a" * 96, "_f0"), ("b" * 90, "_f12"), ("c" * 40, "_f1"),
                                            ("bitmoji-" + "d" * 88, "-0123456789abcdef")])
def test_derived_keys_always_fit_and_stay_distinct(parent, suffix):
    key = child_key(parent, suffix)
    assert is_key(key) and len(key) <= MAX_KEY_LEN and key.endswith(suffix)
    if len(parent) + len(suffix) <= MAX_KEY_LEN:
        assert key == parent + suffix  # keys that fit are unchanged: existing datasets keep their keys
    assert child_key(parent[:-1] + "z", suffix) != key


def test_a_long_dataset_name_gives_valid_hashed_keys():
    name = "n" * 90
    assert make_key(name) == name
    key = hash_key(name, {"url": "http://x/1.png"})
    assert is_key(key) and key == hash_key(name, {"url": "http://x/1.png"})
    assert key != hash_key(name, {"url": "http://x/2.png"})


def test_tar_member_names_over_100_bytes_are_written_and_read_back_everywhere(tmp_path):
    long = "k" * 130
    path = tmp_path / "long.tar"
    shardset.write_tar(path, [(f"{long}.json", b"{}"), (f"{long}.png", png_bytes(drawn_image(1, (8, 8)))),
                              ("short.png", b"x")])
    with open(path, "rb") as f:
        assert [n for n, _ in shardset.tar_members(f, str(path))] == [f"{long}.json", f"{long}.png", "short.png"]
    with tarfile.open(path) as tf:
        assert tf.getnames() == [f"{long}.json", f"{long}.png", "short.png"]
    assert [s["__key__"] for s in wds.WebDataset(str(path), shardshuffle=False)] == [long, "short"]


def test_a_deep_folder_of_images_shards(tmp_path):
    deep = tmp_path / "src"
    folder = deep
    for i in range(6):
        folder = folder / f"a-rather-long-folder-name-number-{i}"
    folder.mkdir(parents=True)
    for i in range(3):
        drawn_image(i, (40, 40)).save(folder / f"IMG_20240101_{i:06d}_with_a_long_camera_name.png")
    keys = [s.key for s in open_input(str(deep))]
    assert all(is_key(k) for k in keys) and len(set(keys)) == 3
    summary = shard([deep], tmp_path / "out", "deep", ShardOptions(size=16, val_fraction=0.0))
    assert summary.counts["total"] == 3
    got = {s["__key__"] for t in (tmp_path / "out").rglob("*.tar") for s in wds.WebDataset(str(t), shardshuffle=False)}
    assert got == set(keys)


# ------------------------------------------------------------------------------------------------- pixels


def test_exif_orientation_is_applied_everywhere_pixels_are_read(tmp_path):
    upright = drawn_image(3, (60, 30))  # wide as displayed
    stored = upright.rotate(90, expand=True)  # stored tall…
    exif = Image.Exif()
    exif[0x0112] = 6  # …with orientation 6: "rotate 90° clockwise to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    data = buf.getvalue()
    assert images.probe(data)[1:] == (60, 30)
    im = images.decode(data)
    assert im.size == (60, 30)
    diff = np.abs(np.asarray(im, dtype=int) - np.asarray(upright, dtype=int)).mean()
    assert diff < 12, diff  # the picture as displayed (JPEG noise aside)


@pytest.mark.parametrize("mode", ["F", "I;16", "I"])
def test_high_bit_depth_and_float_images_keep_their_range(mode):
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    if mode == "F":
        im = Image.fromarray(ramp, "F")  # a float TIFF's 0–1 values
    elif mode == "I;16":
        im = Image.fromarray((ramp * 65535).astype(np.uint16))
    else:
        im = Image.fromarray((ramp * 65535).astype(np.int32)).convert("I")
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    rgb = np.asarray(images.to_rgb(images.decode(buf.getvalue())))
    assert rgb.shape == (64, 64, 3) and rgb[0, 0, 0] < 5 and rgb[-1, -1, 0] > 250  # black to white, not all black


# ---------------------------------------------------------------------------------------- shard sets


def test_a_shard_folder_without_its_description_is_refused_when_gandata_wrote_it(tmp_path):
    out = tmp_path / "shards"
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(4):
        drawn_image(i, (20, 20)).save(src / f"{i}.png")
    shard([src], out, "s", ShardOptions(size=16, val_fraction=0.0))
    (out / "dataset.json").unlink()  # an interrupted rewrite: the set may be half old, half new
    for reader in (shardset.resolve, open_input):
        with pytest.raises(shardset.NoShards, match="no dataset.json: gandata shard did not finish"):
            reader(str(out))


def test_a_description_naming_shards_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (tmp_path / "outside.tar").write_bytes(b"")
    info = {"splits": {"train": {"samples": 1, "shards": [{"name": "../outside.tar", "samples": 1, "bytes": 0}]}}}
    for name in ("../outside.tar", "/etc/passwd", "sub/x.tar", ".hidden.tar", ""):
        info["splits"]["train"]["shards"][0]["name"] = name
        (folder / "dataset.json").write_text(json.dumps(info))
        with pytest.raises(shardset.BadInfo, match="not a file in its folder"):
            shardset.read(folder)
        with pytest.raises(UserError):  # and so does every reader: open_input, train's and eval's resolve
            open_input(str(folder))
    (folder / "dataset.json").write_text("{ not json")
    with pytest.raises(shardset.BadInfo, match="damaged"):
        shardset.resolve(str(folder))


# -------------------------------------------------------------------------------------------------- fetch

BAD_URLS = ["file:///etc/passwd", "ftp://example.com/a.png", "javascript:alert(1)", "data:image/png;base64,AAAA",
            "mailto:x@example.com", "http://[::1", "http://127.0.0.1:99999/x.png", "//no-scheme/x.png", "http:///x.png"]


def test_urls_the_engine_must_not_fetch_are_recorded_permanent_failures(tmp_path):
    from aiohttp import web

    from gandata.localserver import LocalServer
    from gandata.sources.urls import fetch_urls

    async def image(request):
        return web.Response(body=png_bytes(drawn_image(int(request.match_info["n"]), (16, 16))),
                            content_type="image/png")

    async def to_file(request):
        raise web.HTTPFound("file:///etc/passwd")

    with LocalServer([("GET", "/img/{n}.png", image), ("GET", "/evil.png", to_file)]) as server:
        good = [f"{server.url}/img/{i}.png" for i in range(3)]
        lst = tmp_path / "list.txt"
        lst.write_text("\n".join(good[:1] + BAD_URLS + [f"{server.url}/evil.png"] + good[1:]) + "\n")
        s = fetch_urls(lst, "hostile", tmp_path / "raw", overrides={"retries": 0})
        assert s.accepted == 3 and s.stopped is None
        from gandata.datasets import Dataset

        fails = {f["url"]: f for f in Dataset.open(tmp_path / "raw").failures()}
        assert set(fails) == set(BAD_URLS) | {f"{server.url}/evil.png"}
        assert all(f["permanent"] for f in fails.values())
        assert fails["file:///etc/passwd"]["error"].startswith("not an http(s) URL")
        assert fails[f"{server.url}/evil.png"]["error"] == "redirect to a non-http URL"
        again = fetch_urls(lst, "hostile", tmp_path / "raw", overrides={"retries": 0})  # a re-run asks for nothing
        assert again.accepted == 0 and again.skipped_known == 3 + len(BAD_URLS) + 1


@pytest.mark.parametrize("base", ["http://[::1", "file:///tmp", "ftp://h", "127.0.0.1:8080/x", "http://"])
def test_a_bad_base_url_is_one_line(base, tmp_path):
    from gandata.declarations import FETCH_URLS

    with pytest.raises(UserError, match="--base-url: give a scheme and host"):
        FETCH_URLS.check({"base_url": base}, "cli")


# ------------------------------------------------------------------------------------------- local reads


def test_symlink_loops_fifos_devices_and_links_to_one_file(tmp_path):
    import os

    src = tmp_path / "imgs"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        drawn_image(i, (20, 20)).save(src / "sub" / f"{i}.png")
    os.symlink("..", src / "sub" / "loop")  # a folder link back up the tree
    os.symlink(src, src / "again")
    os.symlink(src / "sub" / "0.png", src / "same-picture.png")  # a second name for one file
    os.mkfifo(src / "fifo.png")  # would block a plain read forever
    os.symlink("/dev/zero", src / "zero.png")  # would never end
    os.symlink(src / "missing.png", src / "dangling.png")
    samples = list(open_input(str(src)))
    assert len(samples) == 6  # the 3 pictures once each, and the 3 bad names
    good, bad = [], []
    for s in samples:
        try:
            good.append(s.read())
        except OSError as e:
            bad.append((s.origin, str(e)))
    assert len(good) == 3
    reasons = dict((Path(o).name, r) for o, r in bad)
    assert reasons["fifo.png"] == "not a regular file (FIFO)" and reasons["zero.png"] == "not a regular file (device)"
    summary = shard([src], tmp_path / "out", "s", ShardOptions(size=16, val_fraction=0.0))
    assert summary.counts["total"] == 3 and summary.removed["unreadable"] == 3


def test_oversized_files_and_tar_members_are_refused_before_they_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(shardset, "MAX_MEMBER_BYTES", 1 << 20)
    big = tmp_path / "imgs" / "big.png"
    big.parent.mkdir()
    with open(big, "wb") as f:  # sparse: 8 MB on paper, nothing on disk
        f.truncate(8 << 20)
    with pytest.raises(OSError, match="over the 1 MiB limit"):
        next(iter(open_input(str(big.parent)))).read()
    tar = tmp_path / "sparse.tar"
    header = tarfile.TarInfo("huge.png")
    header.size = 8 << 20
    with open(tar, "wb") as f:  # a 10 KB-on-disk tar claiming an 8 MB member, then a normal sample
        f.write(header.tobuf(tarfile.USTAR_FORMAT))
        f.seek(512 + (8 << 20))
        small = tarfile.TarInfo("ok.png")
        data = png_bytes(drawn_image(1, (8, 8)))
        small.size = len(data)
        f.write(small.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512) + b"\0" * 1024)
    src = open_input(str(tar))
    got = [s.key for s in src]
    assert got == ["ok"] and "over the 1 MiB limit" in src.problems[0].reason


# ---------------------------------------------------------------------------------------------- disk full


def _full(*args, **kwargs):
    import errno as _errno

    raise OSError(_errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    from gandata import fileio

    monkeypatch.setattr(fileio.os, "fsync", _full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write(tmp_path / "x.json", b"{}" * 1000)
    assert e.value.errno == 28 and list(tmp_path.iterdir()) == []


def test_a_full_disk_in_a_checkpoint_is_an_oserror_and_no_temporary(tmp_path, monkeypatch):
    import gandata.trainers.checkpoints as ttrain

    def torch_full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ttrain.torch, "save", torch_full)
    monkeypatch.setattr(ttrain.shutil, "disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(OSError) as e:
        ttrain.save_atomic({"x": 1}, tmp_path / "checkpoint-000000001.pt")
    assert e.value.errno == 28 and e.value.filename.endswith("checkpoint-000000001.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_from_the_command_line(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(3):
        drawn_image(i, (20, 20)).save(src / f"{i}.png")
    code = ("import errno, os, sys\n"
            "def full(fd): raise OSError(errno.ENOSPC, 'No space left on device', 'OUT/x')\n"
            "os.fsync = full\n"
            f"sys.argv = ['gandata', 'shard', {str(src)!r}, '--out', {str(tmp_path / 'out')!r}, '--name', 's']\n"
            "from gandata.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == ["gandata: error: disk full at OUT/x; free some space and run the same "
                                             "command again (what was written is kept)"]
    assert not [p for p in (tmp_path / "out").rglob(".*tmp-*")]


# ------------------------------------------------------------------------------------------------ manifests

BROKEN_BITMOJI = [  # (what is changed in the shipped bitmoji.toml, the message's words)
    (lambda m: m["avatars"].pop("url"), "[avatars] url is missing"),
    (lambda m: m["avatars"].update(url=42), "[avatars] url must be an address"),
    (lambda m: m["avatars"]["none"].update(hat="often"), "[avatars] none [hat] must be a number from 0 to 1"),
    (lambda m: m["avatars"]["none"].update(hat=5.0), "[avatars] none [hat] must be a number from 0 to 1"),
    (lambda m: m["politeness"].update(concurrency="eight"), "[politeness] concurrency must be a whole number"),
    (lambda m: m["politeness"].update(rate="fast"), "[politeness] rate must be a number"),
    (lambda m: m.pop("catalogues"), "[catalogues] traits is missing"),
    (lambda m: m["avatars"].update(url=m["avatars"]["url"] + "&x={nope}"), "has the placeholder {nope}"),
    (lambda m: m["avatars"].update(url="file:///etc/{view}"), "must be an http(s) address"),
    (lambda m: m.pop("avatars"), "[avatars] url is missing"),
    (lambda m: m["avatars"].update(scale="big"), "[avatars] scale must be a whole number"),
    (lambda m: m.update(politness=m.pop("politeness")), "unknown table [politness]"),
    (lambda m: m["politeness"].update(retries=-1), "[politeness] retries must be a whole number from 0"),
]


@pytest.mark.parametrize("change, words", BROKEN_BITMOJI)
def test_a_broken_manifest_is_one_line_naming_the_key(change, words, tmp_path):
    import tomllib

    from gandata.sources import MANIFESTS, load_manifest

    manifest = tomllib.loads((MANIFESTS / "bitmoji.toml").read_text())
    change(manifest)
    path = tmp_path / "bitmoji.toml"
    path.write_text(_toml(manifest))
    with pytest.raises(UserError) as e:
        load_manifest("bitmoji", path)
    assert words in str(e.value) and str(e.value).startswith(f"the manifest {path}: ")


def _toml(obj: dict, prefix: str = "") -> str:
    """A small TOML writer for the tests' manifests (tables, scalars, lists, inline tables of scalars)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"

    lines, tables = [], []
    for k, v in obj.items():
        if isinstance(v, dict) and (not prefix or any(isinstance(x, dict) for x in v.values()) or k == "none"):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {value(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        name = f"{prefix}.{k}" if prefix else k
        out += f"\n[{name}]\n" + _toml(v, name)
    return out


def test_manifest_rows_with_invalid_keys_are_listed_not_dropped_silently(tmp_path):
    from gandata.datasets import Dataset

    root = tmp_path / "raw"
    with Dataset.create(root) as ds:
        ds.add("good", png_bytes(drawn_image(1, (20, 20))), "png", {"width": 20, "height": 20, "source": "t"})
    with open(root / "manifest.jsonl", "a") as f:
        f.write(json.dumps({"key": "../evil", "path": "../../etc/passwd"}) + "\n")
        f.write(json.dumps({"key": "nopath"}) + "\n")
    src = open_input(str(root))
    assert [s.key for s in src] == ["good"]
    assert len(src.problems) == 2 and "'../evil'" in src.problems[0].reason
    summary = shard([root], tmp_path / "out", "x", ShardOptions(size=16, val_fraction=0.0))
    assert summary.counts["total"] == 1 and summary.removed["unreadable"] == 2


def test_a_repeated_tar_member_keeps_the_first_copy_and_is_reported(tmp_path):
    first, second = png_bytes(drawn_image(1, (16, 16))), png_bytes(drawn_image(2, (16, 16)))
    tar = tmp_path / "rep.tar"
    shardset.write_tar(tar, [("a.png", first), ("a.json", b"{}"), ("a.png", second), ("b.png", second)])
    src = open_input(str(tar))
    got = {s.key: s.read() for s in src}
    assert got == {"a": first, "b": second}
    assert [p.reason for p in src.problems] == ["member repeated in the tar; the first copy is used"]
    # nothing was lost: shard lists it without counting a removal; inspect and crop do not call it unreadable
    s = shard([tar], tmp_path / "out", "rep", ShardOptions(size=16, val_fraction=0.0))
    assert s.counts["total"] == 2 and s.removed["unreadable"] == 0 and s.input_problems == 1
    rows = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["input_problem"]
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["input_problems"] == 1
    from gandata.inspection import inspect_path

    report = inspect_path(tar)
    assert report.samples == 2 and report.unreadable == 0 and len(report.problems) == 1


def test_inspect_counts_what_shard_keeps(tmp_path):
    """Truncated files have whole headers: inspect checks every byte, as shard does, and the counts agree."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"ok{i}.png").write_bytes(png_bytes(drawn_image(i, (64, 64))))
    for name, make in TRUNCATED.items():
        data = make()
        (folder / f"{make_key(name)}.{images.sniff(data)}").write_bytes(data)
    from gandata.inspection import inspect_path

    report = inspect_path(folder)
    s = shard([folder], tmp_path / "out", "t", ShardOptions(size=16, val_fraction=0.0, dedupe="none"))
    assert report.samples == s.counts["total"] == 6
    assert report.unreadable == s.removed["unreadable"] == len(TRUNCATED)


# ---------------------------------------------------------------------------------------------- memory bounds


BUDGET = 4 << 20


@pytest.mark.parametrize("chunked", [False, True])
def test_fetch_memory_is_bounded_by_its_budget_not_by_concurrency(tmp_path, chunked):
    """20 bodies of ~1.2 MB, 16 requests in flight, a 4 MiB budget: without the budget 16 bodies (and their pixels)
    would be held at once. The run completes (no deadlock when every holder wants more), and the peak stays within
    the budget plus one request's body (twice, while its chunks are joined) and pixels."""
    from aiohttp import web

    from gandata.localserver import LocalServer
    from gandata.sources.urls import fetch_urls

    rng = np.random.default_rng(0)
    bodies = [png_bytes(Image.fromarray(rng.integers(0, 256, (400, 1000, 3), np.uint8))) for _ in range(20)]

    async def image(request):
        body = bodies[int(request.match_info["n"])]
        if not chunked:
            return web.Response(body=body, content_type="image/png")
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 1 << 17):
            await resp.write(body[i:i + (1 << 17)])
        await resp.write_eof()
        return resp

    with LocalServer([("GET", "/img/{n}.png", image)]) as server:
        lst = tmp_path / "list.txt"
        lst.write_text("".join(f"{server.url}/img/{i}.png\n" for i in range(20)))
        s = fetch_urls(lst, "big", tmp_path / "raw",
                       overrides={"concurrency": 16, "per_host": 16, "memory": BUDGET >> 20})
    assert s.accepted == 20 and not s.failures
    one_request = 2 * max(map(len, bodies)) + 400 * 1000 * 4
    assert 0 < s.memory_peak <= BUDGET + one_request, s.memory_peak


def test_junk_after_an_image_is_not_stored(tmp_path):
    from aiohttp import web

    from gandata.datasets import Dataset
    from gandata.localserver import LocalServer
    from gandata.sources.urls import fetch_urls

    clean = {"png": png_bytes(drawn_image(1, (32, 32)))}
    for fmt, pil in (("jpg", "JPEG"), ("gif", "GIF"), ("webp", "WEBP")):
        buf = io.BytesIO()
        drawn_image(2, (32, 32)).save(buf, pil)
        clean[fmt] = buf.getvalue()

    async def image(request):
        fmt = request.match_info["fmt"]
        return web.Response(body=clean[fmt] + b"\0JUNK" * 20000, content_type="application/octet-stream")

    with LocalServer([("GET", "/img.{fmt}", image)]) as server:
        lst = tmp_path / "list.txt"
        lst.write_text("".join(f"{server.url}/img.{f}\n" for f in clean))
        s = fetch_urls(lst, "junk", tmp_path / "raw", overrides={"retries": 0})
    assert s.accepted == 4
    ds = Dataset.open(tmp_path / "raw")
    for row in ds.rows():
        fmt = row["url"].rsplit(".", 1)[1]
        assert (tmp_path / "raw" / row["path"]).read_bytes() == clean[fmt], fmt
        assert row["trailing_bytes"] == 100000 and row["bytes"] == len(clean[fmt])


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _claims(data: bytes, marker: bytes, offset: int, fmt: str, size: tuple[int, int]) -> bytes:
    """``data`` with the width/height after ``marker`` rewritten to ``size``."""
    import struct

    out = bytearray(data)
    at = out.index(marker) + offset
    w, h = size
    out[at:at + 4] = struct.pack(fmt, *((h, w) if fmt == ">HH" else (w, h)))
    return bytes(out)


def _tiny_gif_screen() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (4, 4), 1).save(buf, "GIF")
    return _claims(buf.getvalue(), b"GIF8", 6, "<HH", (8000, 8000))


_PHOTO = drawn_image(3, (256, 256))
TRUNCATED = {
    "half a JPEG closed with an end marker": lambda: (lambda d: d[: len(d) // 2] + b"\xff\xd9")(_jpeg(_PHOTO)),
    "nine tenths of a progressive JPEG + end marker": lambda: (lambda d: d[: len(d) * 9 // 10] + b"\xff\xd9")(
        _jpeg(_PHOTO, progressive=True)),
    "a 600-byte JPEG claiming 7000x7000": lambda: _claims(_jpeg(Image.new("RGB", (16, 16), (200, 10, 10))),
                                                           b"\xff\xc0", 5, ">HH", (7000, 7000)),
    "a 42-byte GIF claiming an 8000x8000 screen": _tiny_gif_screen,
    "half a PNG closed with IEND": lambda: (lambda d: d[: len(d) // 2] + d[-12:])(png_bytes(_PHOTO)),
}


@pytest.mark.parametrize("case", list(TRUNCATED))
def test_truncated_images_that_end_with_an_end_marker_are_refused(case, tmp_path):
    data = TRUNCATED[case]()
    for check in (images.decode, images.verify):
        with pytest.raises(images.ImageError, match="truncated|covers under"):
            check(data)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"bad.{images.sniff(data)}").write_bytes(data)
    (tmp_path / "in" / "good.png").write_bytes(png_bytes(_PHOTO))
    s = shard([tmp_path / "in"], tmp_path / "out", "t", ShardOptions(size=32, val_fraction=0.0))
    assert s.counts["train"] == 1 and s.removed["unreadable"] == 1


def test_whole_jpegs_decode_to_the_same_pixels_as_pillow():
    for im in (_PHOTO, _PHOTO.convert("L"), _PHOTO.convert("CMYK")):
        data = _jpeg(im)
        ours = images.decode(data)
        assert ours.mode == im.mode and np.array_equal(np.asarray(ours), np.asarray(Image.open(io.BytesIO(data))))
        assert images.verify(data) == ("jpeg", 256, 256)


def test_a_memory_budget_lets_through_what_fits_and_a_giant_alone():
    import threading
    import time

    from gandata.workers import MemoryBudget

    budget = MemoryBudget(1000)
    running, most = [], []
    lock = threading.Lock()

    def job(n):
        with budget.hold(n):
            with lock:
                running.append(n)
                most.append(sum(running))
            time.sleep(0.02)
            with lock:
                running.remove(n)

    threads = [threading.Thread(target=job, args=(n,)) for n in [300] * 6 + [2000] + [300] * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)  # nothing waits forever, the giant included
    assert budget.used == 0 and budget.peak == max(most)
    assert all(m <= 1000 or m == 2000 for m in most)  # what fits shares; the giant ran alone


def test_the_memory_budget_changes_no_output_byte(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):  # 4 of 7 Mpx (70 MB each at shard's 10 bytes a pixel: each runs alone in 64 MiB), 4 small
        (folder / f"{i}.png").write_bytes(png_bytes(drawn_image(i, (2600 + i, 2700) if i % 2 else (96 + 8 * i, 80))))
    tight = shard([folder], tmp_path / "a", "t", ShardOptions(size=16, val_fraction=0.2, memory=64, workers=2))
    roomy = shard([folder], tmp_path / "b", "t", ShardOptions(size=16, val_fraction=0.2, workers=2))
    assert tight.counts == roomy.counts
    for f in sorted((tmp_path / "a").rglob("*.tar")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
