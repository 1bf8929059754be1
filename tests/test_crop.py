"""`gandata crop anime-faces` on the real anime tiles, the crop geometry, and `crop lego-faces` on SYNTHETIC
minifigure renders drawn by tests/minifigs.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path, kill_when, lines_in, png_bytes
from minifigs import draw_minifig
from PIL import Image

from gandata import images
from gandata.crop import CropOptions, crop, crop_box, cut
from gandata.datasets import Dataset
from gandata.errors import UserError
from gandata.localserver import LocalServer
from gandata.shard import ShardOptions, shard


@pytest.fixture
def cascade() -> Path:
    return fixture_path("cascades/lbpcascade_animeface.xml")




def reference(path: Path, cascade: Path) -> list[tuple[int, int, int, int]]:
    """nagadomi's example: imread → gray → equalizeHist → detectMultiScale(1.1, 5, (24, 24)) at full size."""
    c = cv2.CascadeClassifier(str(cascade))
    gray = cv2.equalizeHist(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY))
    return sorted(tuple(int(v) for v in b) for b in c.detectMultiScale(gray, 1.1, 5, minSize=(24, 24)))


def test_default_settings_find_the_reference_faces(tmp_path, anime_dir, cascade):
    out = tmp_path / "faces"
    summary = crop(anime_dir, out, CropOptions(size=64), cascade=cascade, debug_grid=tmp_path / "debug.png")
    assert summary.with_faces >= 10 and summary.images == 12 and summary.unreadable == 0
    rows = list(Dataset.open(out).rows())
    by_parent: dict[str, list] = {}
    for r in rows:
        by_parent.setdefault(r["parent"], []).append(tuple(r["bbox"]))
        assert (r["width"], r["height"]) == (64, 64) and r["detector"] == "lbpcascade_animeface"
        assert r["method"] == "cascade" and r["detector_params"]["scale_factor"] == 1.1
        assert images.decode(Dataset.open(out).read_bytes(r)).size == (64, 64)
    for f in sorted(anime_dir.glob("*.jpg")):  # the same faces as the reference, boxes within a pixel
        ref = [b for b in reference(f, cascade) if b[2] >= CropOptions().min_face]
        got = sorted(by_parent.get(f.stem, []))
        assert len(got) == len(ref), f.name
        assert all(max(abs(a - b) for a, b in zip(g, r)) <= 1 for g, r in zip(got, ref)), (f.name, got, ref)
    assert sum(len(v) for v in by_parent.values()) == 11
    # --min-face 24: exactly the reference's boxes
    every = crop(anime_dir, tmp_path / "all", CropOptions(size=64, min_face=24), cascade=cascade)
    rows24 = list(Dataset.open(tmp_path / "all").rows())
    assert every.crops == 11
    for f in sorted(anime_dir.glob("*.jpg")):
        assert sorted(tuple(r["bbox"]) for r in rows24 if r["parent"] == f.stem) == reference(f, cascade)
    assert Image.open(tmp_path / "debug.png").mode == "RGB"


def test_several_faces_get_numbered_keys_largest_first(tmp_path, anime_dir, cascade):
    src = tmp_path / "one"
    src.mkdir()
    shutil.copy(anime_dir / "tadne_r0c5.jpg", src)
    crop(src, tmp_path / "faces", cascade=cascade)
    rows = {r["key"]: r for r in Dataset.open(tmp_path / "faces").rows()}
    assert set(rows) == {"tadne_r0c5_f0", "tadne_r0c5_f1"}
    assert rows["tadne_r0c5_f0"]["bbox"][2] >= rows["tadne_r0c5_f1"]["bbox"][2]
    assert rows["tadne_r0c5_f0"]["parent"] == "tadne_r0c5" and rows["tadne_r0c5_f0"]["file"] == "tadne_r0c5.jpg"


