"""LEGO heads (gandata.heads): whole heads from every locator, on generated figures in each situation that broke the
first locator on real images, and on the real BrickLink catalogue images of ../shared/fixtures/lego/bricklink against
the boxes marked by hand in benchmarks/heads/catalogue-fixtures.jsonl (the failure classes read from the marks'
tags: hair, hats, helmets, hoods, capes, props, insets, white on white, graded and grey backgrounds, no head)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path, png_bytes
from minifigs import VARIANTS, scene
from PIL import Image

from gandata import heads, images
from gandata.crop import CropOptions, Detector, crop, crop_box

MARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "heads" / "catalogue-fixtures.jsonl"


def _crops(locator: str, data: bytes) -> list[tuple[int, int, int, int]]:
    """The crop boxes ``crop lego-faces --locator LOCATOR`` cuts from an image (its defaults: margin 0.2)."""
    opts = CropOptions(lego=True, locator=locator)
    rgb, alpha = images.decode_rgb_alpha(data)
    found, _ = Detector(None, opts).heads(rgb, alpha)
    return [crop_box(h.box, rgb.shape[1], rgb.shape[0], opts.margin, opts.edge) for h in found]


def _held(crops, box_xywh) -> bool:
    x, y, w, h = box_xywh
    return any(heads.holds(c, (x, y, x + w, y + h)) for c in crops)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_layout_locator_holds_the_whole_head_of_generated_figures(variant):
    for seed in range(4):
        im, box = scene(seed, variant)
        crops = _crops("layout", png_bytes(im))
        assert len(crops) == 1, (variant, seed)
        assert _held(crops, box), (variant, seed, crops, box)


def test_the_layout_locator_says_why_there_is_no_head():
    blank = np.full((300, 200, 3), 255, np.uint8)
    assert heads.layout_heads(blank) == ([], "no figure on the background")
    wide = np.full((200, 400, 3), 255, np.uint8)
    wide[80:120, 20:380] = 0  # a vehicle-like shape: much wider than high, on wheels
    wide[120:150, 60:100] = wide[120:150, 300:340] = 0
    found, why = heads.layout_heads(wide)
    assert found == [] and why.startswith("not a standing figure")


def test_transparency_is_the_figure_s_outline():
    im, box = scene(3, "transparent")
    rgb, alpha = images.decode_rgb_alpha(png_bytes(im))
    assert alpha is not None and (alpha == 0).mean() > 0.5
    assert heads.figure_mask(rgb, alpha)[box[1] + box[3] // 2, box[0] + box[2] // 2]
    opaque = Image.new("RGB", (40, 30), "white")
    assert images.decode_rgb_alpha(png_bytes(opaque))[1] is None  # no alpha without transparency
    rgba = Image.new("RGBA", (40, 30), (255, 255, 255, 255))
    assert images.decode_rgb_alpha(png_bytes(rgba))[1] is None  # an alpha channel that is opaque everywhere


def test_a_cascade_face_grows_to_the_head_it_sits_in():
    face = (100, 120, 50, 40)
    x, y, w, h = heads.head_of_face(face).box
    assert y < 120 and w > 50 and h > 40 and abs((x + w / 2) - 125) <= 2  # above it, larger, on its column
    assert heads.head_of_face(face).method == "cascade"


def test_holds_is_whole_head_and_a_sensible_share():
    head = (100, 100, 200, 200)
    assert heads.holds((80, 80, 220, 220), head)
    assert not heads.holds((110, 80, 220, 220), head)  # a slice of the head cut off
    assert not heads.holds((0, 0, 400, 400), head)  # the head, but a small part of the crop


def test_crop_records_the_method_and_confidence_and_the_threshold_drops_unsure_heads(tmp_path):
    src = tmp_path / "figs"
    src.mkdir()
    for i, v in enumerate(("white", "cape", "gradient")):
        scene(i, v)[0].save(src / f"fig{i}.png")
    s = crop(src, tmp_path / "faces", CropOptions(lego=True, locator="layout", size=32))
    assert s.crops == 3 and s.methods == {"layout": 3}
    from gandata.datasets import Dataset

    rows = list(Dataset.open(tmp_path / "faces").rows())
    assert all(r["method"] == "layout" and 0 < r["confidence"] <= 1 for r in rows)
    none = crop(src, tmp_path / "sure", CropOptions(lego=True, locator="layout", size=32, threshold=1.0))
    assert none.crops == 0 and none.without == 3
    parents = list(Dataset.open(tmp_path / "sure").read_journal("parents"))
    assert all("threshold 1" in p["reason"] for p in parents)


# ------------------------------------------------------------------------------------ real catalogue images


def _marked() -> list[dict]:
    return [json.loads(line) for line in MARKS.read_text().splitlines() if line.strip()]


CLASSES = {  # a failure class of the first locator → the marked images that show it
    "hair": lambda r: "hair" in r["tags"] or "long-hair" in r["tags"],
    "hat or helmet": lambda r: "hat" in r["tags"] or "helmet" in r["tags"],
    "hood": lambda r: "hood" in r["tags"],
    "cape": lambda r: "cape" in r["tags"],
    "prop or raised arm": lambda r: "prop" in r["tags"] or "arm-raised" in r["tags"],
    "protrusion": lambda r: "protrusion" in r["tags"],
    "inset": lambda r: "inset" in r["tags"],
    "white on white": lambda r: "white-on-white" in r["tags"],
    "graded, grey or other background": lambda r: r["bg"] in ("gradient", "light", "other"),
}


# (recall, precision) each class must keep: measured 2026-12-07 (hair .98/.98 of 63, hat or helmet .99/1 of 89, hood
# .94/.94 of 18, cape .96/1 of 25, prop 1/1 of 3, protrusion .89/1 of 8, inset .94/.97 of 33, white on white .92/.94
# of 36, backgrounds .97/1 of 34), less about one image's worth
FLOOR = {"hair": (0.95, 0.95), "hat or helmet": (0.96, 0.97), "hood": (0.88, 0.88), "cape": (0.92, 0.95),
         "prop or raised arm": (0.66, 0.66), "protrusion": (0.85, 0.85), "inset": (0.9, 0.93),
         "white on white": (0.88, 0.9), "graded, grey or other background": (0.94, 0.96)}


@pytest.fixture(scope="module")
def catalogue():
    folder = fixture_path("lego/bricklink")
    return [(r, (folder / r["file"]).read_bytes()) for r in _marked()]


def _score(rows, locator: str) -> tuple[float, float, int]:
    heads_n = crops_n = held = good = 0
    for r, data in rows:
        crops = _crops(locator, data)
        marked = [tuple(b) for b in r["heads"]]
        taken: set[int] = set()
        for c in crops:
            i = next((i for i, h in enumerate(marked) if i not in taken and heads.holds(c, h)), None)
            good += i is not None
            if i is not None:
                taken.add(i)
        heads_n, crops_n, held = heads_n + len(marked), crops_n + len(crops), held + len(taken)
    return held / max(heads_n, 1), good / max(crops_n, 1), len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLASSES))
def test_real_catalogue_heads_of_each_failure_class_are_held_whole(name, catalogue):
    """The default locator on the held-out catalogue images (never trained on) of each class that broke the first
    locator. The bounds sit a little under what was measured (docs/quality.md), so that a change that loses heads
    of one kind fails here even when the totals hold."""
    rows = [(r, d) for r, d in catalogue if CLASSES[name](r) and r["heads"]]
    assert len(rows) >= 3, f"the marks hold too few images of {name}"
    recall, precision, n = _score(rows, "auto")
    print(f"{name}: {n} images, recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= FLOOR[name][0] and precision >= FLOOR[name][1], \
        f"{name}: recall {recall:.2f}, precision {precision:.2f} of {n}"


@pytest.mark.slow
def test_the_default_holds_95_percent_of_the_held_out_catalogue_heads(catalogue):
    """Issue 38's target, on the 200 held-out images: at least 95 % of the heads held whole, 95 % of the crops whole
    heads (measured: 96.0 % and 96.4 %)."""
    recall, precision, n = _score(catalogue, "auto")
    assert n == 200 and recall >= 0.95 and precision >= 0.95, (recall, precision)


def test_the_default_finds_the_demo_s_drawn_figures_and_a_figure_on_a_scene(tmp_path):
    """The shipped detector (the demo crops its figures with it) on generated figures: each whole head held."""
    held = 0
    for seed in range(6):
        for variant in ("white", "gradient", "cape", "transparent"):
            im, box = scene(seed, variant)
            held += _held(_crops("auto", png_bytes(im)), box)
    assert held >= 22, held  # of 24


def test_damaged_or_missing_detector_weights_are_one_line(tmp_path, monkeypatch):
    from gandata.errors import UserError

    bad = tmp_path / "w.pt"
    bad.write_bytes(b"not torch")
    monkeypatch.setattr(heads, "WEIGHTS_SHA256", None)
    with pytest.raises(UserError, match="is not the LEGO head detector's weights"):
        heads.LearnedHeads(bad)(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="cannot be read"):
        heads.LearnedHeads(tmp_path / "none.pt")(np.zeros((64, 64, 3), np.uint8))


def test_the_shipped_weights_are_the_ones_their_checksum_names():
    import hashlib

    assert hashlib.sha256(heads.WEIGHTS.read_bytes()).hexdigest() == heads.WEIGHTS_SHA256
    meta = json.loads(heads.WEIGHTS.with_suffix(".json").read_text())
    assert meta["sha256"] == heads.WEIGHTS_SHA256 and meta["photos"] > 0 and meta["catalogue_images"] > 0


@pytest.mark.parametrize("shape", ["bar on white", "bar on transparency", "uniform, half transparent",
                                   "near-white, alpha 200"])
def test_a_plain_shape_is_not_a_figure(shape):
    """A block of one colour (a bar, a frame that is all 'figure') has no head: nothing narrows at a neck or between
    the legs, whatever its proportions (the layout gave such a bar its highest confidence)."""
    if shape.startswith("bar"):
        im = Image.new("RGBA" if "transparency" in shape else "RGB", (300, 400),
                       (0, 0, 0, 0) if "transparency" in shape else (255, 255, 255))
        im.paste((200, 30, 30, 255) if im.mode == "RGBA" else (200, 30, 30), (100, 50, 200, 380))
    else:
        im = Image.new("RGBA", (300, 400), (123, 45, 67, 128) if shape.startswith("uniform") else (255, 255, 255, 200))
    for locator in ("layout", "auto"):
        assert _crops(locator, png_bytes(im)) == [], (shape, locator)
    rgb, alpha = images.decode_rgb_alpha(png_bytes(im))
    found, why = heads.layout_heads(rgb, alpha)
    assert not found and why


def test_threshold_bounds_every_crop_auto_cuts(catalogue):
    """``--threshold`` in auto bounds the layout's heads too (their confidence mapped onto the detector's scale):
    every recorded confidence is at or above it, a higher one gives fewer, surer heads, and at 1 none."""
    counts = {}
    for t in (0.5, 0.7, 1.0):
        detector = Detector(None, CropOptions(lego=True, threshold=t))
        n = 0
        for row, data in catalogue[:40]:
            rgb, alpha = images.decode_rgb_alpha(data)
            found, _ = detector.heads(rgb, alpha)
            assert all(h.confidence >= t for h in found), (t, row["file"], found)
            n += len(found)
        counts[t] = n
    assert counts[0.5] > counts[0.7] > counts[1.0] == 0
    assert heads.layout_as_learned(heads.LAYOUT_SURE) == heads.SURE["auto"]  # the default keeps what it kept
    assert heads.layout_as_learned(0.0) == 0.0 and heads.layout_as_learned(1.0) == 1.0
