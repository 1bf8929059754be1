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
    wide[80:120, 20:380] = 0  # a vehicle-like shape: much wider than high
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
    rows = [(r, d) for r, d in catalogue if CLASSES[name](r) and r["heads"]]
    assert len(rows) >= 4, f"the marks hold too few images of {name}"
    recall, precision, n = _score(rows, "layout")
    assert recall >= 0.75 and precision >= 0.75, f"{name}: layout recall {recall:.2f}, precision {precision:.2f} of {n}"