def test_crop_box_margins_and_edge_policies():
    assert crop_box((100, 100, 50, 50), 400, 300, 0.0, "pad") == (100, 100, 150, 150)
    assert crop_box((100, 100, 50, 50), 400, 300, 0.2, "pad") == (90, 90, 160, 160)  # 50 × 1.4, same centre
    # a face at the top-left corner: the square runs off the image
    assert crop_box((0, 10, 40, 40), 400, 300, 0.5, "pad") == (-20, -10, 60, 70)
    assert crop_box((0, 10, 40, 40), 400, 300, 0.5, "shift") == (0, 0, 80, 80)
    assert crop_box((0, 10, 40, 40), 400, 300, 0.5, "drop") is None
    # larger than the image: shift shrinks it to the short side
    assert crop_box((100, 50, 200, 200), 400, 300, 0.5, "shift") == (50, 0, 350, 300)


def test_cut_pads_instead_of_wrapping_around():
    im = Image.new("RGB", (100, 80), (0, 0, 255))
    im.paste((255, 0, 0), (90, 70, 100, 80))  # a red corner at the bottom right
    out = cut(np.asarray(im), (-20, -10, 60, 70), (1, 2, 3))
    assert out.size == (80, 80)
    assert out.getpixel((0, 0)) == (1, 2, 3) and out.getpixel((19, 9)) == (1, 2, 3)
    assert out.getpixel((20, 10)) == (0, 0, 255)
    assert all(out.getpixel((x, y)) != (255, 0, 0) for x in range(80) for y in range(80))  # nothing wrapped in


def test_edge_policies_on_real_images(tmp_path, anime_dir, cascade):
    big = CropOptions(size=32, margin=1.0)
    pad = crop(anime_dir, tmp_path / "pad", big, cascade=cascade)
    drop = crop(anime_dir, tmp_path / "drop", CropOptions(size=32, margin=1.0, edge="drop"), cascade=cascade)
    shift = crop(anime_dir, tmp_path / "shift", CropOptions(size=32, margin=1.0, edge="shift"), cascade=cascade)
    assert pad.crops == shift.crops == 11 and drop.crops < 11
    for r in Dataset.open(tmp_path / "shift").rows():
        x0, y0, x1, y1 = r["crop_box"]
        assert x0 >= 0 and y0 >= 0 and x1 <= 512 and y1 <= 512 and x1 - x0 == y1 - y0


def test_large_images_are_detected_on_a_downscaled_copy(tmp_path, anime_dir, cascade):
    src = tmp_path / "big"
    src.mkdir()
    Image.open(anime_dir / "tadne_r1c0.jpg").resize((2048, 2048), Image.Resampling.LANCZOS).save(src / "big.png")
    crop(src, tmp_path / "faces", CropOptions(size=64), cascade=cascade)
    (row,) = list(Dataset.open(tmp_path / "faces").rows())
    x, y, w, h = row["bbox"]
    rx, ry, rw, rh = (4 * v for v in reference(anime_dir / "tadne_r1c0.jpg", cascade)[0])
    ix = max(0, min(x + w, rx + rw) - max(x, rx)) * max(0, min(y + h, ry + rh) - max(y, ry))
    assert ix / (w * h + rw * rh - ix) > 0.8  # the box mapped back to the original pixels
    assert row["parent_width"] == 2048


def test_a_large_image_leaves_only_small_things_behind(tmp_path, anime_dir, cascade, monkeypatch):
    """What outlives one image's processing is small: the debug grid keeps a preview (not the image), and the
    detector drops the classifier whose pyramid buffers a large image filled."""
    from gandata import crop as crop_module

    data = images.encode(Image.open(anime_dir / "tadne_r1c0.jpg").resize((2100, 2100)), "jpg")
    opts = CropOptions(size=64, min_face=24)  # faces of 24 px: detection runs at full size, 2100² = 4.4 Mpx
    detector = crop_module.Detector(str(cascade), opts)
    result = crop_module._process(data, "k", opts, detector, (255, 255, 255), (255, 255, 255), preview=True)
    assert result["status"] == "faces" and result["size"] == (2100, 2100) and result["scale"] == 1.0
    assert max(result["preview"].size) == crop_module.PREVIEW and "image" not in result
    assert getattr(detector._local, "cascade", None) is None  # over KEEP_CASCADE_PIXELS: dropped
    small = crop_module._process(images.encode(Image.open(anime_dir / "tadne_r1c0.jpg"), "jpg"), "k", opts,
                                 detector, (255, 255, 255), (255, 255, 255))
    assert small["preview"] is None and detector._local.cascade is not None  # a small image keeps it


def test_resume_and_unreadable_files(tmp_path, anime_copy, cascade):
    (anime_copy / "broken.jpg").write_bytes(b"<html>not found</html>")
    first = crop(anime_copy, tmp_path / "faces", cascade=cascade)
    assert first.unreadable == 1 and "HTML" in first.bad[0]["reason"] and first.crops == 11
    again = crop(anime_copy, tmp_path / "faces", cascade=cascade)  # the unreadable file is read again, and said
    assert again.crops == 0 and again.skipped_done == 12 and again.unreadable == 1 and again.total_crops == 11
    # the file was still being copied: once whole, the same command crops it
    shutil.copy(anime_copy / "tadne_r1c0.jpg", anime_copy / "broken.jpg")
    whole = crop(anime_copy, tmp_path / "faces", cascade=cascade)
    assert whole.unreadable == 0 and whole.crops == 1 and whole.skipped_done == 12 and whole.total_crops == 12
    assert {r["parent"] for r in Dataset.open(tmp_path / "faces").rows()} >= {"broken"}


def test_the_same_crop_continues_and_changed_options_are_named(tmp_path, anime_copy, cascade):
    """A dataset folder holds crops of one kind and one set of options: the same command continues it, a changed
    option is one line naming it (never a folder of crops of two sizes), options that shape no crop are free."""
    out = tmp_path / "faces"
    crop(anime_copy, out, CropOptions(size=64, workers=1), cascade=cascade)
    before = lines_in(out / "manifest.jsonl")
    for changed, named_as in ((dict(size=96), "--size 64 (now 96)"), (dict(margin=0.5), "--margin 0.2 (now 0.5)"),
                              (dict(edge="drop"), "--edge pad (now drop)"),
                              (dict(background="black"), "--background 255,255,255 (now 0,0,0)")):
        with pytest.raises(UserError, match=re.escape(named_as)):
            crop(anime_copy, out, CropOptions(**{"size": 64, **changed}), cascade=cascade)
    with pytest.raises(UserError, match="holds the crops of 'crop anime-faces'"):
        crop(anime_copy, out, CropOptions(size=64, lego=True, locator="layout"))
    assert lines_in(out / "manifest.jsonl") == before  # nothing written by a refused run
    lego = tmp_path / "heads"  # a threshold given as the locator's default is the same job as none given
    crop(anime_copy, lego, CropOptions(size=64, lego=True, locator="layout"))
    assert crop(anime_copy, lego, CropOptions(size=64, lego=True, locator="layout", threshold=0.25)).crops == 0
    again = crop(anime_copy, out, CropOptions(size=64, workers=2, memory=512), cascade=cascade)
    assert again.skipped_done == 12 and again.crops == 0  # how many workers and how much memory: no crop changes
    with pytest.raises(UserError, match=re.escape("--pad-color 255,255,255 (now 255,0,0)")):
        crop(anime_copy, out, CropOptions(size=64, pad_color="red"), cascade=cascade)
    shifted = tmp_path / "shifted"  # where nothing is padded, the pad colour changes no crop
    crop(anime_copy, shifted, CropOptions(size=64, edge="shift"), cascade=cascade)
    assert crop(anime_copy, shifted, CropOptions(size=64, edge="shift", pad_color="red"),
                cascade=cascade).skipped_done == 12


def test_the_options_a_crop_is_compared_by_are_the_commands_own():
    """crop.json's options (named in the refusal through named(key)) are declared by the crop commands, on the
    command line and in a pipeline's [crop] — locator and threshold by lego-faces only (anime's never differ)."""
    from gandata import crop as crop_module
    from gandata.declarations import CROP_ANIME, CROP_LEGO

    for declaration in (CROP_LEGO, CROP_ANIME):
        for key in crop_module.SAME_CROP:
            if declaration is CROP_ANIME and key in ("locator", "threshold"):
                with pytest.raises(UserError, match="lego-faces only"):  # anime faces cannot be given one
                    CropOptions(**{key: "layout" if key == "locator" else 0.7})
                continue
            assert declaration.option(key).cli and declaration.option(key).pipeline, key


def test_a_source_image_replaced_since_it_was_cropped_is_refused_a_touched_one_is_not(tmp_path, anime_copy,
                                                                                      cascade):
    out = tmp_path / "faces"
    crop(anime_copy, out, CropOptions(size=64), cascade=cascade)
    (anime_copy / "tadne_r0c0.jpg").touch()  # a new stamp, the same bytes: read again, found the same
    assert crop(anime_copy, out, CropOptions(size=64), cascade=cascade).skipped_done == 12
    shutil.copy(anime_copy / "tadne_r1c1.jpg", anime_copy / "tadne_r0c0.jpg")  # other bytes under the same name
    with pytest.raises(UserError, match=r"1 source image of .* changed since it was cropped \(first: .*r0c0.jpg\)"):
        crop(anime_copy, out, CropOptions(size=64), cascade=cascade)
    # a dataset folder's images are compared by their manifest's sha256s
    raw = tmp_path / "raw"
    with Dataset.create(raw) as ds:
        for f in sorted(anime_copy.glob("tadne_r1*.jpg")):
            ds.add(f.stem, f.read_bytes(), "jpg", {"width": 512, "height": 512, "source": "anime"})
    crop(raw, tmp_path / "faces2", CropOptions(size=64), cascade=cascade)
    rows = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    rows[0]["sha256"] = "0" * 64  # the manifest says the image has other bytes now
    (raw / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="changed since"):
        crop(raw, tmp_path / "faces2", CropOptions(size=64), cascade=cascade)


def test_a_crop_row_the_manifest_lost_is_written_again(tmp_path, anime_dir, cascade):
    """A torn last row (a kill between the file and its row, a disk that filled up) or a damaged row in the middle:
    the same command writes those crops again, and the folder is the one a clean run makes."""
    out = tmp_path / "faces"
    crop(anime_dir, out, CropOptions(size=64), cascade=cascade)
    whole = {r["key"]: r["sha256"] for r in Dataset.open(out).rows()}
    text = (out / "manifest.jsonl").read_bytes()
    lines = text.splitlines(keepends=True)
    (out / "manifest.jsonl").write_bytes(b"".join(lines[:3]) + b"{damaged\n" + b"".join(lines[4:])[:-100])
    again = crop(anime_dir, out, CropOptions(size=64), cascade=cascade)
    assert again.crops == 2 and again.total_crops == len(whole)
    assert {r["key"]: r["sha256"] for r in Dataset.open(out).rows()} == whole
    ds = Dataset.open(out)  # a crop's file deleted: cut again
    ds.image_path(next(iter(ds.rows()))).unlink()
    assert crop(anime_dir, out, CropOptions(size=64), cascade=cascade).crops == 1
    assert {r["key"]: r["sha256"] for r in Dataset.open(out).rows()} == whole
    assert all(Dataset.open(out).image_path(r).is_file() for r in Dataset.open(out).rows())


def test_heads_whose_crops_run_off_the_image_are_counted_with_the_reason(tmp_path, anime_dir, cascade):
    drop = crop(anime_dir, tmp_path / "drop", CropOptions(size=32, margin=1.0, edge="drop"), cascade=cascade)
    assert drop.off_edge >= 1 and drop.without >= drop.off_edge
    assert any("run off the image" in line and "--edge shift" in line for line in drop.lines())
    reasons = [r.get("reason", "") for r in Dataset.open(tmp_path / "drop").read_journal("parents")
               if r["status"] == "no_face"]
    assert len(reasons) == drop.without and all(reasons)  # every image without a crop says why
    assert sum("off the image (--edge drop" in r for r in reasons) == drop.off_edge


def test_cascade_download_is_verified_and_offline_gives_both_ways_out(tmp_path, anime_dir, cascade):
    from aiohttp import web  # a local stand-in for raw.githubusercontent.com

    body = {"data": cascade.read_bytes()}

    async def handler(request):
        return web.Response(body=body["data"])

    with LocalServer([("GET", "/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml", handler)]) as server:
        body["data"] = cascade.read_bytes()[:-10] + b"<!-- -->\n"
        with pytest.raises(UserError, match="has sha256 .* expected 9376d30a"):
            crop(anime_dir, tmp_path / "x", base_url=server.url)
        body["data"] = cascade.read_bytes()
        s = crop(anime_dir, tmp_path / "faces", base_url=server.url)
        assert s.crops == 11 and s.cascade["sha256"].startswith("9376d30a")
    port = server.port
    # cached now: works with the server gone
    assert crop(anime_dir, tmp_path / "again", base_url=f"http://127.0.0.1:{port}").crops == 11
    with pytest.raises(UserError, match=r"could not download the anime-face cascade .*--cascade FILE.*network"):
        crop(anime_dir, tmp_path / "y", base_url="http://127.0.0.1:9")
    # lego-faces --locator cascade has a third way out, offline: the shipped detector
    with pytest.raises(UserError, match=r"--cascade FILE.*network.*offline: --locator learned$"):
        crop(anime_dir, tmp_path / "z", CropOptions(lego=True, locator="cascade"), base_url="http://127.0.0.1:9")


def test_bad_options(tmp_path, anime_dir, cascade):
    for given, msg in [  # checked by the declaration when the options are made, before anything is read
        ({"edge": "wrap"}, "--edge"),
        ({"margin": -1}, "--margin"),
        ({"scale_factor": 1.0}, "--scale-factor"),
        ({"pad_color": "nope"}, "--pad-color"),
    ]:
        with pytest.raises(UserError, match=msg):
            crop(anime_dir, tmp_path / "x", CropOptions(**given), cascade=cascade)
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match="does not exist"):
        crop(tmp_path / "missing", tmp_path / "x", cascade=cascade)


@pytest.mark.slow
def test_sigkill_mid_crop_then_rerun(tmp_path, anime_dir, cascade):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(10):
        for f in anime_dir.glob("*.jpg"):
            shutil.copy(f, src / f"{i}_{f.name}")
    cmd = [sys.executable, "-m", "gandata.cli", "crop", "anime-faces", "--src", str(src), "--cascade", str(cascade),
           "--size", "48", "--json"]
    ref = subprocess.run(cmd + ["--out", str(tmp_path / "ref")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "faces"
    proc = subprocess.Popen(cmd + ["--out", str(out), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: lines_in(out / "parents.jsonl") >= 20)
    run = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = {r["key"]: r["sha256"] for r in Dataset.open(out).rows()}
    want = {r["key"]: r["sha256"] for r in Dataset.open(tmp_path / "ref").rows()}
    assert got == want and json.loads(run.stdout)["skipped_done"] >= 20


# ------------------------------------------------------------------------------------------------- LEGO


def test_lego_faces_from_a_dataset_keep_labels(tmp_path, cascade):
    raw = tmp_path / "data" / "bricklink" / "raw"
    with Dataset.create(raw) as ds:
        for i in range(12):
            im, _ = draw_minifig(i, hat=i % 2 == 1, transparent=i % 3 == 0)
            ds.add(f"bricklink-fig{i:03d}", png_bytes(im), "png", {"width": im.width, "height": im.height,
                   "source": "bricklink", "item_no": f"fig{i:03d}", "category": ["Town", "Castle"][i % 2]})
        ds.add("bricklink-empty", png_bytes(Image.new("RGB", (300, 400), "white")), "png",
               {"width": 300, "height": 400, "source": "bricklink", "category": "Town"})
    out = tmp_path / "data" / "bricklink" / "faces"
    summary = crop(raw, out, CropOptions(size=64, lego=True, locator="layout"), debug_grid=tmp_path / "heads.png")
    assert summary.with_faces == 12 and summary.without == 1 and summary.methods == {"layout": 12}
    rows = list(Dataset.open(out).rows())
    assert {r["parent"] for r in rows} == {f"bricklink-fig{i:03d}" for i in range(12)}
    assert all(r["method"] == "layout" and r["detector"] == "layout" and r["source"] == "bricklink" for r in rows)
    parents = list(Dataset.open(out).read_journal("parents"))
    assert any(p["parent"] == "bricklink-empty" and p["status"] == "no_head" and p["reason"] for p in parents)
    labelled = shard([out], tmp_path / "shards", "lego", ShardOptions(size=32, label_field="category", val_fraction=0))
    assert labelled.labels["counts"] == {"Castle": 6, "Town": 6}
